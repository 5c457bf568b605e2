"""The examples in the docstrings of the facade and the core run, as written (numpydoc style)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["tsds.api.arrays", "tsds.api.pool", "tsds.api.selector", "tsds.api.result", "tsds.core.solver",
           "tsds.core.allocation", "tsds.core.sampling", "tsds.api.sweep"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


PUBLIC = {
    "tsds": ["Pool", "Selector", "SelectionResult", "select", "select_embeddings", "solve", "write_selection"],
    "tsds.core": ["allocation_to_probabilities", "draw_with_replacement", "draw_without_replacement", "solve"],
}


@pytest.mark.parametrize("module,name", [(m, n) for m, names in PUBLIC.items() for n in names])
def test_public_names_have_numpydoc_sections(module, name):
    obj = getattr(importlib.import_module(module), name)
    doc = obj.__doc__ or ""
    needed = ["Parameters", "Examples"] if name != "SelectionResult" else ["Attributes", "Examples"]
    if not isinstance(obj, type):
        needed.append("Returns")
    missing = [s for s in needed if s not in doc]
    assert not missing, f"{module}.{name}: docstring lacks {', '.join(missing)}"


def test_docs_api_md_is_generated_from_the_docstrings():
    import runpy
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    render = runpy.run_path(str(root / "scripts" / "api_docs.py"))["render"]
    assert (root / "docs" / "api.md").read_text(encoding="utf-8") == render(), \
        "docs/api.md is stale: run python scripts/api_docs.py"
