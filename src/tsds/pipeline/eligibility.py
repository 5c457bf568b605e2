"""Which pool rows a selection may draw: one mask, computed once, for every method (tsds and the baselines).

A row is left out when
- its embedding is all zeros (a text the embedder cannot represent: emoji only, a word longer than the
  tokenizer's word limit, an unknown script, an invisible character). Such a row is at the same distance
  from every query, so TSDS would give it one of the highest probabilities in the pool; ``keep_zero_rows``
  keeps them;
- it is contaminated: within ``radius`` of an evaluation item's embedding, or equal to an evaluation text
  after normalising whitespace and case (tsds.pipeline.decontaminate).

Every method receives the same `Eligibility` and applies it in its own terms (an index exclusion for
tsds and knn, zero probability for random, dsir and full), so two methods given the same exclusions
choose from exactly the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tsds.errors import InputError, ParameterError
from tsds.pipeline.decontaminate import Decontamination, contaminated_rows

EXAMPLES = 10


@dataclass
class Eligibility:
    n_rows: int
    zero_rows: np.ndarray
    keep_zero_rows: bool = False
    decontamination: Decontamination | None = None
    zero_row_names: list[str] | None = None
    store_root: str | None = None
    zero_rows_recorded: bool = True

    @property
    def excluded(self) -> np.ndarray:
        """The rows no method may select, sorted."""
        parts = [np.empty(0, np.int64)]
        if not self.keep_zero_rows:
            parts.append(self.zero_rows)
        if self.decontamination is not None:
            parts.append(self.decontamination.removed)
        return np.unique(np.concatenate(parts).astype(np.int64))

    @property
    def mask(self) -> np.ndarray:
        m = np.ones(self.n_rows, dtype=bool)
        m[self.excluded] = False
        return m

    @property
    def eligible(self) -> int:
        return self.n_rows - int(self.excluded.size)

    @property
    def full_pool_densities(self) -> bool:
        """Whether densities over the eligible rows are the store's persisted ones: no decontamination, and
        zero rows left out as by default, in a store that recorded them at build (densities persisted by a
        store built before that was recorded may count its zero rows)."""
        if self.zero_rows.size == 0:
            return self.decontamination is None
        return self.decontamination is None and not self.keep_zero_rows and self.zero_rows_recorded

    def apply(self, index) -> None:
        """Exclude the ineligible rows from ``index`` (on top of any earlier exclusion)."""
        ex = self.excluded
        if ex.size:
            before = index.excluded if index.excluded is not None else np.empty(0, np.int64)
            index.exclude(np.union1d(before, ex))

    def require(self, size: int, method: str) -> None:
        if method != "full" and size > self.eligible:
            raise ParameterError(f"size {size} is larger than the {self.eligible} eligible pool rows "
                                 f"({self.n_rows} rows, {self.excluded.size} left out: {self.describe()})")

    def describe(self) -> str:
        zero = (f"{self.zero_rows.size} zero-vector rows " + ("kept" if self.keep_zero_rows else "left out"))
        if self.decontamination is None:
            return zero
        return f"{zero}, {self.decontamination.removed.size} removed by decontamination"

    def summary(self) -> dict:
        out = {"pool_rows": self.n_rows, "eligible_rows": self.eligible, "excluded_rows": int(self.excluded.size),
               "zero_rows": {"count": int(self.zero_rows.size), "excluded": not self.keep_zero_rows,
                             "examples": list(self.zero_row_names or [])},
               "rule": "left out of every method's selection: rows whose embedding is all zeros (unless "
                       "keep_zero_rows) and rows removed by decontamination"}
        if self.decontamination is not None:
            out["decontamination"] = self.decontamination.summary()
        return out


def name_rows(store, rows, limit: int = EXAMPLES) -> list[str]:
    """'row R (file, at location L)' for the first ``limit`` rows: where to find them in the pool files."""
    rows = np.asarray(rows, dtype=np.int64)[:limit]
    if rows.size == 0:
        return []
    file_idx, locs = store.locations()
    return [f"row {int(r)} ({Path(store.files[int(file_idx[r])]['path']).name} at {int(locs[r])})" for r in rows]


@dataclass(frozen=True)
class Exclusion:
    """Which rows to leave out. ``exclude``: evaluation file(s), ``exclude_texts``: evaluation texts in memory
    (both are used), matched within ``exclude_radius`` (embedding distance) or by normalised text, read with
    ``exclude_spec``; ``keep_zero_rows``: keep rows with an all-zero embedding; ``pool_texts``: the pool's
    texts in row order, when the caller holds them (saves a pass)."""

    exclude: object = None
    exclude_radius: float = 0.0
    exclude_spec: object = None
    exclude_texts: list | None = None
    keep_zero_rows: bool = False
    pool_texts: list | None = None


def pool_eligibility(store, rules: Exclusion | None = None, *, embedder=None, index=None, metric: str = "euclidean",
                     index_kind: str = "auto") -> Eligibility:
    """The eligibility of every pool row for one selection, under ``rules``.

    ``index``: searched for the radius matches (default: the store's index for ``metric``); it is not
    changed.
    """
    from tsds.io.readers import read_texts

    rules = rules or Exclusion()
    exclude, exclude_radius, exclude_spec = rules.exclude, rules.exclude_radius, rules.exclude_spec
    exclude_texts, keep_zero_rows, pool_texts = rules.exclude_texts, rules.keep_zero_rows, rules.pool_texts

    zero = store.zero_rows()
    decon = None
    paths = [] if not exclude else ([exclude] if isinstance(exclude, (str, Path)) else list(exclude))
    if paths or exclude_texts is not None:
        texts: list[str] = []
        for p in paths:
            texts.extend(read_texts(p, exclude_spec or store.text_spec)[0])
        texts.extend(exclude_texts or [])
        if exclude_radius > 0 and texts:
            if embedder is None:
                raise ParameterError("an exclusion radius needs the store's embedder")
            vectors = np.asarray(embedder.embed(texts), dtype=np.float32)
            index = index if index is not None else store.index(metric, index_kind)
        else:
            vectors = np.zeros((len(texts), int(store.meta.get("dim", 1))), np.float32)
        decon = contaminated_rows(store, index, texts, vectors, exclude_radius, files=[str(p) for p in paths],
                                  pool_texts=pool_texts)
    return Eligibility(n_rows=store.n_rows, zero_rows=zero, keep_zero_rows=keep_zero_rows, decontamination=decon,
                       zero_row_names=name_rows(store, zero), store_root=str(store.root),
                       zero_rows_recorded=store.zero_rows_recorded())


def refuse_zero_queries(texts: list[str], q: np.ndarray, source) -> None:
    """A query the embedder cannot represent (all-zero embedding) would pull equally towards every row."""
    from tsds.embed.base import zero_vector_rows

    bad = zero_vector_rows(np.asarray(q))
    if bad.size:
        where = source if isinstance(source, (str, Path)) else "queries"
        j = int(bad[0])
        raise InputError(f"{where}: query {j} ({texts[j][:40]!r}) embeds to an all-zero vector (no token the "
                         f"embedder knows; {bad.size} such queries); remove it or rewrite it")
