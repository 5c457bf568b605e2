"""Package attributes imported on first use (module ``__getattr__``), so that a light command does not load
the modules a heavier one needs (numpy, faiss, pyarrow, the text and store code)."""

from __future__ import annotations

import importlib
import sys


def lazy_attributes(package: str, table: dict[str, str]):
    """``(__getattr__, __dir__)`` for ``package``: attribute ``name`` is imported from module ``table[name]``
    when first asked for, then kept in the package."""

    def __getattr__(name: str):
        if name not in table:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(table[name]), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(table))

    return __getattr__, __dir__
