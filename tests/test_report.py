"""The selection report: figures and sections written, and the page rendered in headless Chromium with
every image decoded, no script errors, and a screenshot of the whole page."""

import gzip
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tsds.config import make_config
from tsds.api import select_text
from tsds.report import SECTIONS
from tsds.store import build_store

ROOT = Path(__file__).resolve().parent.parent
POOL = ROOT / "data" / "demo" / "pool.jsonl.gz"
FOOD = ROOT / "data" / "demo" / "tasks" / "food" / "queries.jsonl"
FIGURES = ["map", "mix", "distances", "density", "coverage"]


@pytest.fixture(scope="module")
def selection(tmp_path_factory, static_embedder):
    d = tmp_path_factory.mktemp("report")
    path = d / "pool.jsonl"
    with gzip.open(POOL, "rt", encoding="utf-8") as f, open(path, "w", encoding="utf-8") as g:
        lines = [line for _, line in zip(range(4000), f)]
        food = [line for line in lines if '"noun.food"' in line or '"Cookery"' in line][:40]
        g.writelines(lines + food)  # exact copies of food rows: near-duplicate clusters to show
    store = build_store([path], d / "store", embedder=static_embedder, shard_rows=1000)
    out = d / "sel"
    select_text(store, FOOD, out=out, config=make_config(size=120, C=1.3, sigma_auto=True, alpha_auto=2.0,
                                                         sampling="without-replacement"), report=True)
    return out


def test_report_files_and_sections(selection):
    html = (selection / "report.html").read_text(encoding="utf-8")
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in html
    for name in FIGURES:
        png = (selection / "figures" / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
        assert f'id="fig-{name}"' in html
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # self-contained: nothing fetched
    assert "level s" in html and "draws credited" in html and "_tsds" not in html.split("<main>")[0]
    assert "cluster size" in html  # the planted copies show up as collapsed clusters
    assert "<h1>food: tsds selection</h1>" in html  # the task, not the query file


def test_report_cli_rewrites(selection):
    from typer.testing import CliRunner

    from tsds.cli import app

    (selection / "report.html").unlink()
    res = CliRunner().invoke(app, ["report", str(selection), "--sample", "1500"])
    assert res.exit_code == 0, res.output
    assert (selection / "report.html").is_file()


@pytest.fixture(scope="session")
def chromium():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.geteuid() != 0:
            pytest.skip("chromium is not installed and installing it needs root (apt-get install chromium)")
        subprocess.run("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium",
                       shell=True, check=True, capture_output=True, timeout=900)
        exe = shutil.which("chromium")
    return exe


def _chromium(exe, tmp, *args):
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp}", "--virtual-time-budget=5000", "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_report_renders_in_chromium(selection, chromium, tmp_path):
    url = (selection / "report.html").resolve().as_uri()
    dom = _chromium(chromium, tmp_path / "profile1", "--dump-dom", url)
    body = re.search(r"<body[^>]*>", dom.stdout).group(0)
    n_img = len(re.findall(r"<img ", (selection / "report.html").read_text()))
    assert 'data-report-checked="1"' in body, body
    assert f'data-images="{n_img}"' in body and n_img >= len(FIGURES)
    assert 'data-images-broken="0"' in body and 'data-js-errors="0"' in body, body
    assert 'data-rendered="0"' not in dom.stdout
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in dom.stdout

    shot = selection / "screenshot.png"
    res = _chromium(chromium, tmp_path / "profile2", f"--screenshot={shot}", "--window-size=1280,4200",
                    "--hide-scrollbars", url)
    assert shot.is_file(), res.stderr[-2000:]
    import matplotlib.image as mpimg

    img = mpimg.imread(shot)
    assert img.shape[:2] == (4200, 1280)
    assert float(np.std(img[..., :3])) > 0.05  # not a blank page
