"""Validated selection parameters, and the authors' config.yaml keys mapped onto them."""

from __future__ import annotations

import math
import operator
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tsds.errors import InputError, ParameterError

Sampling = Literal["with-replacement", "without-replacement"]
MAX_SIZE = 10**9           # draws of one selection (one records row each)
MAX_INT = 2**31 - 1        # neighbour counts and seeds reach FAISS and numpy as 32-bit integers


class SelectionConfig(BaseModel):
    """Parameters of one selection. Defaults follow the authors' public configuration."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    size: int = Field(gt=0, le=MAX_SIZE, description="budget n: how many examples to draw")
    alpha: float = Field(0.5, ge=0.0, le=1.0, description="alignment (1) versus diversity (0)")
    C: float = Field(5.0, gt=0.0, description="scale of distances in the objective")
    sigma: float = Field(0.75, ge=0.0, description="kernel radius for near-duplicates; 0 turns the density term off")
    metric: Literal["euclidean", "cosine"] = "euclidean"
    sampling: Sampling = "with-replacement"
    seed: int = Field(0, ge=0, le=MAX_INT)
    initial_k: int = Field(64, gt=0, le=MAX_INT, description="first neighbour-list length; grown until the optimum is exact")
    index: Literal["auto", "flat", "ivf", "ivfpq"] = "auto"
    recall_target: float = Field(0.95, gt=0.0, le=1.0)
    density_cap: int = Field(100_000, gt=0, le=MAX_INT, description="most neighbours counted per point in a density")
    sigma_auto: bool = Field(False, description="choose sigma from the pool's nearest-neighbour distances "
                                                "(tsds.calibration.auto_sigma); replaces sigma")
    alpha_auto: float | None = Field(None, ge=1.0, description="choose alpha so that the support of p holds at "
                                                               "least this multiple of size (tsds.calibration.auto_alpha)")

    @field_validator("size", "seed", "initial_k", "density_cap", mode="before")
    @classmethod
    def _whole(cls, v):
        if isinstance(v, bool):
            raise ValueError("must be a whole number, not true/false")
        return v


def make_config(**params) -> SelectionConfig:
    """Build a SelectionConfig, turning pydantic's report into one line that names the parameter."""
    try:
        return SelectionConfig(**{k: v for k, v in params.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors()[0]
        name = ".".join(str(p) for p in err["loc"]) or "config"
        raise ParameterError(f"{name}: {err['msg']} (got {err.get('input')!r})") from None


def check_number(flag: str, value, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False) -> float | None:
    """A finite number within [low, high] (``low_open``: above low), else a one-line ParameterError naming
    ``flag``; None passes through (an option not given)."""
    if value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"{flag} must be a number, got {value!r}") from None
    if not math.isfinite(x):
        raise ParameterError(f"{flag} must be a finite number, got {value!r}")
    if low is not None and (x <= low if low_open else x < low):
        raise ParameterError(f"{flag} must be {'above' if low_open else 'at least'} {low:g}, got {value!r}")
    if high is not None and x > high:
        raise ParameterError(f"{flag} must be at most {high:g}, got {value!r}")
    return x


def check_count(flag: str, value, *, low: int = 1, high: int = MAX_INT) -> int | None:
    """A whole number within [low, high], else a one-line ParameterError naming ``flag``."""
    if value is None:
        return None
    try:
        if isinstance(value, bool):
            raise TypeError
        value = operator.index(value)
    except TypeError:
        raise ParameterError(f"{flag} must be a whole number, got {value!r}") from None
    if not low <= value <= high:
        raise ParameterError(f"{flag} must be between {low} and {high}, got {value}")
    return value


def check_choice(flag: str, value, choices) -> str | None:
    if value is not None and value not in choices:
        raise ParameterError(f"{flag} must be one of {', '.join(choices)}, got {value!r}")
    return value


AUTHOR_KEYS = {
    "query_embedding_path": "queries",
    "candidate_embedding_path": "candidates",
    "output_folder": "out",
    "sample_size": "size",
    "alpha": "alpha",
    "C": "C",
    "sigma": "sigma",
    "max_K": "initial_k",
    "kde_K": "kde_K",
}


def read_author_config(path: str | Path) -> dict:
    """Read the authors' config.yaml; returns our parameter names. Unknown keys are an error."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise InputError(f"{p}: no such file") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise InputError(f"{p}: expected a mapping of keys to values")
    unknown = sorted(set(data) - set(AUTHOR_KEYS))
    if unknown:
        raise InputError(f"{p}: unknown key(s) {', '.join(unknown)}; accepted: {', '.join(AUTHOR_KEYS)}")
    return {AUTHOR_KEYS[k]: v for k, v in data.items()}


STORE_INDEX_KINDS = ("auto", "flat", "ivf", "ivfpq")
MAX_SHARD_ROWS = 10_000_000  # rows of one shard are held in memory while it is embedded


def check_build_options(paths, out, *, metric: str = "euclidean", index_kind: str = "auto",
                        shard_rows: int = 8192, on_bad_row: str = "fail", fmt: str | None = None,
                        index_shards: int | None = None, embedder_spec: str | None = None) -> None:
    """Every option of a store build that can be checked without reading the pool, checked before the pool
    files are hashed or embedded: a bad --metric or --index must not wait for the whole pool to be embedded."""
    import os

    from tsds.io.output import check_store_dir
    from tsds.io.readers import BAD_ROW_POLICIES, FORMATS

    check_choice("--metric", metric, ("euclidean", "cosine"))
    check_choice("--index", index_kind, STORE_INDEX_KINDS)
    check_choice("--on-bad-row", on_bad_row, BAD_ROW_POLICIES)
    check_choice("--format", fmt, FORMATS)
    check_count("--shard-rows", shard_rows, high=MAX_SHARD_ROWS)
    check_count("--index-shards", index_shards, high=65_536)
    if embedder_spec is not None:
        key = str(embedder_spec).strip()
        gradients = key.lower() == "gradients" or key.lower().startswith("gradients:")
        if key.lower() not in ("static", "minilm") and not gradients and not Path(os.path.expanduser(key)).is_dir():
            raise ParameterError(f"--embedder {key!r}: not static, minilm, gradients[:MODEL], or an existing model folder")
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not paths:
        raise InputError("no pool files given")
    for p in paths:
        if not Path(p).exists():
            raise InputError(f"{p}: no such file")
    check_store_dir(out, inputs=paths)
