"""The comparison report of two selections of one pool store (tsds vs knn), and the fixed figures of the
single-selection report: what the page says is checked against the records files, and the page is rendered
in headless Chromium with a screenshot of its sections."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from test_report import _chromium, chromium  # noqa: F401 - the session fixture that finds or installs chromium

from tsds.api import select_text
from tsds.config import make_config
from tsds.errors import InputError
from tsds.report.compare import COMPARE_SECTIONS, compare_selections

ROOT = Path(__file__).resolve().parent.parent
FOOD = ROOT / "data" / "demo" / "tasks" / "food" / "queries.jsonl"


def _rows(folder: Path) -> list[int]:
    with open(folder / "selected.jsonl", encoding="utf-8") as f:
        return [json.loads(line)["_tsds_row"] for line in f]


@pytest.fixture(scope="module")
def pair(tmp_path_factory, small_store):
    d = tmp_path_factory.mktemp("compare")
    a, b = d / "tsds<b>", d / "knn"  # a folder name with markup: the page must escape it
    select_text(small_store, FOOD, out=a, config=make_config(size=80, sigma_auto=True, alpha_auto=2.0))
    select_text(small_store, FOOD, out=b, config=make_config(size=80), method="knn")
    out = d / "cmp"
    compare_selections(a, b, out, store=small_store)
    return a, b, out


def test_compare_overlap_and_sections(pair):
    a, b, out = pair
    page = (out / "compare.html").read_text(encoding="utf-8")
    for title in COMPARE_SECTIONS:
        assert f"<h2>{title}</h2>" in page
    ra, rb = set(_rows(a)), set(_rows(b))
    both = len(ra & rb)
    assert f"<td>distinct rows in both</td><td>{both}</td>" in page
    assert f"{both / len(ra | rb):.3f}" in page
    assert "<h1>food: tsds vs knn</h1>" in page
    assert "tsds (tsds&lt;b&gt;)" in page and "tsds<b>" not in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    for name in ("mix", "distances", "duplicates", "coverage"):
        png = (out / "figures" / f"compare-{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and f'id="fig-compare-{name}"' in page
    cells = re.findall(r"<tr><td class='num'>(\d+)</td><td class='num'>(\d+)</td><td class='num'>(\d+)</td></tr>", page)
    assert len(cells) == 20  # one row per food query
    assert sum(int(c[1]) for c in cells) == len(_rows(a)) and sum(int(c[2]) for c in cells) == len(_rows(b))


def test_compare_refuses_two_stores(pair, tmp_path):
    from typer.testing import CliRunner

    from tsds.cli import app

    a, b, _ = pair
    other = tmp_path / "other"
    other.mkdir()
    for f in b.iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    m = json.loads((b / "manifest.json").read_text())
    m["pool_store"]["path"] = str(tmp_path / "another-store")
    (other / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(InputError, match="different pool stores"):
        compare_selections(a, other, tmp_path / "out")
    res = CliRunner().invoke(app, ["compare", str(a), str(other), "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and "different pool stores" in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()  # nothing written before the refusal
    res = CliRunner().invoke(app, ["compare", str(a), str(tmp_path), "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and "no manifest.json" in res.output


def test_compare_cli_writes_page(pair, tmp_path):
    from typer.testing import CliRunner

    from tsds.cli import app

    a, b, _ = pair
    res = CliRunner().invoke(app, ["compare", str(a), str(b), "--out", str(tmp_path / "c")])
    assert res.exit_code == 0, res.output
    assert "<h2>Overlap</h2>" in (tmp_path / "c" / "compare.html").read_text(encoding="utf-8")


def test_compare_renders_in_chromium(pair, chromium, tmp_path):  # noqa: F811
    _, _, out = pair
    url = (out / "compare.html").resolve().as_uri()
    dom = _chromium(chromium, tmp_path / "p1", "--dump-dom", url)
    body = re.search(r"<body[^>]*>", dom.stdout).group(0)
    assert 'data-report-checked="1"' in body and 'data-images="4"' in body, body
    assert 'data-images-broken="0"' in body and 'data-js-errors="0"' in body, body
    for title in COMPARE_SECTIONS:
        assert f"<h2>{title}</h2>" in dom.stdout
    shot = out / "screenshot.png"
    res = _chromium(chromium, tmp_path / "p2", f"--screenshot={shot}", "--window-size=1280,3600",
                    "--hide-scrollbars", url)
    assert shot.is_file(), res.stderr[-2000:]
    import matplotlib.image as mpimg

    img = mpimg.imread(shot)[..., :3]
    assert img.shape[:2] == (3600, 1280)
    # each section is a white card on the grey page: count the cards down the left margin of the content
    column = img[:, 40].mean(1)
    white = column > 0.99
    cards = int(np.sum(white[1:] & ~white[:-1]))
    assert cards >= len(COMPARE_SECTIONS), cards


def test_single_report_axes_fixed():
    """Coverage axes start at 0 with the legend below the bars; the density log axes print plain numbers."""
    from tsds.report.figures import coverage_axes, density_axes

    credited = np.full(20, 174.0) + np.arange(20) % 2
    fig = coverage_axes(credited, credited, np.linspace(0.5, 0.6, 20), np.zeros(20, bool), 0.55)
    a1, a2, a1b = fig.axes
    assert a1.get_ylim()[0] == 0 and a1b.get_ylim()[0] == 0 and a2.get_ylim()[0] == 0
    fig.canvas.draw()
    legend = a2.get_legend().get_window_extent()
    assert legend.y1 < a2.get_window_extent().y0  # below the axes: covers no bar
    fig = density_axes(np.array([1.0, 1.5, 3.0, 7.0]), np.array([1.0, 2.0]), 0.3)
    fig.canvas.draw()
    labels = [t.get_text() for ax in fig.axes for axis in (ax.xaxis, ax.yaxis)
              for t in axis.get_ticklabels(minor=True) + axis.get_ticklabels()]
    assert labels and not any("times" in t or "^" in t for t in labels), labels
