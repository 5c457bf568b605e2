"""Validated selection parameters, and the authors' config.yaml keys mapped onto them."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tsds.errors import InputError, ParameterError

Sampling = Literal["with-replacement", "without-replacement"]


class SelectionConfig(BaseModel):
    """Parameters of one selection. Defaults follow the authors' public configuration."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: int = Field(gt=0, description="budget n: how many examples to draw")
    alpha: float = Field(0.5, ge=0.0, le=1.0, description="alignment (1) versus diversity (0)")
    C: float = Field(5.0, gt=0.0, description="scale of distances in the objective")
    sigma: float = Field(0.75, ge=0.0, description="kernel radius for near-duplicates; 0 turns the density term off")
    metric: Literal["euclidean", "cosine"] = "euclidean"
    sampling: Sampling = "with-replacement"
    seed: int = 0
    initial_k: int = Field(64, gt=0, description="first neighbour-list length; grown until the optimum is exact")
    index: Literal["auto", "flat", "ivf", "ivfpq"] = "auto"
    recall_target: float = Field(0.95, gt=0.0, le=1.0)
    density_cap: int = Field(100_000, gt=0, description="most neighbours counted per point in a density")
    sigma_auto: bool = Field(False, description="choose sigma from the pool's nearest-neighbour distances "
                                                "(tsds.calibration.auto_sigma); replaces sigma")
    alpha_auto: float | None = Field(None, ge=1.0, description="choose alpha so that the support of p holds at "
                                                               "least this multiple of size (tsds.calibration.auto_alpha)")

    @field_validator("alpha", "C", "sigma", mode="before")
    @classmethod
    def _finite(cls, v):
        if isinstance(v, float) and v != v:
            raise ValueError("must be a number, got NaN")
        return v


def make_config(**params) -> SelectionConfig:
    """Build a SelectionConfig, turning pydantic's report into one line that names the parameter."""
    try:
        return SelectionConfig(**{k: v for k, v in params.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors()[0]
        name = ".".join(str(p) for p in err["loc"]) or "config"
        raise ParameterError(f"{name}: {err['msg']} (got {err.get('input')!r})") from None


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
