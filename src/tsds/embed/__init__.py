"""Embedding backends behind one small interface (`Embedder`) and one factory (`load_embedder`).

    emb = load_embedder("static")          # CPU default: model2vec distillation of all-MiniLM-L6-v2, shipped
    emb = load_embedder("minilm")          # the packaged all-MiniLM-L6-v2 (CUDA when available; `minilm` extra)
    emb = load_embedder("/path/to/model")  # a local sentence-transformers or model2vec folder
    emb = load_embedder("BAAI/bge-small-en-v1.5")  # the same, from the local Hugging Face cache (tsds.embed.hub)
    emb = load_embedder("gradients:smollm2?dim=8192")  # LoRA gradient features (tsds.embed.gradients)
    X = emb.embed(texts)                   # float32 (n, emb.dim), rows unit-norm
    emb.identity                           # JSON-able; stores compare it to refuse foreign embeddings

Nothing is downloaded: models come from installed packages, the user cache, or the given folder.
The core install reads model2vec folders (the static model among them); transformer embedders raise
`MissingExtraError` (one line naming the extra to install) when torch or sentence-transformers is missing.
"""

from __future__ import annotations

import os
from pathlib import Path

from tsds.embed.base import Embedder, weights_sha256
from tsds.embed.extras import MissingExtraError, require
from tsds.embed.hub import hub_snapshot, parse_hub_id
from tsds.embed.sentence import MINILM_NAME, SentenceEmbedder, is_sentence_transformers_dir, load_minilm
from tsds.embed.static import (
    STATIC_NAME,
    StaticEmbedder,
    cache_dir,
    ensure_static_model,
    is_model2vec_dir,
    load_static,
    shipped_static_model,
    static_model_dir,
)
from tsds.errors import ParameterError

CHOICES = ("static", "minilm")
_CHOICES_TEXT = (
    "'static', 'minilm', 'gradients[:MODEL][?options]', a local sentence-transformers / model2vec model directory, "
    "or such a model's hub id (org/name[@revision]) in the local Hugging Face cache"
)


def load_embedder(spec: str, *, device: str | None = None, batch_size: int | None = None) -> Embedder:
    """Build the embedder named by `spec`: "static", "minilm", a path to a local model directory, or a
    hub id (`org/name[@revision]`) of a model in the local Hugging Face cache, loaded as its snapshot folder.

    `device` applies to transformer models (default: cuda if available, else cpu); the static model
    always runs on the CPU. `batch_size` overrides the backend's default (static 2048, transformers 64).
    Raises ParameterError (one line, listing the valid choices) for anything else.
    """
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ParameterError(f"embedding batch_size must be a positive integer, got {batch_size!r}")
    key = str(spec).strip()
    if not key:
        raise ParameterError(f"embedder spec is empty; choose {_CHOICES_TEXT}")
    if key.lower() == "static":
        return load_static(batch_size=batch_size)
    if key.lower() == "minilm":
        return load_minilm(device=device, batch_size=batch_size)
    if key.lower() == "gradients" or key.lower().startswith("gradients:"):
        for module in ("torch", "transformers", "peft"):
            require(module, feature="the gradients embedder", extra="eval")
        from tsds.embed.gradients import load_gradients

        return load_gradients(key, device=device, batch_size=batch_size)
    path = Path(os.path.expanduser(key))
    if not path.exists() and parse_hub_id(key) is not None:
        path = hub_snapshot(key)
    if not path.is_dir():
        what = "is not a directory" if path.exists() else "is not a known embedder or an existing directory"
        raise ParameterError(f"embedder {key!r} {what}; choose {_CHOICES_TEXT}")
    # model2vec first: model2vec also writes a modules.json (for sentence-transformers' StaticEmbedding).
    if is_model2vec_dir(path):
        return StaticEmbedder(path, batch_size=batch_size)
    if is_sentence_transformers_dir(path):
        return SentenceEmbedder(path, device=device, batch_size=batch_size)
    raise ParameterError(
        f"embedder directory {key!r} holds neither a sentence-transformers model (modules.json) "
        f"nor a model2vec model (config.json + model.safetensors + tokenizer.json); choose {_CHOICES_TEXT}"
    )


__all__ = [
    "CHOICES",
    "MINILM_NAME",
    "MissingExtraError",
    "STATIC_NAME",
    "Embedder",
    "SentenceEmbedder",
    "StaticEmbedder",
    "cache_dir",
    "ensure_static_model",
    "hub_snapshot",
    "load_embedder",
    "load_minilm",
    "load_static",
    "parse_hub_id",
    "shipped_static_model",
    "static_model_dir",
    "weights_sha256",
]
