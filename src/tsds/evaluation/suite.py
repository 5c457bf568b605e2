"""An evaluation suite defined as data: bundled task folders, and tasks carved from the pool's own labels.

A carved task takes, for one (source, label) of the pool, a seeded choice of query rows and held-out rows.
Those rows stay in the pool files but are never selectable: the task's eligibility (the one mask every
method shares, ``harness.task_eligibility``) removes every pool row equal to a query or held-out text, and
``evaluate_methods`` verifies it before any method runs.

The definition (benchmarks/suite.json) reads::

    {"tasks": [{"name": "food", "dir": "data/demo/tasks/food"},
               {"name": "plants", "source": "wordnet", "label": "noun.plant", "seed": 0,
                "queries": 20, "heldout": 200}]}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tsds.evaluation.harness import PoolView, Task, load_task


@dataclass(frozen=True)
class TaskDef:
    name: str
    dir: str | None = None
    source: str | None = None
    label: str | None = None
    seed: int = 0
    queries: int = 20
    heldout: int = 200

    @property
    def carved(self) -> bool:
        return self.dir is None


def load_suite(path) -> list[TaskDef]:
    """The task definitions of a suite file (see the module docstring); names must be unique."""
    data = json.loads(Path(path).read_text())
    defs = [TaskDef(**t) for t in data["tasks"]]
    names = [d.name for d in defs]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: task names must be unique, got {names}")
    for d in defs:
        if d.carved and (d.source is None or d.label is None):
            raise ValueError(f"{path}: task {d.name} needs a dir, or a source and a label")
    return defs


def carve_rows(labels: list, source: str, label: str, seed: int, queries: int, heldout: int):
    """(query rows, held-out rows): a seeded choice among the pool rows of (source, label), disjoint."""
    rows = np.array([i for i, sl in enumerate(labels) if sl == (source, label)], dtype=np.int64)
    need = queries + heldout
    if rows.size < need:
        raise ValueError(f"label {source}:{label} has {rows.size} pool rows, fewer than the {need} a task needs")
    chosen = np.random.default_rng(seed).permutation(rows)[:need]
    return np.sort(chosen[:queries]), np.sort(chosen[queries:])


def suite_tasks(defs: list[TaskDef], view: PoolView, root: Path) -> list[Task]:
    """The suite's tasks on ``view``'s pool: bundled folders read from ``root``, carved tasks from the pool."""
    tasks = []
    for d in defs:
        if not d.carved:
            tasks.append(load_task(root / d.dir, name=d.name))
            continue
        if view.labels is None:
            raise ValueError(f"task {d.name}: the pool carries no (source, label) per row to carve from")
        q, h = carve_rows(view.labels, d.source, d.label, d.seed, d.queries, d.heldout)
        tasks.append(Task(d.name, Path(f"pool:{d.source}:{d.label}"), [view.texts[i] for i in q],
                          [view.texts[i] for i in h], {(d.source, d.label)},
                          pool_rows=np.concatenate([q, h]), pool_store=str(view.store.root)))
    return tasks
