"""Write docs/api.md from the numpydoc docstrings of the facade and the core (`python scripts/api_docs.py`).

tests/test_docs.py checks that docs/api.md is what this script writes, so the page follows the code.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

# (section title, object path, members to document for a class)
ENTRIES = [
    ("The facade", "tsds.Pool", ["build", "open", "add_densities"]),
    (None, "tsds.Selector", ["select", "select_targets", "get_params"]),
    (None, "tsds.SelectionResult", ["records", "save", "report"]),
    (None, "tsds.api.sweep_alpha", []),
    ("Arrays", "tsds.select", []),
    (None, "tsds.select_embeddings", []),
    (None, "tsds.write_selection", []),
    ("The core", "tsds.solve", []),
    (None, "tsds.core.allocation.Allocation", []),
    (None, "tsds.core.allocation_to_probabilities", []),
    (None, "tsds.core.draw_with_replacement", []),
    (None, "tsds.core.draw_without_replacement", []),
    (None, "tsds.core.sampling.counts_to_indices", []),
    (None, "tsds.core.allocation.check_parameters", []),
]


def _resolve(path: str):
    import importlib

    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _signature(obj, name: str) -> str:
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return name
    empty = inspect.Parameter.empty
    sig = sig.replace(parameters=[p.replace(annotation=empty) for p in sig.parameters.values()],
                      return_annotation=empty)
    return f"{name}{sig}"


def _block(title: str, obj, level: str) -> list[str]:
    doc = inspect.cleandoc(obj.__doc__ or "")
    return [f"{level} `{title}`", "", "```python", _signature(obj, title), "```", "", "```text", doc, "```", ""]


def render() -> str:
    lines = ["# Python API", "",
             "Generated from the docstrings by `scripts/api_docs.py` (the examples run as doctests in "
             "`tests/test_docs.py`). Import everything from `tsds`; the command line is a thin layer over these.",
             ""]
    for section, path, members in ENTRIES:
        if section:
            lines += [f"## {section}", ""]
        obj = _resolve(path)
        lines += _block(path, obj, "###")
        for m in members:
            lines += _block(f"{path.rsplit('.', 1)[-1]}.{m}", getattr(obj, m), "####")
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    (ROOT / "docs" / "api.md").write_text(render(), encoding="utf-8")
    print("wrote docs/api.md")
