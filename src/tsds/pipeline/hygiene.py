"""Query-set hygiene: warnings about query sets that would steer a selection badly.

- ``duplicate``: two queries equal after normalising whitespace and case, or with (almost) identical
  embeddings; a duplicated query counts twice in the transport problem.
- ``outlier``: a query whose distance to its nearest pool candidate is far above the other queries'
  (more than median + 3.5 x 1.4826 x MAD over the queries); it pulls from far away.
- ``no_close_candidate``: no candidate within a typical distance, i.e. the query's nearest candidate is
  farther than the 95th percentile of the pool's own nearest-neighbour distances; the pool may not hold
  anything like it.
"""

from __future__ import annotations

import numpy as np

from tsds.pipeline.decontaminate import normalise

SAME_EMBEDDING = 1e-4


def query_warnings(texts: list[str], vectors: np.ndarray, nearest_distance: np.ndarray,
                   typical: float | None) -> list[dict]:
    """Warnings (dicts with kind, query, text, message) for one query set.

    ``nearest_distance[j]``: distance from query j to its nearest pool candidate; ``typical``: a distance
    within which most pool rows have a neighbour (None skips that check).
    """
    out: list[dict] = []
    seen: dict[str, int] = {}
    x = np.asarray(vectors, dtype=np.float64)
    for j, t in enumerate(texts):
        key = normalise(t)
        if key in seen:
            out.append({"kind": "duplicate", "query": j, "of": seen[key], "text": t[:200],
                        "message": f"query {j} repeats query {seen[key]} (same text after normalising whitespace and case)"})
            continue
        seen[key] = j
    flagged = {w["query"] for w in out}
    if len(x) > 1:
        sq = (x * x).sum(1)
        d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0)
        for j in range(len(x)):
            if j in flagged:
                continue
            same = np.flatnonzero(d2[j, :j] < SAME_EMBEDDING ** 2)
            if same.size:
                out.append({"kind": "duplicate", "query": j, "of": int(same[0]), "text": texts[j][:200],
                            "message": f"query {j} has the same embedding as query {int(same[0])}"})
    d = np.asarray(nearest_distance, dtype=np.float64)
    if d.size >= 3:
        med = float(np.median(d))
        mad = float(np.median(np.abs(d - med))) * 1.4826
        limit = med + 3.5 * max(mad, 1e-9)
        for j in np.flatnonzero(d > limit):
            out.append({"kind": "outlier", "query": int(j), "text": texts[j][:200], "distance": float(d[j]),
                        "message": f"query {int(j)} is far from the pool compared with the other queries: its nearest "
                                   f"candidate is {d[j]:.3f} away (other queries: median {med:.3f})"})
    if typical is not None:
        for j in np.flatnonzero(d > typical):
            out.append({"kind": "no_close_candidate", "query": int(j), "text": texts[j][:200], "distance": float(d[j]),
                        "message": f"query {int(j)} has no candidate within a typical distance ({typical:.3f}, the pool's "
                                   f"95th-percentile nearest-neighbour distance); nearest is {d[j]:.3f}"})
    return out
