"""Optional dependencies: imported only when a feature needs them, with one line naming the extra when absent.

The core install (read, embed with the shipped static model, select, write, report) needs none of them;
transformer embedders and distilling a static model need the `minilm` extra, whose torch is installed first
and pinned so that pip does not pull a CUDA build.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from tsds.errors import TsdsError

MINILM_INSTALL = "pip install torch==2.13.0 && pip install 'tsds[minilm]'"
"""How to install the `minilm` extra (torch first, pinned to the CPU build)."""


class MissingExtraError(TsdsError, ImportError):
    """A feature needs a package of an optional extra that is not installed (one line: the extra and how)."""


def require(module: str, *, feature: str, extra: str = "minilm", install: str = MINILM_INSTALL) -> ModuleType:
    """Import `module`, or raise MissingExtraError saying that `feature` needs the `extra` and how to get it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        missing = getattr(exc, "name", None) or module
        raise MissingExtraError(
            f"{feature} needs the [{extra}] extra ({missing} is not installed): {install}"
        ) from None
