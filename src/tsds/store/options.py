"""The options of a store build, checked before any work: a bad --metric or --index must not wait for the
whole pool to be hashed and embedded."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

from tsds.config import check_choice, check_count
from tsds.embed import hub_snapshot, parse_hub_id
from tsds.errors import InputError, ParameterError
from tsds.io.output import check_store_dir
from tsds.io.readers import BAD_ROW_POLICIES, FORMATS, TextSpec
from tsds.store.layout import SHARD_ROWS

STORE_INDEX_KINDS = ("auto", "flat", "ivf", "ivfpq")
MAX_SHARD_ROWS = 10_000_000  # rows of one shard are held in memory while it is embedded


@dataclass(frozen=True)
class BuildOptions:
    """What a store is built with. ``embedder_spec``: static, minilm, gradients[:MODEL], a model folder or a
    cached hub id (None: not checked, the caller passes an embedder); ``spec``: how a record becomes its text (default: the field "text");
    ``index_shards``: build a sharded index of that many shards (the Ray engine builds a sharded index by
    default, the local engine a single one). How the build treats a store already there: ``overwrite``
    rebuilds it from scratch (the old one is replaced only once the new one is complete); ``append`` adds
    the given files to a complete store, whose own files are taken from its record (found again under
    ``source_root`` if they moved) and checked unchanged."""

    embedder_spec: str | None = "static"
    spec: TextSpec | None = None
    on_bad_row: str = "fail"
    shard_rows: int = SHARD_ROWS
    fmt: str | None = None
    metric: str = "euclidean"
    index_kind: str = "auto"
    index_shards: int | None = None
    overwrite: bool = False
    append: bool = False
    source_root: str | None = None

    @classmethod
    def of(cls, options: BuildOptions | None, settings: dict) -> BuildOptions:
        """``options``, or one made from keyword settings (a name that is no option is refused)."""
        if options is not None and settings:
            raise ParameterError("give build options either as BuildOptions or as keywords, not both")
        if options is not None:
            return options
        unknown = sorted(set(settings) - {f.name for f in fields(cls)})
        if unknown:
            raise TypeError(f"unknown build option(s): {', '.join(unknown)}")
        return cls(**settings)


def check_build_options(paths, out, options: BuildOptions | None = None, **settings) -> None:
    """Every option of a store build that can be checked without reading the pool (keywords as in
    `BuildOptions`; here ``embedder_spec`` is checked only when given)."""
    o = options or BuildOptions.of(None, {"embedder_spec": None, **settings})
    check_choice("--metric", o.metric, ("euclidean", "cosine"))
    check_choice("--index", o.index_kind, STORE_INDEX_KINDS)
    check_choice("--on-bad-row", o.on_bad_row, BAD_ROW_POLICIES)
    check_choice("--format", o.fmt, FORMATS)
    check_count("--shard-rows", o.shard_rows, high=MAX_SHARD_ROWS)
    check_count("--index-shards", o.index_shards, high=65_536)
    if o.embedder_spec is not None:
        key = str(o.embedder_spec).strip()
        gradients = key.lower() == "gradients" or key.lower().startswith("gradients:")
        path = Path(os.path.expanduser(key))
        if key.lower() not in ("static", "minilm") and not gradients and not path.is_dir():
            if path.exists() or parse_hub_id(key) is None:
                raise ParameterError(f"--embedder {key!r}: not static, minilm, gradients[:MODEL], an existing model "
                                     "folder, or a hub id (org/name) of a model in the local Hugging Face cache")
            try:
                hub_snapshot(key)
            except ParameterError as e:
                raise ParameterError(f"--{e}") from None
    if o.overwrite and o.append:
        raise ParameterError("--overwrite and --append exclude each other")
    if o.source_root is not None and not o.append:
        raise ParameterError("--source-root applies to --append (otherwise the command names every pool file)")
    if o.source_root is not None and not Path(o.source_root).is_dir():
        raise ParameterError(f"--source-root {o.source_root}: not a folder")
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not paths:
        raise InputError("no pool files given")
    for p in paths:
        if not Path(p).exists():
            raise InputError(f"{p}: no such file")
    check_store_dir(out, inputs=paths)
    if o.append and not (Path(out) / "store.json").is_file():
        raise ParameterError(f"--append {out}: not a pool store to append to; build it first (without --append)")
