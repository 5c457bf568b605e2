"""Fast mode: a tiny byte-level transformer language model trained from scratch on a selection.

The same recipe for every selection (steps, batch, context, learning rate, initialisation seed), so the
only thing that differs between two runs is the training text. Held-out loss is the mean negative
log-likelihood per byte (nats) of the held-out texts, each read from its start (a separator token first).
A 2-layer, 96-wide model trains at tens of thousands of bytes per second on one CPU core: a run is seconds,
which is what lets the benchmark cover every task, budget, seed and method.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np

SEP = 256  # separator / beginning-of-text token; bytes are 0..255
VOCAB = 257


@dataclass(frozen=True)
class TinyRecipe:
    d_model: int = 96
    n_layers: int = 2
    n_heads: int = 4
    context: int = 128
    batch: int = 16
    steps: int = 200
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup: int = 20
    dropout: float = 0.1

    @property
    def tokens(self) -> int:
        return self.steps * self.batch * self.context

    def as_dict(self) -> dict:
        return {**asdict(self), "tokens_trained": self.tokens}


def _torch():
    try:
        import torch
    except ImportError:  # pragma: no cover
        raise ImportError("the fast evaluation mode needs torch: pip install torch==2.13.0") from None
    return torch


def encode(text: str) -> list[int]:
    return [SEP] + list(text.encode("utf-8"))


def _model(recipe: TinyRecipe):
    torch = _torch()
    nn = torch.nn

    class TinyLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(VOCAB, recipe.d_model)
            self.pos = nn.Embedding(recipe.context, recipe.d_model)
            layer = nn.TransformerEncoderLayer(recipe.d_model, recipe.n_heads, 4 * recipe.d_model,
                                               dropout=recipe.dropout, batch_first=True, norm_first=True,
                                               activation="gelu")
            self.blocks = nn.TransformerEncoder(layer, recipe.n_layers, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(recipe.d_model)
            self.head = nn.Linear(recipe.d_model, VOCAB, bias=False)
            self.head.weight = self.tok.weight
            mask = torch.triu(torch.full((recipe.context, recipe.context), float("-inf")), diagonal=1)
            self.register_buffer("mask", mask, persistent=False)
            self.apply(self._init)

        @staticmethod
        def _init(m):
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)

        def forward(self, x):
            t = x.shape[1]
            h = self.tok(x) + self.pos(torch.arange(t, device=x.device))
            h = self.blocks(h, mask=self.mask[:t, :t], is_causal=True)
            return self.head(self.norm(h))

    return TinyLM()


def training_stream(texts: list[str], seed: int) -> np.ndarray:
    """The training texts in a seeded random order, each after a separator, as one token array."""
    order = np.random.default_rng(seed).permutation(len(texts))
    parts = [encode(texts[i]) for i in order]
    return np.fromiter((t for p in parts for t in p), dtype=np.int64)


def train_tiny(texts: list[str], recipe: TinyRecipe = TinyRecipe(), seed: int = 0, threads: int | None = None):
    """Train a fresh model on `texts` (repeats allowed: a text drawn twice is seen twice as often)."""
    torch = _torch()
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = _model(recipe)
    if not texts:
        return model, {"train_seconds": 0.0, "train_loss": None, "steps": 0}
    stream = training_stream(texts, seed)
    L = recipe.context + 1
    if stream.size < L + 1:  # tiny selection: repeat it
        stream = np.tile(stream, L // max(stream.size, 1) + 2)
    rng = np.random.default_rng(seed + 1_000_003)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay,
                            betas=(0.9, 0.98))

    def lr_at(step):
        if step < recipe.warmup:
            return (step + 1) / recipe.warmup
        frac = (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    started = time.time()
    losses = []
    src = torch.from_numpy(stream)
    for step in range(recipe.steps):
        starts = torch.from_numpy(rng.integers(0, stream.size - L, size=recipe.batch))
        batch = src[starts[:, None] + torch.arange(L)[None, :]]
        logits = model(batch[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    tail = losses[-max(1, recipe.steps // 10):]
    return model, {"train_seconds": round(time.time() - started, 2), "train_loss": float(np.mean(tail)),
                   "steps": recipe.steps}


def evaluate_tiny(model, texts: list[str], recipe: TinyRecipe = TinyRecipe()) -> dict:
    """Mean NLL per byte (nats) of `texts`, each from its start in windows of the model's context.

    A text longer than the context is cut into consecutive windows; each window after the first is
    conditioned on the context tokens before it (a sliding window with stride context/2), so every byte
    is scored once with at least half a context of history where the text allows.
    """
    torch = _torch()
    model.eval()
    ctx = recipe.context
    total, count = 0.0, 0
    windows: list[tuple[list[int], int]] = []  # (tokens, number of scored targets at the end)
    for t in texts:
        toks = encode(t)
        if len(toks) <= ctx + 1:
            windows.append((toks, len(toks) - 1))
            continue
        stride = ctx // 2
        windows.append((toks[:ctx + 1], ctx))
        end = ctx + 1
        while end < len(toks):
            new_end = min(len(toks), end + stride)
            windows.append((toks[new_end - ctx - 1:new_end], new_end - end))
            end = new_end
    windows.sort(key=lambda w: len(w[0]))
    with torch.no_grad():
        for i in range(0, len(windows), 64):
            group = windows[i:i + 64]
            width = max(len(w[0]) for w in group)
            x = torch.full((len(group), width), SEP, dtype=torch.long)
            tmask = torch.zeros((len(group), width - 1), dtype=torch.bool)
            for r, (toks, scored) in enumerate(group):
                x[r, :len(toks)] = torch.tensor(toks)
                tmask[r, len(toks) - 1 - scored:len(toks) - 1] = True
            logits = model(x[:, :-1])
            nll = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), x[:, 1:].reshape(-1),
                                                    reduction="none").reshape(tmask.shape)
            total += float(nll[tmask].sum())
            count += int(tmask.sum())
    mean = total / max(count, 1)
    return {"nll": mean, "perplexity": math.exp(mean), "tokens": count, "unit": "byte"}


def fast_eval(train_texts: list[str], heldout: list[str], recipe: TinyRecipe = TinyRecipe(), seed: int = 0,
              threads: int | None = None) -> dict:
    """Train from scratch on `train_texts`, score `heldout`. Empty `train_texts` scores the untrained model."""
    model, info = train_tiny(train_texts, recipe, seed=seed, threads=threads)
    res = evaluate_tiny(model, heldout, recipe)
    return {**res, **info, "model": "tiny-byte-transformer", "recipe": recipe.as_dict()}
