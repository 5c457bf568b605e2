"""Quickstart: select finetuning data for a task from a pool of texts, in Python.

Run it as a script (``python examples/quickstart.py [OUT]``) or cell by cell (``# %%``) in an editor that
knows the notebook-style format. Everything runs on the CPU in a few seconds, with the packaged static
embedder; nothing is downloaded.
"""

# %% A pool of texts in memory: here 2,000 rows of the demo pool, as plain strings
import gzip
import json
import sys
import tempfile
from pathlib import Path

import tsds

DEMO = Path(__file__).resolve().parent.parent / "data" / "demo"
with gzip.open(DEMO / "pool.jsonl.gz", "rt", encoding="utf-8") as f:
    rows = [json.loads(line) for _, line in zip(range(2000), f)]
texts = [r["text"] for r in rows]

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="tsds-quickstart-"))

# %% Build a pool from the list of strings: embedded once into a store folder, reused for every task
pool = tsds.Pool.build(texts, out=out / "store-from-strings")
print(pool)

# %% Select for a task given as a few example texts
queries = [
    "Pasta: dough of flour and water, shaped and dried or cooked fresh.",
    "Bake: to cook by dry heat in an oven, as bread or cake.",
    "Saffron: the dried stigmas of a crocus, used to colour and flavour food.",
]
selector = tsds.Selector(size=50, alpha="auto", sigma="auto")
result = selector.select(pool, queries)
print(f"alpha_={result.alpha_:.3f} sigma_={result.sigma_} objective_={result.objective_:.4g}")

# %% The selected records: a datasets.Dataset, with the provenance columns (_tsds_*)
selected = result.records()
print(selected)
print(selected[0]["text"][:80], "<- nearest query:", selected[0]["_tsds_nearest_query"][:40])

# %% Build a pool from a datasets.Dataset: every field is kept, the text read from the column "text"
import datasets  # noqa: E402

dataset = datasets.Dataset.from_list([{"text": r["text"], "source": r["source"]} for r in rows])
pool_ds = tsds.Pool.build(dataset, out=out / "store-from-dataset")
from_ds = tsds.Selector(size=50).select(pool_ds, queries).records()
print("sources of the selection:", sorted(set(from_ds["source"])))

# %% Swap the method: the same call, a baseline instead of TSDS (knn, random, dsir, full)
knn = tsds.Selector(size=50, method="knn").select(pool_ds, queries)
print(f"knn: {len(knn)} rows, objective_={knn.objective_}, overlap with tsds: "
      f"{len(set(knn.indices.tolist()) & set(result.indices.tolist()))}")

# %% Write a selection (records, arrays, manifest, dataset card) and its HTML report
folder = result.save(out / "selection", overwrite=True)
print("written:", sorted(p.name for p in folder.iterdir()))
