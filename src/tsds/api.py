"""The Python API: one call from embeddings to a written selection."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np

from tsds.config import SelectionConfig, make_config
from tsds.errors import ParameterError, InputError
from tsds.io.arrays import as_source, check_same_dim, file_sha256
from tsds.io.output import atomic_dir, check_output_dir, save_json, save_npy
from tsds.pipeline.select import Selection, select_on_index
from tsds.pipeline.stages import StageLog
from tsds.retrieval import build_index


def select_embeddings(
    candidates,
    queries,
    *,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    config: SelectionConfig | None = None,
    progress=None,
    index_storage: str = "auto",
    work_dir: str | os.PathLike | None = None,
    **params,
) -> Selection:
    """Select from candidate embeddings (a .npy path or an N x d array) for query embeddings (M x d).

    Parameters are those of SelectionConfig (size, alpha, C, sigma, metric, sampling, seed, ...).
    ``index_storage`` and ``work_dir``: where an IVF index keeps the vectors (see ``build_index``); the
    selection is the same either way.
    With ``out``, writes probabilities.npy, selected_indices.npy and manifest.json there atomically.

    >>> sel = select_embeddings("pool.npy", "task.npy", size=1000, out="selection")  # doctest: +SKIP
    """
    config = config or make_config(**params)
    if out is not None:
        check_output_dir(out, overwrite, inputs=[_path_or_none(candidates), _path_or_none(queries), work_dir])
    stages = StageLog()
    started = time.time()
    with stages.stage("read"):
        cand = as_source(candidates)
        qsrc = as_source(queries)
        check_same_dim(cand, qsrc)
        q = qsrc.read_all()
        if config.metric == "cosine":
            _refuse_zero_rows(cand, qsrc, q)
        if config.sampling == "without-replacement" and config.size > cand.n:
            raise InputError(
                f"size {config.size} is larger than the {cand.n} candidates in {cand.name}; "
                "cannot draw that many distinct examples"
            )
    # the manifest's input hashes, read beside the selection instead of after it (a 200k x 384 file: 0.2 s)
    digests = _hashing({"candidates": candidates, "queries": queries}) if out is not None else None
    if config.index == "ivfpq":
        raise ParameterError("index ivfpq needs a pool store (tsds pool build ... --index ivfpq): its exact "
                             "distances come from the store's embedding shards; use auto, flat or ivf here")
    with stages.stage("index", n=cand.n, dim=cand.dim) as info:
        index = build_index(cand, metric=config.metric, kind=config.index, seed=config.seed,
                            storage=index_storage, work_dir=work_dir)
        info["kind"] = index.kind
        info["storage"] = "disk" if index.pages is not None else "memory"
    selection = select_on_index(index, q, config, stages=stages, progress=progress)
    if out is not None:
        with stages.stage("write"):
            write_selection(selection, out, overwrite=overwrite,
                            inputs={"candidates": candidates, "queries": queries}, digests=digests.result(),
                            extra={"index": {"kind": index.kind, "storage": info["storage"], **index.calibration},
                                   "n_candidates": cand.n, "n_queries": int(q.shape[0]), "dim": cand.dim,
                                   "started": started})
    return selection


def _refuse_zero_rows(cand, qsrc, q) -> None:
    """The cosine metric is undefined for an all-zero vector: name the first one in either input."""
    from tsds.embed.base import zero_vector_rows

    for name, rows in ((qsrc.name, zero_vector_rows(q)),
                       *((cand.name, start + zero_vector_rows(c)) for start, c in cand.chunks())):
        if rows.size:
            raise InputError(f"{name}: row {int(rows[0])} is all zeros ({rows.size} such rows); "
                             "the cosine metric needs non-zero vectors")


def _path_or_none(value):
    return value if isinstance(value, (str, os.PathLike)) else None


def write_selection(selection: Selection, out, *, overwrite: bool = False, inputs: dict | None = None,
                    extra: dict | None = None, digests: dict | None = None) -> Path:
    """Write the arrays and the manifest into ``out`` (atomically). ``digests``: input files' sha256 by role,
    where already computed."""
    with atomic_dir(out, overwrite) as tmp:
        save_npy(tmp / "probabilities.npy", selection.probabilities.astype(np.float64))
        save_npy(tmp / "selected_indices.npy", selection.selected_indices)
        save_json(tmp / "manifest.json", build_manifest(selection, inputs or {}, extra or {}, digests))
    return Path(out)


def _hashing(inputs: dict):
    """A future of {role: sha256} for the inputs that are files, computed in a background thread (hashlib
    releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    files = {role: value for role, value in inputs.items()
             if isinstance(value, (str, os.PathLike)) and Path(value).is_file()}
    pool = ThreadPoolExecutor(1, thread_name_prefix="tsds-hash")
    future = pool.submit(lambda: {role: file_sha256(path) for role, path in files.items()})
    pool.shutdown(wait=False)
    return future


def build_manifest(selection: Selection, inputs: dict, extra: dict, digests: dict | None = None) -> dict:
    a = selection.allocation
    files = {}
    digests = digests or {}
    for role, value in inputs.items():
        if isinstance(value, (str, os.PathLike)) and Path(value).is_file():
            files[role] = {"path": str(Path(value).resolve()),
                           "sha256": digests[role] if role in digests else file_sha256(value),
                           "bytes": Path(value).stat().st_size}
        elif value is not None:
            files[role] = {"path": None, "note": "in-memory array"}
    p = selection.probabilities
    return {
        "tsds_version": _version("tsds"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "parameters": selection.config.model_dump(),
        "inputs": files,
        "result": {
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
                          "capped_points": selection.density_stats.capped},
        },
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
