"""The pool scale is measured once per store and exact index, kept in the store, and read back by later tasks:
the same calibration and selection as measuring it again, never a file of other content or rows."""

import gzip
import itertools
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

import tsds.pipeline.autoparams as autoparams
from tsds.config import make_config
from tsds.methods import select_from_store
from tsds.store import PoolStore, build_store

ROOT = Path(__file__).resolve().parent.parent
POOL = ROOT / "data" / "demo" / "pool.jsonl.gz"
TASKS = ROOT / "data" / "demo" / "tasks"
CONFIG = make_config(size=30, alpha=0.5, C=1.0, sigma=0.3, metric="cosine", sampling="without-replacement")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    d = tmp_path_factory.mktemp("scale")
    src = d / "pool.jsonl"
    with gzip.open(POOL, "rt", encoding="utf-8") as f:
        src.write_text("".join(itertools.islice(f, 1200)))
    return src


@pytest.fixture
def measured(monkeypatch):
    """The pool scales measured (the real function, counted)."""
    calls = []
    real = autoparams.pool_scale

    def counted(index, *args, **kwargs):
        calls.append(index.kind)
        return real(index, *args, **kwargs)

    monkeypatch.setattr(autoparams, "pool_scale", counted)
    return calls


def _select(root, embedder, task="food", config=CONFIG, **kw):
    sel, info = select_from_store(PoolStore(root), TASKS / task / "queries.jsonl", config, embedder=embedder, **kw)[:2]
    return sel, info


def _scale_files(root):
    return sorted(p.name for p in (root / "scale").glob("*.npz")) if (root / "scale").exists() else []


def test_later_tasks_read_the_pool_scale_and_select_the_same(source, tmp_path, static_embedder, measured):
    root = tmp_path / "store"
    build_store([source], root, embedder=static_embedder, metric="cosine")
    first, _ = _select(root, static_embedder)
    assert measured == ["flat"] and len(_scale_files(root)) == 1
    again, _ = _select(root, static_embedder)
    other, _ = _select(root, static_embedder, task="zoology", config=CONFIG.model_copy(update={"sigma_auto": True}))
    assert measured == ["flat"]  # read back for the same task and for another one (sigma auto reads it too)
    assert np.array_equal(first.probabilities, again.probabilities) and np.array_equal(first.counts, again.counts)

    fresh = tmp_path / "fresh"
    build_store([source], fresh, embedder=static_embedder, metric="cosine")
    shutil.rmtree(fresh / "scale", ignore_errors=True)
    measured.clear()
    cold, _ = _select(fresh, static_embedder, task="zoology", config=CONFIG.model_copy(update={"sigma_auto": True}))
    assert measured == ["flat"]
    assert cold.config.sigma == other.config.sigma
    assert np.array_equal(cold.probabilities, other.probabilities) and np.array_equal(cold.counts, other.counts)


def test_a_scale_of_other_content_is_measured_again(source, tmp_path, static_embedder, measured, caplog):
    """A file copied from a store of other rows, under the very name this store's key gives, is not used."""
    a, b = tmp_path / "a", tmp_path / "b"
    build_store([source], a, embedder=static_embedder, metric="cosine")
    small = tmp_path / "small.jsonl"
    small.write_text("".join(source.read_text().splitlines(keepends=True)[:1100]))
    build_store([small], b, embedder=static_embedder, metric="cosine")
    want, _ = _select(b, static_embedder)
    name = _scale_files(b)[0]
    _select(a, static_embedder)
    shutil.copy(a / "scale" / _scale_files(a)[0], b / "scale" / name)  # another store's scale, this key's name
    measured.clear()
    with caplog.at_level(logging.WARNING, logger="tsds"):
        got, _ = _select(b, static_embedder)
    assert measured == ["flat"] and any("measured again" in r.getMessage() for r in caplog.records)
    assert np.array_equal(got.probabilities, want.probabilities)


def test_a_store_that_cannot_keep_it_measures_every_time_and_says_so(source, tmp_path, static_embedder, measured,
                                                                      caplog):
    """(A file where the scale folder would go: unwritable for root too, unlike a read-only folder.)"""
    root = tmp_path / "store"
    build_store([source], root, embedder=static_embedder, metric="cosine")
    shutil.rmtree(root / "scale", ignore_errors=True)
    (root / "scale").write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger="tsds"):
        first, _ = _select(root, static_embedder)
        again, _ = _select(root, static_embedder)
    assert measured == ["flat", "flat"] and (root / "scale").read_text() == "not a folder"
    assert sum("cannot save the pool scale" in r.getMessage() for r in caplog.records) == 2
    assert np.array_equal(first.probabilities, again.probabilities)


def test_rows_left_out_and_approximate_indexes_have_no_shared_scale(source, tmp_path, static_embedder, measured):
    """The key holds the rows left out (a decontaminated pool measures its own, and keeps none), and an IVF
    index's scale is measured each time (its neighbours depend on its lists and breadth)."""
    root = tmp_path / "store"
    build_store([source], root, embedder=static_embedder, metric="cosine")
    _select(root, static_embedder)
    files = _scale_files(root)
    measured.clear()
    texts = [json.loads(line)["text"] for line in source.read_text().splitlines()[:3]]
    sel, _ = _select(root, static_embedder, exclude_texts=texts, exclude_radius=0.0)
    assert sel.timings["eligibility"]["removed"] >= 3
    assert measured == ["flat"] and _scale_files(root) == files
    measured.clear()
    _select(root, static_embedder, config=CONFIG.model_copy(update={"index": "ivf"}))
    _select(root, static_embedder, config=CONFIG.model_copy(update={"index": "ivf"}))
    assert measured == ["ivf", "ivf"] and _scale_files(root) == files


def test_the_stored_scale_is_the_measured_one(source, tmp_path, static_embedder):
    root = tmp_path / "store"
    store = build_store([source], root, embedder=static_embedder, metric="cosine")
    index = store.index("cosine")
    measured = autoparams.stored_pool_scale(store, index)
    read = autoparams.stored_pool_scale(PoolStore(root), index)
    direct = autoparams.pool_scale(index)
    for scale in (measured, read):
        assert np.array_equal(scale.nn, direct.nn) and np.array_equal(scale.pairs, direct.pairs)
        assert scale.sample == direct.sample and scale.seed == direct.seed
