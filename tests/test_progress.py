"""Progress that tells the truth on long jobs: per-batch advances, a rate and ETA of this run's own work
(reused shards move the bar but not the rate), ``-q`` prints nothing but errors, ``--log-json`` lines carry
timestamps, and the dataset card opens with the hubs' YAML metadata."""

import copy
import gzip
import itertools
import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
FOOD = ROOT / "data" / "demo" / "tasks" / "food" / "queries.jsonl"


class Recorder:
    """A build's progress callback that keeps every call: own work and reused shards apart."""

    def __init__(self):
        self.own, self.reused_calls = [], []

    def __call__(self, n):
        self.own.append(n)

    def reused(self, n):
        self.reused_calls.append(n)


@pytest.fixture(scope="module")
def pool_file(tmp_path_factory):
    src = tmp_path_factory.mktemp("progress") / "pool.jsonl"
    with gzip.open(ROOT / "data" / "demo" / "pool.jsonl.gz", "rt") as f, open(src, "w") as g:
        g.writelines(itertools.islice(f, 2000))
    return src


def _vectors(store):
    return np.concatenate([v for _, v in store.vectors().chunks()])


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "tsds.cli", *map(str, args)], capture_output=True, text=True)


def test_a_build_advances_per_batch_and_a_resumed_build_counts_reused_shards_apart(pool_file, static_embedder,
                                                                                   tmp_path):
    from tsds.store import PoolStore, build_store

    small = copy.copy(static_embedder)
    small.batch_size = 64
    first = Recorder()
    store = build_store([pool_file], tmp_path / "s", embedder=small, shard_rows=500, progress=first)
    assert first.reused_calls == []
    assert sum(first.own) == 2000
    assert max(first.own) == 64 and len(first.own) == 4 * -(-500 // 64)    # per batch, not per shard
    reference = _vectors(store)
    # the same bytes as one shard-sized batch would give
    whole = build_store([pool_file], tmp_path / "w", embedder=static_embedder, shard_rows=500)
    assert np.array_equal(_vectors(whole), reference)

    # an interrupted build: the last shard not finished; the resumed build embeds only it
    (tmp_path / "s" / "shards" / "000003.json").unlink()
    second = Recorder()
    build_store([pool_file], tmp_path / "s", embedder=small, shard_rows=500, progress=second)
    assert second.reused_calls == [500, 500, 500]
    assert sum(second.own) == 500 and len(second.own) == -(-500 // 64)
    assert np.array_equal(_vectors(PoolStore(tmp_path / "s")), reference)

    again = Recorder()
    build_store([pool_file], tmp_path / "s", embedder=small, shard_rows=500, progress=again)
    assert again.own == [] and sum(again.reused_calls) == 2000


def test_rate_and_eta_count_only_this_runs_work():
    from tsds.progress import _Advance

    now = [0.0]
    a = _Advance(clock=lambda: now[0])
    a.add_total(3000)
    for t in (1.0, 2.0, 5.0):            # three finished shards found, by t = 5 s
        now[0] = t
        a.reused(500)
    now[0] = 30.0
    a(250)                               # the first batch, after loading the model: no rate yet
    assert a.rate() is None and a.eta() is None
    now[0] = 35.0
    a(250)                               # 250 rows in the 5 s since
    assert a.rate() == pytest.approx(50.0)
    assert a.eta() == pytest.approx((3000 - 1500 - 500) / 50.0)


def test_the_bar_shows_the_rate_and_eta(pool_file, static_embedder):
    import io

    from rich.console import Console
    from rich.progress import Progress

    from tsds.progress import _Advance, _RateEta

    now = [0.0]
    a = _Advance(unit="rows", clock=lambda: now[0])
    a.add_total(1000)
    column = _RateEta(a)
    with Progress(column, console=Console(file=io.StringIO())) as bar:
        a.bar, a.task = bar, bar.add_task("x", total=1000)
        assert str(column.render(bar.tasks[0])) == "- rows/s  ETA -:--:--"
        now[0] = 4.0
        a(200)
        assert str(column.render(bar.tasks[0])) == "- rows/s  ETA -:--:--"
        now[0] = 8.0
        a(200)
        assert str(column.render(bar.tasks[0])) == "50 rows/s  ETA 00:00:12"


def test_quiet_build_and_select_print_nothing(pool_file, tmp_path):
    store = tmp_path / "store"
    r = _cli("pool", "build", pool_file, "--out", store, "--shard-rows", 500, "-q")
    assert r.returncode == 0, r.stderr
    assert (r.stdout, r.stderr) == ("", "")
    queries = tmp_path / "q.jsonl"          # a repeated query: a query warning, which -q does not print
    lines = FOOD.read_text().splitlines()
    queries.write_text("\n".join(lines + lines[:1]) + "\n")
    r = _cli("select", "--pool", store, "--queries", queries, "--size", 30, "--out", tmp_path / "sel", "-q")
    assert r.returncode == 0, r.stderr
    assert (r.stdout, r.stderr) == ("", "")
    assert any("repeats" in w["message"]
               for w in json.loads((tmp_path / "sel" / "manifest.json").read_text())["query_warnings"])
    assert len((tmp_path / "sel" / "selected.jsonl").read_text().splitlines()) == 30
    r = _cli("select", "--pool", store, "--queries", FOOD, "--size", 30, "--out", tmp_path / "lic", "-q",
             "--license", "cc-by-4.0")
    assert r.returncode == 0, r.stderr
    meta = yaml.safe_load((tmp_path / "lic" / "README.md").read_text().split("---\n")[1])
    assert meta["license"] == "cc-by-4.0" and "license_details" not in meta
    r = _cli("select", "--pool", store, "--queries", FOOD, "--size", 30, "--out", tmp_path / "bad", "-q",
             "--license", "CC BY 4.0\nother")
    assert r.returncode == 2 and "--license" in r.stderr and not (tmp_path / "bad").exists()
    # errors still show, as one line
    r = _cli("select", "--pool", tmp_path / "missing", "--queries", FOOD, "--size", 30, "--out", tmp_path / "x", "-q")
    assert r.returncode == 2 and r.stdout == "" and r.stderr.startswith("error:")
    assert len(r.stderr.strip().splitlines()) == 1


def test_log_json_lines_parse_and_carry_timestamps(pool_file, tmp_path):
    r = _cli("pool", "build", pool_file, "--out", tmp_path / "store", "--shard-rows", 500, "--log-json")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stderr.splitlines()]
    assert [x["shard"] for x in lines if x.get("event") == "shard_done"] == [0, 1, 2, 3]
    for x in lines:
        assert datetime.fromisoformat(x["ts"]).tzinfo is not None
        assert x["level"] and x["logger"]
    assert r.stdout.startswith("store ")          # the human summary has stdout to itself
    r = _cli("pool", "build", tmp_path / "missing.jsonl", "--out", tmp_path / "s2", "--log-json")
    assert r.returncode == 2 and r.stdout == ""
    (line,) = r.stderr.splitlines()                # the error is a JSON line as well
    error = json.loads(line)
    assert error["level"] == "error" and "missing.jsonl" in error["message"] and error["ts"]


def test_the_card_opens_with_yaml_metadata(small_store, static_embedder, tmp_path):
    from tsds.api import select_text

    from tsds.config import make_config

    select_text(small_store, FOOD, out=tmp_path / "o", embedder=static_embedder, config=make_config(size=40))
    card = (tmp_path / "o" / "README.md").read_text()
    assert card.startswith("---\n")
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["license"] == "other" and "licence" in meta["license_details"]
    assert meta["size_categories"] == ["n<1K"]
    assert meta["source_datasets"] == ["pool.jsonl"]
    assert "text-generation" in meta["task_categories"] and {"data-selection", "tsds"} <= set(meta["tags"])
    assert meta["pretty_name"].startswith("Selection for")
    assert "\n# Selection for" in card


def test_size_categories_follow_the_hubs_buckets():
    from tsds.io.writers import size_category

    assert [size_category(n) for n in (0, 999, 1000, 9999, 10_000, 250_000, 5_000_000)] == [
        "n<1K", "n<1K", "1K<n<10K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M"]


def test_model_building_output_is_held_back(capsys):
    """What the libraries print while the static model is distilled (tqdm bars, model2vec's INFO logs,
    warnings) is held back; the build is announced by one line of tsds."""
    import logging
    import warnings

    from tqdm import tqdm

    from tsds.embed.static import _hushed

    before = logging.getLogger("model2vec").level
    logging.basicConfig(level=logging.INFO, force=True)
    try:
        with _hushed():
            for _ in tqdm(range(3), desc="Encoding tokens"):
                pass
            print("Applying PCA with n_components 256")
            logging.getLogger("model2vec.distill").info("Reduced dimensionality from 384 to 256.")
            warnings.warn("a library's warning")
        logging.getLogger("model2vec.distill").error("after: errors still show")
    finally:
        logging.basicConfig(level=logging.WARNING, force=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "Encoding" not in captured.err and "Reduced" not in captured.err and "warning" not in captured.err
    assert "after: errors still show" in captured.err
    assert logging.getLogger("model2vec").level == before      # the levels are put back
