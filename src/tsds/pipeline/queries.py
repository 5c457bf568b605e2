"""The query side of a selection: read the target's examples and embed them with the store's embedder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tsds.errors import InputError
from tsds.io.readers import TextSpec, read_texts
from tsds.pipeline.eligibility import refuse_zero_queries

_GENERIC_STEMS = ("queries", "query", "train", "examples", "data", "dev", "test", "heldout")


def task_name(queries, explicit: str | None = None) -> str:
    """The target task's name for cards, reports and evaluation rows: ``explicit``, else the query file's
    name, or its folder's when the file has a generic name (tasks/food/queries.jsonl -> food)."""
    if explicit:
        return str(explicit)
    if not isinstance(queries, (str, Path)):
        return "queries"
    path = Path(queries)
    stem = path.name.split(".")[0]
    return path.parent.name if stem.lower() in _GENERIC_STEMS and path.parent.name not in ("", ".") else stem


def read_query_texts(store, queries, query_spec: TextSpec | None = None):
    """(texts, read stats) of a query file or an in-memory list of texts."""
    if isinstance(queries, (str, Path)):
        texts, qstats = read_texts(queries, query_spec or store.text_spec)
    else:
        texts, qstats = list(queries), None
    if not texts:
        raise InputError(f"{queries}: no query examples")
    return texts, qstats


def load_store_embedder(store, embedder=None):
    """The embedder the store was built with (``embedder``, when given, must be that one)."""
    from tsds.embed import load_embedder

    embedder = embedder or load_embedder(store.meta["embedder_spec"])
    if embedder.identity != store.meta["embedder"]:
        raise InputError(f"{store.root}: store was embedded with {store.meta['embedder'].get('model')!r}, "
                         f"which differs from the embedder available now ({embedder.identity.get('model')!r})")
    return embedder


@dataclass
class QuerySet:
    """One target's query examples: texts, embeddings (as the embedder returned them), read statistics and
    where they came from (a path, or None for texts in memory)."""

    texts: list[str]
    vectors: np.ndarray
    read: object = None
    source: object = None

    def unit(self) -> np.ndarray:
        """The embeddings as float32 rows of norm 1."""
        x = np.asarray(self.vectors, dtype=np.float32)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def embed_queries(store, queries, embedder, *, query_spec: TextSpec | None = None, stages=None) -> QuerySet:
    """Read ``queries`` (a file or a list of texts) and embed them with ``embedder`` (the store's); a query
    that embeds to an all-zero vector is refused, naming it."""
    from tsds.pipeline.stages import StageLog

    stages = stages or StageLog()
    with stages.stage("read_queries") as info:
        texts, qstats = read_query_texts(store, queries, query_spec)
        info["queries"] = len(texts)
    with stages.stage("embed_queries"):
        q = embedder.embed(texts)
        refuse_zero_queries(texts, q, queries)
    return QuerySet(texts, q, qstats, queries if isinstance(queries, (str, Path)) else None)
