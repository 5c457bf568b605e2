"""DSIR: data selection with importance resampling over hashed n-gram features (Xie et al., NeurIPS 2023).

Follows the authors' ``data-selection`` package (``HashedNgramDSIR``) exactly in its features and weights:

- text -> lower case -> nltk wordpunct tokens (regex ``\\w+|[^\\w\\s]+``);
- features: counts of unigrams and bigrams (bigram = the two tokens joined by a space), each hashed into
  one of ``num_buckets`` = 10,000 buckets by ``int(sha256(utf-8).hexdigest(), 16) % num_buckets``;
- p_raw, p_target: the bucket counts of the whole pool and of the target (query) texts, normalised;
- log importance weight of example i: f_i . (log(p_target + 1e-8) - log(p_raw + 1e-8));
- resampling: Gumbel top-k on the log weights (k distinct examples, the package's default), or, with
  replacement, multinomial draws from p proportional to the weights.

One difference, on purpose: the package drops examples shorter than ``min_example_length`` (100) words
before resampling; most texts in a dictionary-style pool are shorter than that, so no length filter here.
The package is not needed: the featurizer is reimplemented (and checked against it in the tests when it
is installed) with a cache, because hashing every n-gram of every text is the expensive part.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache

import numpy as np

NUM_BUCKETS = 10_000
_WORDPUNCT = re.compile(r"\w+|[^\w\s]+")


def wordpunct(text: str) -> list[str]:
    return _WORDPUNCT.findall(text)


@lru_cache(maxsize=1 << 20)
def _bucket(token: str, num_buckets: int) -> int:
    return int(hashlib.sha256(token.encode("utf-8")).hexdigest(), 16) % num_buckets


def ngram_features(text: str, n: int = 2, num_buckets: int = NUM_BUCKETS) -> np.ndarray:
    """Hashed n-gram counts of one text (as ``data_selection.hashed_ngram_dsir.get_ngram_counts``)."""
    counts = np.zeros(num_buckets, dtype=np.int64)
    for b in _buckets(text, n, num_buckets):
        counts[b] += 1
    return counts


def _buckets(text: str, n: int, num_buckets: int) -> list[int]:
    words = wordpunct(text.lower())
    out = [_bucket(w, num_buckets) for w in words]
    for size in range(2, n + 1):
        for i in range(len(words) - size + 1):
            out.append(_bucket(" ".join(words[i:i + size]), num_buckets))
    return out


def feature_matrix(texts: list[str], n: int = 2, num_buckets: int = NUM_BUCKETS):
    """Sparse (CSR) matrix of hashed n-gram counts, one row per text."""
    from scipy.sparse import csr_matrix

    indptr = [0]
    indices: list[int] = []
    for t in texts:
        indices.extend(_buckets(t, n, num_buckets))
        indptr.append(len(indices))
    data = np.ones(len(indices), dtype=np.float64)
    m = csr_matrix((data, np.asarray(indices, dtype=np.int64), np.asarray(indptr, dtype=np.int64)),
                   shape=(len(texts), num_buckets))
    m.sum_duplicates()
    return m


_POOL_CACHE: dict = {}


def _pool_features(pool_texts: list[str], n: int, num_buckets: int):
    key = (id(pool_texts), len(pool_texts), n, num_buckets)
    hit = _POOL_CACHE.get(key)
    if hit is None or hit[0] is not pool_texts:
        _POOL_CACHE.clear()
        hit = (pool_texts, feature_matrix(pool_texts, n, num_buckets))
        _POOL_CACHE[key] = hit
    return hit[1]


def dsir_log_weights(pool_texts: list[str], target_texts: list[str], *, n: int = 2,
                     num_buckets: int = NUM_BUCKETS, eligible: np.ndarray | None = None) -> np.ndarray:
    """Log importance weight of every pool text for the target texts (float64, length len(pool_texts)).

    ``eligible``: the rows that may be selected (tsds.pipeline.eligibility); the raw distribution is theirs,
    and every other row gets weight 0 (log weight -inf)."""
    raw = _pool_features(pool_texts, n, num_buckets)
    raw_counts = np.asarray((raw if eligible is None else raw[np.flatnonzero(eligible)]).sum(axis=0)).ravel()
    tgt_counts = np.asarray(feature_matrix(target_texts, n, num_buckets).sum(axis=0)).ravel()
    p_raw = raw_counts / max(raw_counts.sum(), 1.0)
    p_tgt = tgt_counts / max(tgt_counts.sum(), 1.0)
    log_diff = np.log(p_tgt + 1e-8) - np.log(p_raw + 1e-8)
    logw = np.asarray(raw @ log_diff, dtype=np.float64).ravel()
    if eligible is not None:
        logw[~np.asarray(eligible, dtype=bool)] = -np.inf
    return logw


def store_texts(store) -> list[str]:
    """The pool's embedded texts in store row order (tsds.store.provenance.pool_texts), cached per store
    content."""
    from tsds.store.provenance import pool_texts

    key = ("texts", str(store.root), store.meta.get("fingerprint"))
    if key not in _TEXT_CACHE:
        _TEXT_CACHE.clear()
        _TEXT_CACHE[key] = pool_texts(store)
    return _TEXT_CACHE[key]


_TEXT_CACHE: dict = {}
