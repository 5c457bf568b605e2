"""The main job on bundled real data, offline: build a pool store, select for one target task, show the result.

Run through `make demo`. The store is kept in demo-out/store and reused on later runs
(only the selection is redone), which is how tsds is meant to be used: one pool, many tasks.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "demo-out"
TASK = "food"


def tsds(*args: str) -> None:
    cmd = [sys.executable, "-m", "tsds.cli", *args]
    print(f"\n$ tsds {' '.join(shlex.quote(a) for a in args)}", flush=True)
    started = time.time()
    subprocess.run(cmd, check=True, cwd=ROOT)
    print(f"  ({time.time() - started:.1f} s)", flush=True)


def main() -> None:
    DEMO.mkdir(exist_ok=True)
    pool = "data/demo/pool.jsonl.gz"
    queries = f"data/demo/tasks/{TASK}/queries.jsonl"
    print(f"Pool: {pool} (about 36k real texts: WordNet, GCIDE, FOLDOC, fortunes, Debian, chatterbot).")
    print(f"Target task: {TASK!r}, 20 query examples in {queries}.")
    tsds("pool", "build", pool, "--out", str(DEMO / "store"), "--embedder", "static")
    tsds("select", "--pool", str(DEMO / "store"), "--queries", queries, "--size", "200",
         "--alpha", "0.5", "--C", "1.0", "--sigma", "0.3", "--metric", "cosine", "--without-replacement",
         "--seed", "0", "--out", str(DEMO / f"selection-{TASK}"), "--overwrite")


if __name__ == "__main__":
    main()
