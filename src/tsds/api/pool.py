"""``tsds.Pool``: a pool of texts embedded once into a store folder, built from files or from texts in memory."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tsds.errors import InputError, ParameterError
from tsds.io.readers import DEFAULT_ROLES, TextSpec


def is_dataset(data) -> bool:
    """Whether ``data`` is a datasets.Dataset (without importing that library)."""
    return type(data).__module__.split(".")[0] == "datasets" and hasattr(data, "column_names")


def _is_frame(data) -> bool:
    return type(data).__module__.split(".")[0] == "pandas" and hasattr(data, "to_json")


def in_memory_rows(data) -> list[dict] | None:
    """The records of an in-memory pool (a list of strings, a datasets.Dataset, a pandas.DataFrame), or None
    for files. A list of strings becomes records {"text": ...}."""
    if isinstance(data, (str, os.PathLike)):
        return None
    if is_dataset(data):
        return [dict(row) for row in data]
    if _is_frame(data):
        return json.loads(data.to_json(orient="records", force_ascii=False))
    items = list(data)
    if items and all(isinstance(x, str) for x in items):
        return [{"text": x} for x in items]
    if items and all(isinstance(x, (str, os.PathLike)) for x in items):
        return None
    if not items:
        raise InputError("the pool is empty: no texts given")
    raise InputError("a pool is a path, a list of paths, a list of strings, a datasets.Dataset or a "
                     f"pandas.DataFrame; got a list of {type(items[0]).__name__}")


def _jsonl(rows: list[dict]) -> bytes:
    try:
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    except TypeError as exc:
        raise InputError(f"a pool record cannot be written as JSON ({exc})") from None


def _write_source(out: Path, rows: list[dict]) -> Path:
    """The store's own pool file for texts given in memory: written once, atomically; a store that holds
    other texts is refused (its rows would no longer match them)."""
    from tsds import atomic
    from tsds.io.output import STORE_SOURCE, check_store_dir

    check_store_dir(out)
    path = out / STORE_SOURCE
    data = _jsonl(rows)
    if path.exists():
        if path.read_bytes() != data:
            raise ParameterError(f"{out}: holds a store of other texts; choose another folder for this pool")
        return path
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(path, data)
    return path


def _rebuild_in_memory(rows: list[dict], out: Path, spec, options: dict):
    """``overwrite`` with texts in memory: the new store, its own copy of the texts included, is built beside
    the old one and replaces it once complete."""
    from tsds.store import PoolStore, build_store, replacing_store

    with replacing_store(out) as tmp:
        build_store(_write_source(tmp, rows), tmp, spec=spec, **{**options, "overwrite": False})
    return PoolStore(out)


class Pool:
    """A pool of texts embedded into a store folder: built once, then selected from for any number of tasks.

    Build one with ``Pool.build`` (files, or texts in memory), open one with ``Pool.open``.

    Parameters
    ----------
    store : PoolStore
        An open store (``Pool.build`` and ``Pool.open`` make one).

    Attributes
    ----------
    store : PoolStore
        The store (embeddings, index, densities; tsds.store).
    path : Path
        The store folder.

    Examples
    --------
    >>> import tempfile, os, tsds
    >>> texts = [f"recipe {i}: bake the bread for {i} minutes" for i in range(40)]
    >>> pool = tsds.Pool.build(texts, out=os.path.join(tempfile.mkdtemp(), "store"))
    >>> len(pool)
    40
    >>> tsds.Pool.open(pool.path).embedder
    'static'
    """

    def __init__(self, store):
        self.store = store

    @classmethod
    def build(cls, data, out, *, embedder: str = "static", text_field: str | None = None,
              template: str | None = None, messages_field: str | None = None, roles=DEFAULT_ROLES,
              **options) -> "Pool":
        """Embed a pool into the store folder ``out`` (resuming or extending a store built there).

        Parameters
        ----------
        data : path, list of pathlib.Path, list of str (texts), datasets.Dataset or pandas.DataFrame
            Pool files (jsonl, json, parquet, csv, tsv, txt, a saved HF dataset), or records in memory. Records
            in memory are written to ``out/source.jsonl`` first (a list of strings as {"text": ...}), so that
            hashing, provenance and the records' fetch work as for files.
        out : path
            The store folder: absent, empty, or a store.
        embedder : str
            "static" (CPU default), "minilm", a local model folder, or the hub id of a model in the
            local Hugging Face cache ("org/name" or "org/name@revision"; nothing is downloaded).
        text_field, template, messages_field : str, optional
            Where the text of a record is (at most one; default: the field ``text``). A template may
            have optional ``[[...]]`` sections (see tsds.io.readers.template).
        roles : tuple of str or None
            With ``messages_field``: the roles whose turns are embedded (default user and assistant;
            None: every turn).
        **options
            More options of ``tsds.store.build_store`` (metric, index_kind, on_bad_row, shard_rows, fmt,
            engine, progress, index_shards, embedder=an Embedder object, ...), among them
            ``overwrite=True`` (build the store anew; the old one is replaced once the new one is complete),
            ``append=True`` (``data`` are only the files to add to the store) and ``source_root`` (where the
            store's own files are now, if they moved). ``densities=[0.3, ...]`` (and ``density_metric``)
            computes the density of every row for each sigma once the store is built (``add_densities``).

        Returns
        -------
        Pool
        """
        from tsds.store import build_store

        sigmas, density_metric = options.pop("densities", None), options.pop("density_metric", None)

        spec = None
        if (text_field, template, messages_field) != (None, None, None):
            spec = TextSpec(text_field=text_field, template=template, messages_field=messages_field, roles=roles)
        rows = in_memory_rows(data)
        if isinstance(embedder, str):
            options["embedder_spec"] = embedder
        else:
            options["embedder"] = embedder
        if rows is not None and options.get("append"):
            raise ParameterError("append adds pool files to a store; texts in memory make a store of their own")
        if rows is not None and options.get("overwrite") and (Path(out) / "store.json").is_file():
            pool = cls(_rebuild_in_memory(rows, Path(out), spec, options))
        else:
            paths = data if rows is None else _write_source(Path(out), rows)
            pool = cls(build_store(paths, out, spec=spec, **options))
        if sigmas:
            pool.add_densities(sigmas, metric=density_metric, engine=options.get("engine"))
        return pool

    @classmethod
    def open(cls, path, *, engine=None, source_root=None) -> "Pool":
        """Open a complete store folder built before (``engine``: where its index shards are served).

        Parameters
        ----------
        path : path
            The store folder.
        engine : Engine, optional
            tsds.engines (default: this process).
        source_root : path, optional
            A folder the pool files were moved to: each is found there by its path relative to the pool's
            recorded source root, or by its name, and used only if its content is the one embedded
            (tsds.store.sources). Without it, files are found at their recorded paths or, moved with the
            store, relative to it.

        Returns
        -------
        Pool
        """
        from tsds.store import PoolStore

        if source_root is not None and not Path(source_root).is_dir():
            raise ParameterError(f"source_root {source_root}: not a folder")
        store = PoolStore(path, engine=engine, source_root=source_root)
        store.require_complete()
        return cls(store)

    @staticmethod
    def inspect(path, *, source_root=None, check: bool = False) -> dict:
        """What a store folder holds (complete or not), as plain data: what `tsds pool info` prints.

        Parameters
        ----------
        path : path
            The store folder.
        source_root : path, optional
            Where the pool files are now, if they moved (see ``Pool.open``).
        check : bool
            Hash every pool file (sha256) to tell a changed file from a touched one; otherwise only sizes
            and mtimes are read.

        Returns
        -------
        dict
            rows, files (path, recorded_path, source_path, format, rows, bytes, state: ok / moved / touched /
            changed / missing), embedder, text_spec, indexes, densities, bytes on disk, skipped_rows,
            clipped_texts, truncated_texts, zero_rows.

        Examples
        --------
        >>> import tempfile, os, tsds
        >>> pool = tsds.Pool.build([f"text {i}" for i in range(20)], out=os.path.join(tempfile.mkdtemp(), "s"))
        >>> info = tsds.Pool.inspect(pool.path)
        >>> info["rows"], [f["state"] for f in info["files"]]
        (20, ['ok'])
        """
        from tsds.store import PoolStore, store_info

        if source_root is not None and not Path(source_root).is_dir():
            raise ParameterError(f"source_root {source_root}: not a folder")
        return store_info(PoolStore(path, source_root=source_root), check=check)

    def add_densities(self, sigma, *, metric: str | None = None, index: str = "auto", progress=None,
                      engine=None) -> list[dict]:
        """Compute the density of every row for ``metric`` and each ``sigma``, kept in the store: every later
        selection with that metric and sigma reads them instead of computing any (same results, bit for bit).

        Resumable: the work is saved chunk by chunk, and a second call computes only the rows still missing.
        A store that changes (rebuilt with other content, appended) never uses densities of its old content.

        Parameters
        ----------
        sigma : float, "auto" or a list of them
            Kernel radius (above 0); "auto": the sigma a selection with sigma auto resolves to.
        metric : str
            "cosine" (default, as a store's selections) or "euclidean".
        index : str
            The index to compute with ("auto": the store's); the densities do not depend on it.
        progress : callable, optional
            Called with the number of rows computed (``progress.add_total(n)`` too, if it has one).
        engine : Engine, optional
            Where the index is served (tsds.engines; default: this process).

        Returns
        -------
        list of dict
            Per sigma: metric, sigma, rows, known, computed (now), seconds, index.
        """
        from tsds.pipeline.densities import DEFAULT_METRIC, pool_densities
        from tsds.store import PoolStore

        store = self.store
        if engine is not None and getattr(store, "engine", None) is not engine:
            store = PoolStore(store.root, engine=engine)
        sigmas = list(sigma) if isinstance(sigma, (list, tuple)) else [sigma]
        return [pool_densities(store, s, metric=metric or DEFAULT_METRIC, index=index, progress=progress)
                for s in sigmas]

    @property
    def path(self) -> Path:
        return Path(self.store.root)

    @property
    def embedder(self) -> str:
        """The embedder's spec ("static", "minilm" or a model folder)."""
        return self.store.meta["embedder_spec"]

    def __len__(self) -> int:
        return int(self.store.n_rows)

    def __repr__(self) -> str:
        return f"Pool({str(self.path)!r}, rows={len(self)}, embedder={self.embedder!r})"
