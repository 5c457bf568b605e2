"""Does the selection help? Train a language model on each selection and score the target's held-out set.

- `harness`: run methods for a task, train, score, summarise (modes ngram / tiny / model);
- `ngram`, `fast`: from-scratch byte-level models (CI-sized);
- `finetune`: SmolLM2-135M-Instruct (or any local causal LM) with a fixed recipe;
- `metrics`: OT distance to the held-out set, near-duplicate share, label share.
"""

from tsds.evaluation.harness import (MethodSpec, PoolView, Task, default_methods, evaluate_methods, load_task,
                                     summarise)

__all__ = ["MethodSpec", "PoolView", "Task", "default_methods", "evaluate_methods", "load_task", "summarise"]
