"""LESS-style gradient features: per-example LoRA gradients of a local causal LM, projected and normalised.

    emb = load_embedder("gradients:smollm2?dim=8192&lora_r=8")
    emb = load_embedder("gradients:/models/my-llm?warmup=200&warmup_data=pool.jsonl.gz&sep=%0AResponse:")

For each text: the mean token NLL of the causal LM over its response part (the tokens after the last
occurrence of ``sep`` in the text; the whole text when ``sep`` is not given or not present), its
gradient with respect to the LoRA matrices (A and B of every target module; A from a seeded
initialisation, B zero unless warmed up), optionally Adam-preconditioned as in LESS
(m' / sqrt(v' + eps) with m' = b1 m + (1-b1) g, v' = b2 v + (1-b2) g^2 and Adam's moments m, v from the
warm-up), projected to ``dim`` by a seeded sparse JL matrix, and L2-normalised. Texts with no response
token (empty, or nothing after the separator) get an all-zero row.

Options, given after "?" as URL query parameters (percent-encode the separator):
    dim (8192), nnz (4, non-zeros per column of the projection), seed (0, of the projection),
    lora_r (8), lora_alpha (2 * lora_r), targets ("q_proj,v_proj"), lora_seed (0),
    max_tokens (256), sep (none),
    warmup (0 steps), warmup_data (a .jsonl[.gz] file; texts from warmup_field, default "text",
    or a .txt file, one text per line), warmup_batch (4), warmup_lr (2e-4), warmup_seed (0),
    checkpoint (a .npz a warm-up wrote: LoRA weights and Adam's moments), precondition ("adam" when
    there is a warm-up or a checkpoint, else "none"),
    centre (N: subtract the mean projected gradient of a seeded sample of N texts from centre_data before
    normalising, see tsds.embed.gradients.centre; 0: off; default 512 with a warm-up and Adam
    preconditioning, else 0),
    centre_data (a .jsonl[.gz] or .txt file, default the warm-up data), centre_field ("text"),
    centre_seed (0), centre_mean (a .npz of the mean a centring wrote, instead of computing it).
Adam-preconditioned features are dominated by the warm-up's momentum, the same for every text, unless
centred (docs/results-gradients.md); a checkpoint without centring warns.
Queries and pool rows go through the same transformation (LESS itself preconditions only the training
candidates and uses plain gradients for the target examples; one embedder per store keeps both in one space
here). `embed` warns when given fewer than 10 texts: as a query set that is a noisy target (the warning
also shows for a store's last shard when it holds fewer than 10 rows).
A warm-up runs once and is cached under the tsds cache folder by a hash of all its inputs; the identity
records the model, LoRA config, the checkpoint's SHA-256, the projection, so a store refuses features
computed any other way.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import urllib.parse
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from tsds.atomic import write_npz
from tsds.embed.base import Embedder, l2_normalise
from tsds.embed.gradients.lora import (apply_checkpoint, load_lora_model, locate_model, model_sha256,
                                       WarmupSchedule, per_example_grads, tokenize, warm_up)
from tsds.embed.gradients import centre as centring
from tsds.embed.gradients.projection import SparseProjection
from tsds.errors import InputError, ParameterError

log = logging.getLogger(__name__)

PREFIX = "gradients"
DEFAULT_MODEL = "smollm2"
MIN_QUERIES = 10
DEFAULT_CENTRE = 512
_BETAS = (0.9, 0.999)
_EPS = 1e-8
_INT_OPTIONS = {"dim": 8192, "nnz": 4, "seed": 0, "lora_r": 8, "lora_seed": 0, "max_tokens": 256,
                "warmup": 0, "warmup_batch": 4, "warmup_seed": 0, "centre": None, "centre_seed": 0}
_FLOAT_OPTIONS = {"lora_alpha": None, "warmup_lr": 2e-4}
_STR_OPTIONS = {"targets": "q_proj,v_proj", "sep": None, "warmup_data": None, "warmup_field": "text",
                "checkpoint": None, "precondition": None, "centre_data": None, "centre_field": "text",
                "centre_mean": None}


def is_gradient_spec(spec: str) -> bool:
    return spec.strip().lower() == PREFIX or spec.strip().lower().startswith(PREFIX + ":")


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """("model", options) from "gradients[:model][?k=v&...]"; unknown or bad options raise ParameterError."""
    rest = spec.strip()[len(PREFIX):].lstrip(":")
    model, _, query = rest.partition("?")
    opts: dict[str, Any] = {**_INT_OPTIONS, **_FLOAT_OPTIONS, **_STR_OPTIONS}
    for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
        try:
            if key in _INT_OPTIONS:
                opts[key] = int(value)
            elif key in _FLOAT_OPTIONS:
                opts[key] = float(value)
            elif key in _STR_OPTIONS:
                opts[key] = value
            else:
                known = ", ".join(sorted([*_INT_OPTIONS, *_FLOAT_OPTIONS, *_STR_OPTIONS]))
                raise ParameterError(f"embedder {spec!r}: unknown option {key!r} (known: {known})")
        except ValueError as e:
            if isinstance(e, ParameterError):
                raise
            raise ParameterError(f"embedder {spec!r}: option {key}={value!r} is not a number") from None
    for key in ("dim", "nnz", "lora_r", "max_tokens", "warmup_batch"):
        if opts[key] < 1:
            raise ParameterError(f"embedder {spec!r}: {key} must be >= 1, got {opts[key]}")
    if opts["max_tokens"] < 2:
        raise ParameterError(f"embedder {spec!r}: max_tokens must be >= 2, got {opts['max_tokens']}")
    if opts["warmup"] < 0:
        raise ParameterError(f"embedder {spec!r}: warmup must be >= 0 steps, got {opts['warmup']}")
    if opts["warmup"] and not opts["warmup_data"]:
        raise ParameterError(f"embedder {spec!r}: warmup={opts['warmup']} needs warmup_data=FILE")
    if opts["warmup"] and opts["checkpoint"]:
        raise ParameterError(f"embedder {spec!r}: give warmup or checkpoint, not both")
    if opts["precondition"] not in (None, "adam", "none"):
        raise ParameterError(f"embedder {spec!r}: precondition must be 'adam' or 'none'")
    if opts["precondition"] == "adam" and not (opts["warmup"] or opts["checkpoint"]):
        raise ParameterError(f"embedder {spec!r}: precondition=adam needs a warmup or a checkpoint")
    if opts["precondition"] is None:
        opts["precondition"] = "adam" if (opts["warmup"] or opts["checkpoint"]) else "none"
    if opts["centre"] is None:
        adam = opts["precondition"] == "adam"
        opts["centre"] = DEFAULT_CENTRE if adam and opts["warmup"] and not opts["centre_mean"] else 0
    if opts["centre"] < 0:
        raise ParameterError(f"embedder {spec!r}: centre must be >= 0 rows, got {opts['centre']}")
    if opts["centre"] and opts["centre_mean"]:
        raise ParameterError(f"embedder {spec!r}: give centre or centre_mean, not both")
    if opts["centre"] and not opts["centre_data"]:
        if not opts["warmup_data"]:
            raise ParameterError(f"embedder {spec!r}: centre={opts['centre']} needs centre_data=FILE")
        opts["centre_data"] = opts["warmup_data"]
    if opts["lora_alpha"] is None:
        opts["lora_alpha"] = float(2 * opts["lora_r"])
    if opts["sep"] == "":
        opts["sep"] = None
    opts["targets"] = tuple(t.strip() for t in opts["targets"].split(",") if t.strip())
    if not opts["targets"]:
        raise ParameterError(f"embedder {spec!r}: targets is empty")
    return model or DEFAULT_MODEL, opts


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def read_warmup_texts(path: Path, field: str, k: int, seed: int) -> list[str]:
    """A seeded uniform sample (reservoir) of `k` texts from a .jsonl[.gz] (field `field`) or .txt file."""
    if not path.is_file():
        raise ParameterError(f"warmup_data {str(path)!r} is not a file")
    opener = gzip.open if path.suffix == ".gz" else open
    is_json = ".jsonl" in path.suffixes or ".json" in path.suffixes
    rng = np.random.default_rng(seed)
    sample: list[str] = []
    with opener(path, "rt", encoding="utf-8") as fh:
        for n, line in enumerate(fh):
            if is_json:
                if not line.strip():
                    continue
                try:
                    text = json.loads(line)[field]
                except (ValueError, KeyError, TypeError):
                    raise InputError(f"{path}: row {n + 1} is not JSON with a {field!r} field") from None
                if not isinstance(text, str):
                    raise InputError(f"{path}: row {n + 1}: field {field!r} is not a string")
            else:
                text = line.rstrip("\n")
            if len(sample) < k:
                sample.append(text)
            else:
                j = int(rng.integers(0, n + 1))
                if j < k:
                    sample[j] = text
    if not sample:
        raise InputError(f"{path}: no texts for the warm-up")
    return sample


def _cache_folder() -> Path:
    from tsds.embed.static import cache_dir

    return cache_dir() / "gradients"


class GradientEmbedder(Embedder):
    """LoRA gradient features of a local causal LM (see the module docstring for the options)."""

    def __init__(self, spec: str = PREFIX, *, device: str | None = None, batch_size: int | None = None) -> None:
        import torch

        model, o = parse_spec(spec)
        self.options = o
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        directory, gguf = locate_model(model)
        if model.lower().startswith("smollm2"):
            self.model_name = gguf or directory.name
        else:
            self.model_name = str((directory / gguf) if gguf else directory.resolve())
        self._sha = model_sha256(directory, gguf)
        self.tokenizer, self.model, self.params = load_lora_model(
            directory, gguf, r=o["lora_r"], alpha=o["lora_alpha"], targets=o["targets"], seed=o["lora_seed"],
            device=self.device)
        tok = self.tokenizer
        self._pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        self.n_params = sum(p.numel() for _, p in self.params)
        self.warmup_info: dict[str, Any] | None = None
        self.checkpoint_sha256: str | None = None
        self._moments = None
        ckpt = self._warm_up_cached(o) if o["warmup"] else (Path(o["checkpoint"]) if o["checkpoint"] else None)
        if ckpt is not None:
            if not ckpt.is_file():
                raise ParameterError(f"checkpoint {str(ckpt)!r} is not a file")
            self.checkpoint_sha256 = _file_sha256(ckpt)
            try:
                with np.load(ckpt, allow_pickle=False) as z:
                    arrays = {k: z[k] for k in z.files}
            except (OSError, ValueError) as e:
                raise ParameterError(f"checkpoint {str(ckpt)!r} is not a readable .npz: {e}") from None
            m, v = apply_checkpoint(self.params, arrays, str(ckpt))
            if o["precondition"] == "adam":
                self._moments = (m, v)
        self.projection = SparseProjection(self.n_params, o["dim"], seed=o["seed"], nnz=o["nnz"])
        super().__init__(dim=o["dim"], max_tokens=o["max_tokens"], batch_size=batch_size or 8)
        self._warned_few = False
        self.centre_info: dict[str, Any] | None = None
        self._mean: np.ndarray | None = None
        if self._moments is not None and not (o["centre"] or o["centre_mean"]):
            warnings.warn("Adam-preconditioned gradient features without centring share one dominant direction "
                          "(the warm-up's momentum); add centre=N&centre_data=FILE or centre_mean=FILE", stacklevel=2)
        if o["centre"] or o["centre_mean"]:
            path = self._centre_cached(o) if o["centre"] else Path(o["centre_mean"]).expanduser()
            self._mean, rows, sample = centring.load_mean(path, self.dim)
            self.centre_info = {"rows": rows, "sample": sample, "mean_sha256": centring.mean_sha256(self._mean)}

    def _warm_up_cached(self, o: dict[str, Any]) -> Path:
        data = Path(o["warmup_data"]).expanduser()
        if not data.is_file():
            raise ParameterError(f"warmup_data {str(data)!r} is not a file")
        self.warmup_info = {"steps": o["warmup"], "batch": o["warmup_batch"], "lr": o["warmup_lr"],
                            "seed": o["warmup_seed"], "data_sha256": _file_sha256(data),
                            "field": o["warmup_field"], "optimizer": "adam", "betas": list(_BETAS), "eps": _EPS}
        key = json.dumps({"model": self._sha, "lora": self._lora_identity(), "warmup": self.warmup_info,
                          "max_tokens": o["max_tokens"], "sep": o["sep"]}, sort_keys=True)
        path = _cache_folder() / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".npz")
        if path.is_file():
            return path
        texts = read_warmup_texts(data, o["warmup_field"], o["warmup"] * o["warmup_batch"], o["warmup_seed"])
        log.info("gradient warm-up: %d steps on %d texts from %s", o["warmup"], len(texts), data)
        arrays = warm_up(self.model, self.params, texts, self.tokenizer,
                         WarmupSchedule(steps=o["warmup"], batch=o["warmup_batch"], lr=o["warmup_lr"],
                                        seed=o["warmup_seed"], max_tokens=o["max_tokens"], sep=o["sep"]))
        path.parent.mkdir(parents=True, exist_ok=True)
        write_npz(path, **arrays)
        return path

    def _centre_cached(self, o: dict[str, Any]) -> Path:
        """The cached centring mean of this configuration and sample, computed now if absent."""
        data = Path(o["centre_data"]).expanduser()
        if not data.is_file():
            raise ParameterError(f"centre_data {str(data)!r} is not a file")
        sample = {"texts": o["centre"], "seed": o["centre_seed"], "field": o["centre_field"],
                  "data_sha256": _file_sha256(data)}
        path = _cache_folder() / centring.cache_key(self._feature_identity(), sample)
        if path.is_file():
            return path
        texts = read_warmup_texts(data, o["centre_field"], o["centre"], o["centre_seed"])
        log.info("gradient centring: mean of %d texts from %s", len(texts), data)
        mean, rows = centring.sample_mean(self._projected, texts, self.batch_size)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_npz(path, mean=mean, rows=np.int64(rows), sample=np.str_(json.dumps(sample, sort_keys=True)))
        return path

    def _lora_identity(self) -> dict[str, Any]:
        o = self.options
        return {"r": o["lora_r"], "alpha": o["lora_alpha"], "targets": list(o["targets"]), "seed": o["lora_seed"],
                "init": "peft-default", "n_params": self.n_params}

    @property
    def identity(self) -> dict[str, Any]:
        ident = self._feature_identity()
        return ident if self.centre_info is None else {**ident, "centre": self.centre_info}

    def _feature_identity(self) -> dict[str, Any]:
        """What decides the features before centring."""
        o = self.options
        return {
            "kind": "lora-gradients",
            "model": self.model_name,
            "weights_sha256": self._sha,
            "dim": self.dim,
            "normalize": True,
            "max_tokens": self.max_tokens,
            "loss": {"reduction": "mean-token-nll", "response_sep": o["sep"]},
            "lora": self._lora_identity(),
            "warmup": self.warmup_info,
            "checkpoint_sha256": self.checkpoint_sha256,
            "precondition": o["precondition"],
            "projection": self.projection.identity,
        }

    def raw_gradients(self, texts: list[str]):
        """(rows of per-example LoRA gradients as a torch tensor, preconditioned if so configured,
        number truncated): the features before projection, centring and normalisation; all-zero rows for
        texts without a loss."""
        g, _, truncated = self._gradients(texts)
        return g, truncated

    def _gradients(self, texts: list[str]):
        import torch

        ids, first, truncated = tokenize(self.tokenizer, texts, self.max_tokens, self.options["sep"])
        g = per_example_grads(self.model, self.params, ids, first, self._pad)
        if self._moments is not None:
            m, v = self._moments
            m2 = _BETAS[0] * m + (1 - _BETAS[0]) * g
            v2 = _BETAS[1] * v + (1 - _BETAS[1]) * g * g
            g = m2 / torch.sqrt(v2 + _EPS)
        has_loss = torch.tensor([len(s) > f for s, f in zip(ids, first)], device=g.device)
        g = torch.where(has_loss[:, None], g, torch.zeros_like(g))
        return g, has_loss.cpu().numpy(), truncated

    def _projected(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(projected gradients, float32 (n, dim), before centring and normalisation; which texts have a loss)."""
        g, has_loss, _ = self._gradients(texts)
        return self.projection.project(g), has_loss

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        g, has_loss, truncated = self._gradients(texts)
        self.truncated += truncated
        rows = self.projection.project(g)
        if self._mean is not None:
            rows = centring.centre_rows(rows, has_loss, self._mean)
        return l2_normalise(rows)

    def embed(self, texts) -> np.ndarray:
        n = len(texts) if hasattr(texts, "__len__") else None
        if n is not None and 0 < n < MIN_QUERIES and not self._warned_few:
            self._warned_few = True
            warnings.warn(f"gradient features of only {n} texts: with fewer than {MIN_QUERIES} query examples "
                          f"the selection target is noisy", stacklevel=2)
        return super().embed(texts)


def load_gradients(spec: str, *, device: str | None = None, batch_size: int | None = None) -> GradientEmbedder:
    return GradientEmbedder(spec, device=device, batch_size=batch_size)


__all__ = ["GradientEmbedder", "SparseProjection", "is_gradient_spec", "load_gradients", "parse_spec"]
