"""Fast mode, cheapest: a byte-level n-gram language model (interpolated Witten-Bell), trained from scratch.

Counting and scoring are vectorised numpy (sorted int64 keys), so a model over a few hundred thousand
bytes trains and scores in well under a second: the benchmark can afford every task x budget x seed x
method. Held-out loss is the mean negative log-likelihood per byte (nats); every byte of a held-out text is
predicted from up to ``order - 1`` previous bytes of the same text (a text starts after separator tokens).

    P_k(w | h) = (c(h w) + T(h) P_{k-1}(w | h')) / (c(h) + T(h))    (P_k = P_{k-1} when c(h) = 0)

with T(h) the number of distinct bytes seen after h, h' = h without its oldest byte, P_{-1} = 1/257.
"""

from __future__ import annotations

import math
import time

import numpy as np

SEP = 256
BASE = 257


def _positions(texts: list[str], order: int) -> tuple[np.ndarray, np.ndarray]:
    """(history matrix (P, order-1) oldest first, targets (P,)) for every byte of every text."""
    pad = order - 1
    seqs = [np.frombuffer(t.encode("utf-8"), dtype=np.uint8).astype(np.int64) for t in texts]
    seqs = [s for s in seqs if s.size]
    if not seqs:
        return np.zeros((0, pad), dtype=np.int64), np.zeros(0, dtype=np.int64)
    lengths = np.array([s.size for s in seqs])
    padded = np.concatenate([np.concatenate([np.full(pad, SEP, dtype=np.int64), s]) for s in seqs])
    starts = np.concatenate([[0], np.cumsum(lengths + pad)[:-1]])
    # target index in `padded`: start + pad + j for j < length
    tidx = np.concatenate([st + pad + np.arange(n) for st, n in zip(starts, lengths)])
    hist = np.stack([padded[tidx - pad + i] for i in range(pad)], axis=1) if pad else \
        np.zeros((tidx.size, 0), dtype=np.int64)
    return hist, padded[tidx]


def _context_keys(hist: np.ndarray, k: int) -> np.ndarray:
    """Integer key of the last k history bytes (0 for k = 0)."""
    key = np.zeros(hist.shape[0], dtype=np.int64)
    for i in range(hist.shape[1] - k, hist.shape[1]):
        key = key * BASE + hist[:, i]
    return key


def _lookup(keys: np.ndarray, values: np.ndarray, q: np.ndarray) -> np.ndarray:
    if keys.size == 0:
        return np.zeros(q.size, dtype=np.int64)
    idx = np.minimum(np.searchsorted(keys, q), keys.size - 1)
    return np.where(keys[idx] == q, values[idx], 0)


class NgramLM:
    """Interpolated Witten-Bell byte n-gram model."""

    def __init__(self, order: int = 5):
        if order < 1:
            raise ValueError("order must be at least 1")
        self.order = order
        self.tables: list[tuple] = []

    def fit(self, texts: list[str]) -> "NgramLM":
        hist, tgt = _positions(texts, self.order)
        self.tables = []
        for k in range(self.order):
            ctx = _context_keys(hist, k)
            full = ctx * BASE + tgt
            uf, cf = np.unique(full, return_counts=True)
            uc, cc = np.unique(ctx, return_counts=True)
            tc_keys, tc = np.unique(uf // BASE, return_counts=True)
            self.tables.append((uf, cf, uc, cc, tc_keys, tc))
        self.trained_bytes = int(tgt.size)
        return self

    def logprobs(self, texts: list[str]) -> np.ndarray:
        hist, tgt = _positions(texts, self.order)
        p = np.full(tgt.size, 1.0 / BASE)
        for k, (uf, cf, uc, cc, tc_keys, tc) in enumerate(self.tables):
            ctx = _context_keys(hist, k)
            c_hw = _lookup(uf, cf, ctx * BASE + tgt)
            c_h = _lookup(uc, cc, ctx)
            t_h = _lookup(tc_keys, tc, ctx)
            seen = c_h > 0
            p = np.where(seen, (c_hw + t_h * p) / np.maximum(c_h + t_h, 1), p)
        return np.log(p)


def ngram_eval(train_texts: list[str], heldout: list[str], order: int = 5) -> dict:
    """Fit on `train_texts` (repeats count), score `heldout`: mean NLL per byte (nats) and perplexity."""
    started = time.time()
    lm = NgramLM(order).fit(train_texts)
    lp = lm.logprobs(heldout)
    nll = float(-lp.mean()) if lp.size else float("nan")
    return {"nll": nll, "perplexity": math.exp(nll), "tokens": int(lp.size), "unit": "byte",
            "train_seconds": round(time.time() - started, 3), "trained_tokens": lm.trained_bytes,
            "model": f"byte-{order}gram-witten-bell", "recipe": {"order": order}}
