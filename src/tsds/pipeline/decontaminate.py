"""Decontamination guard: remove from the pool every candidate close to a held-out evaluation item.

A pool row is removed when (a) its embedding lies within ``radius`` of an evaluation item's embedding
(exact range search over the whole pool), or (b) its text equals an evaluation text after normalising
whitespace and case. The rows are excluded from the index (`SearchIndex.exclude`), so no later search,
density or draw can reach them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from tsds.retrieval import SearchIndex

_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Whitespace collapsed and trimmed, case folded: the key of an exact match."""
    return _SPACE.sub(" ", text).strip().casefold()


@dataclass
class Decontamination:
    removed: np.ndarray
    by_radius: int
    by_exact_text: int
    eval_items: int
    radius: float
    files: list[str] = field(default_factory=list)
    items_with_matches: int = 0
    items_without_embedding: int = 0

    def summary(self) -> dict:
        return {"files": self.files, "eval_items": self.eval_items, "radius": self.radius,
                "removed": int(self.removed.size), "removed_by_radius": self.by_radius,
                "removed_by_exact_text": self.by_exact_text, "eval_items_with_matches": self.items_with_matches,
                "eval_items_without_embedding": self.items_without_embedding,
                "rule": "removed: every pool row within `radius` of an evaluation item's embedding, "
                        "and every row whose text equals an evaluation text after normalising whitespace and case"}


def within_radius(index, vectors: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """(pool rows, the item each is closest to) for every pool row within ``radius`` of any of ``vectors``."""
    return index.within_radius(vectors, radius)


def exact_text_matches(store, texts: list[str], pool_texts: list[str] | None = None) -> np.ndarray:
    """Pool rows whose text equals one of ``texts`` after normalising whitespace and case (one pass over the
    pool's embedded texts, checked against the store, or over ``pool_texts`` when the caller holds them)."""
    from tsds.store.provenance import pool_texts as checked_pool_texts

    wanted = {normalise(t) for t in texts}
    pool_texts = checked_pool_texts(store) if pool_texts is None else pool_texts
    return np.array([r for r, t in enumerate(pool_texts) if normalise(t) in wanted], dtype=np.int64)


def contaminated_rows(store, index: SearchIndex, texts: list[str], vectors: np.ndarray, radius: float,
                      files: list[str] | None = None, pool_texts: list[str] | None = None) -> Decontamination:
    """The pool rows close to an evaluation item (see the module docstring); ``index`` is only searched.

    An item whose embedding is all zeros (no token the embedder knows) is matched by exact text only: at
    distance 1 from every pool row, a radius search from it would match the whole pool or nothing.
    """
    vectors = np.asarray(vectors, dtype=np.float32).reshape(len(texts), -1) if len(texts) else vectors
    blank = ~np.any(vectors != 0, axis=1) if len(texts) else np.zeros(0, bool)
    kept = np.flatnonzero(~blank)
    near, item = within_radius(index, vectors[kept], radius) if kept.size else (np.empty(0, np.int64),) * 2
    exact = exact_text_matches(store, texts, pool_texts) if store is not None else np.empty(0, np.int64)
    removed = np.union1d(np.unique(near), exact)
    return Decontamination(removed=removed, by_radius=int(np.unique(near).size),
                           by_exact_text=int(np.setdiff1d(exact, near).size), eval_items=len(texts),
                           radius=float(radius), files=[str(f) for f in files or []],
                           items_with_matches=int(np.unique(item).size), items_without_embedding=int(blank.sum()))


def decontaminate(store, index: SearchIndex, texts: list[str], vectors: np.ndarray, radius: float,
                  files: list[str] | None = None) -> Decontamination:
    """Find the contaminated rows and exclude them from ``index`` (on top of any earlier exclusion)."""
    decon = contaminated_rows(store, index, texts, vectors, radius, files)
    before = index.excluded if index.excluded is not None else np.empty(0, np.int64)
    index.exclude(np.union1d(before, decon.removed))
    return decon
