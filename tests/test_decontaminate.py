"""Decontamination: planted copies of held-out evaluation items (exact, re-cased/re-spaced, lightly edited)
are removed from the pool before selection and never selected; the number removed is reported."""

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from tsds.config import make_config
from tsds.pipeline.decontaminate import normalise
from tsds.api import select_text
from tsds.store import build_store

ROOT = Path(__file__).resolve().parent.parent
POOL = ROOT / "data" / "demo" / "pool.jsonl.gz"
FOOD = ROOT / "data" / "demo" / "tasks" / "food"
N = 4000


def _variants(text: str, i: int) -> str:
    if i % 3 == 0:
        return text
    if i % 3 == 1:
        return "  " + text.upper().replace(" ", "   ") + "\n"
    words = text.split()
    return " ".join(words[:-1]) + " " + words[-1].rstrip(".;") + "!"


@pytest.fixture(scope="module")
def contaminated(tmp_path_factory, static_embedder):
    d = tmp_path_factory.mktemp("decon")
    with gzip.open(POOL, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for _, line in zip(range(N), f)]
    with gzip.open(FOOD / "heldout.jsonl.gz", "rt", encoding="utf-8") as f:
        heldout = [json.loads(line) for line in f][:30]
    eval_path = d / "eval.jsonl"
    with open(eval_path, "w", encoding="utf-8") as f:
        for r in heldout:
            f.write(json.dumps(r) + "\n")
    planted = [{**r, "id": f"leak-{i}", "text": _variants(r["text"], i)} for i, r in enumerate(heldout)]
    path = d / "pool.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for r in rows + planted:
            f.write(json.dumps(r) + "\n")
    store = build_store([path], d / "store", embedder=static_embedder, shard_rows=1000)
    return store, eval_path, set(range(N, N + len(planted)))


CONFIG = dict(size=150, alpha=0.5, C=1.3, sigma=0.25, sampling="without-replacement")


def test_planted_eval_copies_are_selected_without_the_guard(contaminated, tmp_path):
    store, _, planted = contaminated
    sel = select_text(store, FOOD / "queries.jsonl", out=tmp_path / "open", config=make_config(**CONFIG))
    leaked = planted & set(np.flatnonzero(sel.counts).tolist())
    assert len(leaked) >= 5  # the leak is real: food queries pull food evaluation items


def test_guard_removes_every_planted_copy(contaminated, tmp_path):
    store, eval_path, planted = contaminated
    out = tmp_path / "guarded"
    sel = select_text(store, FOOD / "queries.jsonl", out=out, config=make_config(**CONFIG),
                      exclude=[eval_path], exclude_radius=0.2)
    chosen = set(np.flatnonzero(sel.counts).tolist())
    assert not (chosen & planted)
    assert np.all(sel.probabilities[sorted(planted)] == 0)
    m = json.loads((out / "manifest.json").read_text())
    d = m["decontamination"]
    assert d["eval_items"] == 30 and d["removed"] >= len(planted)
    recs = [json.loads(line) for line in open(out / "selected.jsonl", encoding="utf-8")]
    assert not any(r["id"].startswith("leak-") for r in recs)
    assert "decontamination:" in (out / "README.md").read_text()


def test_exact_normalised_matches_without_radius(contaminated, tmp_path):
    store, eval_path, planted = contaminated
    sel = select_text(store, FOOD / "queries.jsonl", out=tmp_path / "exact", config=make_config(**CONFIG),
                      exclude=[eval_path], exclude_radius=0.0)
    m = json.loads((tmp_path / "exact" / "manifest.json").read_text())["decontamination"]
    # exact copies and re-cased / re-spaced copies (20 of 30) are caught by text alone
    assert m["removed_by_exact_text"] == 20 and m["removed_by_radius"] == 0
    exact_rows = {N + i for i in range(30) if i % 3 != 2}
    assert not (set(np.flatnonzero(sel.counts).tolist()) & exact_rows)
    assert normalise("  A\tb\n C ") == "a b c"
