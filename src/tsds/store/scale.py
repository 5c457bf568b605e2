"""A store's pool-scale cache: the distances that describe the pool, measured once per index and reused.

Every selection on a store measures the pool's scale (tsds.pipeline.autoparams.pool_scale: the nearest
other row of 1,000 sampled rows, found by a search of the index, and 1,000 random pairs) for sigma auto, the
C recommendation and the query checks: a third of a second on the demo store, a fifth of a selection's
wall time, and the same numbers for every task. The numbers depend on the store's content, the index
searched (metric, kind, search breadth), the rows left out, the sample size and its seed: all of it is the
cache's key, and a file records its key, the store's fingerprint and a checksum, checked on load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zipfile
from pathlib import Path

import numpy as np

from tsds import atomic
from tsds.store.checks import Damaged, arrays_digest

log = logging.getLogger("tsds")


def read_scale_cache(path: Path) -> tuple[np.ndarray, np.ndarray, str, str]:
    """(nearest-neighbour distances, pair distances, key, fingerprint) of a pool-scale cache, its checksum
    checked; raises Damaged."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if not {"nn", "pairs", "key", "sha256", "fingerprint"} <= set(z.files):
                raise Damaged(path, "not a pool-scale cache")
            nn, pairs = z["nn"], z["pairs"]
            key, digest, fp = str(z["key"]), str(z["sha256"]), str(z["fingerprint"])
    except Damaged:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise Damaged(path, f"unreadable ({type(exc).__name__})") from None
    if nn.dtype != np.float64 or pairs.dtype != np.float64 or nn.ndim != 1 or pairs.ndim != 1 \
            or arrays_digest(nn, pairs) != digest:
        raise Damaged(path, "sha256 mismatch")
    return nn, pairs, key, fp


class StoreScale:
    """The pool-scale part of `tsds.store.PoolStore`."""

    def _scale_path(self, key: dict) -> tuple[Path, str]:
        text = json.dumps(key, sort_keys=True)
        name = f"{key.get('metric')}-{key.get('index')}-{hashlib.sha256(text.encode()).hexdigest()[:16]}.npz"
        return self.root / "scale" / name, text

    def load_pool_scale(self, key: dict) -> tuple[np.ndarray, np.ndarray] | None:
        """(nearest-neighbour distances, pair distances) measured before under ``key`` (a JSON-able dict of
        everything they depend on), or None. A damaged file, or one of other content, is ignored with a
        warning (and measured again)."""
        path, text = self._scale_path(key)
        if not path.is_file():
            return None
        try:
            nn, pairs, recorded, fp = read_scale_cache(path)
        except Damaged as exc:
            log.warning("%s: %s; the pool scale is measured again", path, exc.reason)
            return None
        if fp != self.fingerprint or recorded != text:
            log.warning("%s: measured on other content or settings; the pool scale is measured again", path)
            return None
        return nn, pairs

    def save_pool_scale(self, key: dict, nn: np.ndarray, pairs: np.ndarray) -> None:
        """Save a measured pool scale (atomically). A store that cannot be written keeps none (it only saves
        time), with a warning."""
        path, text = self._scale_path(key)
        nn = np.ascontiguousarray(nn, dtype=np.float64)
        pairs = np.ascontiguousarray(pairs, dtype=np.float64)
        try:
            path.parent.mkdir(exist_ok=True)
            atomic.write_npz(path, nn=nn, pairs=pairs, key=np.array(text), sha256=np.array(arrays_digest(nn, pairs)),
                             fingerprint=np.array(self.fingerprint))
        except OSError as exc:
            log.warning("%s: cannot save the pool scale (%s); the selection is not affected", path,
                        exc.strerror or exc)
