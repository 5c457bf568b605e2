"""The manifest of a selection (manifest.json): parameters, input hashes, results, timings, environment."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np

from tsds.io.arrays import file_sha256


def hashing(inputs: dict):
    """A future of {role: sha256} for the inputs that are files, computed in a background thread (hashlib
    releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    files = {role: value for role, value in inputs.items()
             if isinstance(value, (str, os.PathLike)) and Path(value).is_file()}
    pool = ThreadPoolExecutor(1, thread_name_prefix="tsds-hash")
    future = pool.submit(lambda: {role: file_sha256(path) for role, path in files.items()})
    pool.shutdown(wait=False)
    return future


def _result(selection) -> dict:
    a = selection.allocation
    p = selection.probabilities
    if a is None:  # a baseline solves no TSDS problem: no objective, no transport
        return {**{k: None for k in TSDS_RESULT}, "support_size": int(np.count_nonzero(p)),
                "drawn": int(selection.counts.sum()), "distinct_drawn": selection.distinct_selected}
    return {
        "objective": a.objective,
        "alignment_term": a.alpha / a.C * a.alignment,
        "diversity_term": (1 - a.alpha) * a.diversity,
        "transport_cost": a.alignment,
        "max_weighted_mass": a.diversity,
        "level_s": a.level,
        "support_size": int(np.count_nonzero(p)),
        "neighbours_used_per_query": {"min": int(a.support.min()), "mean": float(a.support.mean()),
                                      "max": int(a.support.max())},
        "k_used": selection.k_used,
        "k_history": selection.k_history,
        "truncated": a.truncated,
        "recall_at_k": selection.recall,
        "drawn": int(selection.counts.sum()),
        "distinct_drawn": selection.distinct_selected,
        "densities": {"points": selection.density_stats.points, "pairs": selection.density_stats.pairs,
                      "capped_points": selection.density_stats.capped, "mode": selection.config.density,
                      **({"check": selection.info["density_check"]} if "density_check" in selection.info else {})},
    }


# what only a TSDS solve has; None in a baseline's manifest
TSDS_RESULT = ("objective", "alignment_term", "diversity_term", "transport_cost", "max_weighted_mass", "level_s",
               "neighbours_used_per_query", "k_used", "k_history", "truncated", "recall_at_k", "densities")


def build_manifest(selection, inputs: dict, extra: dict, digests: dict | None = None) -> dict:
    """The manifest of ``selection``: ``inputs`` {role: path or array} (files are hashed, or their sha256 taken
    from ``digests``), ``extra`` sections added at the top level."""
    files = {}
    digests = digests or {}
    for role, value in inputs.items():
        if isinstance(value, (str, os.PathLike)) and Path(value).is_file():
            files[role] = {"path": str(Path(value).resolve()),
                           "sha256": digests[role] if role in digests else file_sha256(value),
                           "bytes": Path(value).stat().st_size}
        elif value is not None:
            files[role] = {"path": None, "note": "in-memory array"}
    return {
        "tsds_version": _version("tsds"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "parameters": selection.config.model_dump(),
        "inputs": files,
        "result": _result(selection),
        "timings": selection.timings,
        "environment": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            **{name: _version(name) for name in ("numpy", "scipy", "faiss-cpu", "pydantic")},
        },
        **extra,
    }


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None
