"""Selection on embedding arrays: one call from embeddings (arrays or .npy files) to a selection."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from tsds.config import SelectionConfig, make_config
from tsds.errors import InputError, ParameterError
from tsds.io.arrays import as_source, check_same_dim
from tsds.io.output import atomic_dir, check_output_dir, save_json, save_npy
from tsds.pipeline.density_check import check_approximate
from tsds.pipeline.manifest import build_manifest, hashing
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
    """Select from candidate embeddings for query embeddings, optionally writing the selection.

    Parameters
    ----------
    candidates : ndarray of shape (N, d) or path to a .npy file
        Pool embeddings, float32 (any float is converted).
    queries : ndarray of shape (M, d) or path to a .npy file
        Embeddings of the target's query examples, same d.
    out : path, optional
        Output folder: probabilities.npy, selected_indices.npy and manifest.json are written there
        atomically (it must not exist unless ``overwrite``).
    overwrite : bool
        Replace an existing ``out``.
    config : SelectionConfig, optional
        All parameters at once; then no keyword parameter may be given too.
    progress : callable, optional
        Called with the number of density points computed.
    index_storage : {"auto", "disk", "memory"}
        Where an IVF index keeps the vectors; the selection is the same either way.
    work_dir : path, optional
        Folder for a disk-backed index's temporary file (default: TMPDIR).
    **params
        Fields of ``SelectionConfig``: size (draws), alpha (in [0, 1]), C (> 0, distance units), sigma
        (>= 0, distance units; 0 disables the density term), metric, sampling, seed, ...

    Returns
    -------
    Selection
        ``probabilities`` (N,), ``counts`` (N,), ``selected_indices`` (n,), the allocation and timings.

    Examples
    --------
    >>> import numpy as np, tsds
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((500, 8)).astype(np.float32)
    >>> sel = tsds.select_embeddings(X, X[:5], size=20, sigma=0.5)
    >>> int(sel.counts.sum()), round(float(sel.probabilities.sum()), 6)
    (20, 1.0)
    """
    if config is not None and params:
        raise ParameterError(f"give either config or keyword parameters, not both (got config and "
                             f"{', '.join(sorted(params))})")
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
    digests = hashing({"candidates": candidates, "queries": queries}) if out is not None else None
    if config.index == "ivfpq":
        raise ParameterError("index ivfpq needs a pool store (tsds pool build ... --index ivfpq): its exact "
                             "distances come from the store's embedding shards; use auto, flat or ivf here")
    with stages.stage("index", n=cand.n, dim=cand.dim) as info:
        index = build_index(cand, metric=config.metric, kind=config.index, seed=config.seed,
                            storage=index_storage, work_dir=work_dir)
        info["kind"] = index.kind
        info["storage"] = "disk" if index.pages is not None else "memory"
    selection = select_on_index(index, q, config, stages=stages, progress=progress)
    check_approximate(selection, index, stages)
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
    """Write the arrays and the manifest of ``selection`` into ``out``, atomically.

    Parameters
    ----------
    selection : Selection
        What ``select_embeddings`` returned.
    out : path
        Output folder (must not exist unless ``overwrite``).
    overwrite : bool
        Replace an existing ``out``.
    inputs : dict, optional
        {role: path or array} of the inputs, hashed into the manifest.
    extra : dict, optional
        More top-level manifest sections.
    digests : dict, optional
        {role: sha256} of input files, where computed already.

    Returns
    -------
    Path
        ``out``.

    Examples
    --------
    >>> import numpy as np, tempfile, os, tsds
    >>> X = np.random.default_rng(0).standard_normal((200, 4)).astype(np.float32)
    >>> sel = tsds.select_embeddings(X, X[:3], size=10)
    >>> folder = tsds.write_selection(sel, os.path.join(tempfile.mkdtemp(), "sel"))
    >>> sorted(p.name for p in folder.iterdir())
    ['manifest.json', 'probabilities.npy', 'selected_indices.npy']
    """
    with atomic_dir(out, overwrite) as tmp:
        save_npy(tmp / "probabilities.npy", selection.probabilities.astype(np.float64))
        save_npy(tmp / "selected_indices.npy", selection.selected_indices)
        save_json(tmp / "manifest.json", build_manifest(selection, inputs or {}, extra or {}, digests))
    return Path(out)


def select(candidates, queries, **params) -> Selection:
    """TSDS on embedding arrays: ``select_embeddings`` without writing anything.

    Parameters
    ----------
    candidates : ndarray of shape (N, d) or path to a .npy file
        Pool embeddings.
    queries : ndarray of shape (M, d) or path to a .npy file
        Query embeddings, same d.
    **params
        Fields of ``SelectionConfig`` (size is required), or ``config=`` a SelectionConfig.

    Returns
    -------
    Selection
        ``probabilities`` (N,) summing to 1, ``counts`` (N,) draws per candidate summing to size.

    Examples
    --------
    >>> import numpy as np, tsds
    >>> X = np.random.default_rng(1).standard_normal((300, 6)).astype(np.float32)
    >>> sel = tsds.select(X, X[:4], size=12, alpha=0.7, sigma=0)
    >>> sel.selected_indices.shape
    (12,)
    """
    return select_embeddings(candidates, queries, **params)
