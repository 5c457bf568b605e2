"""Models named by their Hugging Face id (`org/name` or `org/name@revision`), found in the local hub cache only.

The cache is read by its documented layout, never through the network:
`$HF_HUB_CACHE/models--org--name/refs/<revision>` holds a commit hash and
`$HF_HUB_CACHE/models--org--name/snapshots/<commit>/` the model's files. The snapshot folder is then loaded
exactly as a local folder, so a model has one identity whether it is named by id or by path.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from tsds.errors import ParameterError

_HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@(?P<rev>[\w./-]+))?$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def hub_cache_dir() -> Path:
    """The hub cache as huggingface_hub finds it, read from the environment at call time."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.path.expanduser(os.environ[var]))
    if os.environ.get("HF_HOME"):
        return Path(os.path.expanduser(os.environ["HF_HOME"])) / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "huggingface" / "hub"


def parse_hub_id(spec: str) -> tuple[str, str] | None:
    """(repo id, revision) when `spec` reads as a hub model id, else None."""
    m = _HUB_ID.match(spec)
    if m is None or ".." in spec:
        return None
    return m["repo"], m["rev"] or "main"


def hub_snapshot(spec: str) -> Path:
    """The cached snapshot folder of hub id `spec`; ParameterError (one line) when it is not cached."""
    parsed = parse_hub_id(spec)
    if parsed is None:
        raise ParameterError(f"embedder {spec!r} is not a hub model id (org/name or org/name@revision)")
    repo, rev = parsed
    cache = hub_cache_dir()
    folder = cache / ("models--" + repo.replace("/", "--"))
    ref = folder / "refs" / rev
    commit = ref.read_text(encoding="utf-8").strip() if ref.is_file() else rev
    snapshot = folder / "snapshots" / commit
    if not (_COMMIT.match(commit) and snapshot.is_dir()):
        at = "" if rev == "main" else f" at revision {rev!r}"
        raise ParameterError(
            f"embedder {spec!r}: no such folder, nor a model in the local Hugging Face cache ({cache}){at}, and "
            f"nothing is downloaded; get it there with `hf download {repo}` (or huggingface-cli) where there is "
            "network, or pass a local model folder"
        )
    return snapshot
