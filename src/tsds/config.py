"""Validated selection parameters, and the authors' config.yaml keys mapped onto them."""

from __future__ import annotations

import math
import operator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tsds.errors import InputError, ParameterError

Sampling = Literal["with-replacement", "without-replacement"]
MAX_SIZE = 10**9           # draws of one selection (one records row each)
MAX_INT = 2**31 - 1        # neighbour counts and seeds reach FAISS and numpy as 32-bit integers


class SelectionConfig(BaseModel):
    """Parameters of one selection. The field defaults follow the authors' public configuration (the
    ``paper`` preset, what the .npy path and the authors' config file get); a pool store's selection
    starts from the ``default`` preset instead (``PRESETS``, ``make_config``)."""

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
    density: Literal["exact", "approx"] = Field("exact", description="exact densities over the whole pool, or "
                                                "approx: each over the members of its density_lists nearest index "
                                                "lists only (never above exact; a sample is checked against exact)")
    density_lists: int = Field(32, gt=0, le=MAX_INT, description="with density approx: the index lists nearest by "
                                                                 "centroid that each density sums over")
    sigma_auto: bool = Field(False, description="choose sigma from the pool's nearest-neighbour distances "
                                                "(tsds.pipeline.autoparams.auto_sigma); replaces sigma")
    alpha_auto: float | None = Field(None, ge=1.0, description="choose alpha so that the support of p holds at "
                                                               "least this multiple of size (tsds.pipeline.autoparams.auto_alpha)")
    alpha_auto_max: float = Field(1.0, gt=0.0, le=1.0, description="with alpha_auto: the largest alpha considered")
    one_per_cluster: bool = Field(False, description="n distinct draws take at most one row per near-duplicate "
                                                     "cluster (rows within sigma) while distinct clusters last")
    query_turns: bool = Field(False, strict=True, description="n distinct draws in turns over the queries, each "
                              "taking its nearest row of the transport plan not drawn yet (every query an equal "
                              "share of distinct rows)")
    preset: Literal["default", "paper"] | None = Field(None, description="the preset that filled the parameters "
                                                                          "not given (None: the field defaults)")

    @field_validator("size", "seed", "initial_k", "density_cap", "density_lists", mode="before")
    @classmethod
    def _whole(cls, v):
        if isinstance(v, bool):
            raise ValueError("must be a whole number, not true/false")
        return v


# The evidence-backed setting (docs/results.md): cosine distance, sigma 0.3 (merges light edits of a text;
# on unit vectors), C 1, and alpha 0.5 lowered as far as needed for the support of p to hold twice the n
# draws (alpha_auto 2.0, capped at 0.5); the n distinct draws taken in turns over the queries, each its
# nearest row of the plan, at most one per near-duplicate cluster (an explicit alpha keeps the plain
# draw). "paper": the published defaults (the authors' config.yaml), which are also SelectionConfig's
# field defaults.
PRESETS = {
    "default": {"metric": "cosine", "C": 1.0, "sigma": 0.3, "alpha": 0.5, "alpha_auto": 2.0,
                "alpha_auto_max": 0.5, "sampling": "without-replacement", "one_per_cluster": True,
                "query_turns": True},
    "paper": {"metric": "euclidean", "C": 5.0, "sigma": 0.75, "alpha": 0.5, "sampling": "with-replacement"},
}


def apply_preset(params: dict, preset: str | None) -> dict:
    """``params`` with the preset's value for every parameter not given (None counts as not given). An
    explicit alpha or alpha_auto replaces the preset's automatic alpha and its draw rules (the plain draw)."""
    given = {k: v for k, v in params.items() if v is not None}
    if preset is None:
        return given
    if preset not in PRESETS:
        raise ParameterError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    fill = dict(PRESETS[preset])
    if "alpha" in given or "alpha_auto" in given:
        for key in ("alpha_auto", "alpha_auto_max", "one_per_cluster", "query_turns"):
            fill.pop(key, None)
    return {**fill, **given, "preset": preset}


def make_config(preset: str | None = None, **params) -> SelectionConfig:
    """Build a SelectionConfig from the parameters given and the ``preset``'s values for the others (None:
    the field defaults), turning pydantic's report into one line that names the parameter."""
    params = apply_preset(params, preset)
    try:
        return SelectionConfig(**params)
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
    import yaml  # here, not at the top: 24 ms of every CLI start that reads no config file

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
