"""IVF indexes whose vectors live in a mapped file: same answers as in memory, bounded resident pages,
nothing left behind, clear errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest

from tsds.errors import InputError, ParameterError
from tsds.retrieval import build_index
from tsds.retrieval.index import list_members, list_vectors
from tsds.retrieval.mapped import filesystem, resident_bytes

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pages are dropped on Linux only")


def _clustered(n, d, seed=0, clusters=40, noise=0.2):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    x = centres[rng.integers(0, clusters, n)] + noise * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module", params=[16, 15], ids=["d16", "d15-odd"])
def pair(request):
    """The same pool indexed in memory and mapped (an odd dimension needs spare rows for aligned ids)."""
    x = _clustered(6000, request.param)
    memory = build_index(x, kind="ivf", nlist=48, storage="memory")
    disk = build_index(x, kind="ivf", nlist=48, storage="disk")
    assert memory.pages is None and disk.pages is not None
    return x, memory, disk


def test_mapped_lists_hold_the_same_bytes_aligned(pair):
    _, memory, disk = pair
    a, b = faiss.extract_index_ivf(memory.index), faiss.extract_index_ivf(disk.index)
    for lst in range(a.nlist):
        ya, ia = list_vectors(a, lst)
        yb, ib = list_vectors(b, lst)
        assert np.array_equal(ya, yb) and np.array_equal(ia, ib)
        if yb.shape[0]:
            assert yb.ctypes.data % 64 == 0 and ib.ctypes.data % 8 == 0  # numpy's BLAS path needs aligned rows
    starts, ids = list_members(a)
    assert all(np.array_equal(u, v) for u, v in zip(disk.members(), (starts, ids)))


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])  # cosine: rows of other lengths, normalised
def test_a_build_staged_in_several_groups_of_lists_writes_the_same_lists(monkeypatch, metric):
    """Above the staging budget the mapped build passes over the pool once per group of lists: the same
    bytes as the in-memory build, every row counted once by the progress callback."""
    from tsds.retrieval import index as index_module

    x = _clustered(6000, 15) * np.random.default_rng(2).uniform(0.5, 3.0, (6000, 1)).astype(np.float32)
    memory = build_index(x, metric=metric, kind="ivf", nlist=48, storage="memory")
    monkeypatch.setattr(index_module, "_STAGE_BYTES", 50_000)  # 6000 x 60 bytes: 8 groups (the most)
    assert index_module._list_groups(np.zeros(0, dtype=np.int64), 60) == []
    seen = []
    disk = build_index(x, metric=metric, kind="ivf", nlist=48, storage="disk", progress=seen.append)
    assert sum(seen) == x.shape[0]
    a, b = faiss.extract_index_ivf(memory.index), faiss.extract_index_ivf(disk.index)
    sizes = np.array([a.invlists.list_size(lst) for lst in range(a.nlist)])
    spans = index_module._list_groups(sizes, 60)
    assert len(spans) == 8 and spans[0][0] == 0 and spans[-1][1] == a.nlist
    assert all(p[1] == q[0] for p, q in zip(spans, spans[1:]))
    for lst in range(a.nlist):
        for u, v in zip(list_vectors(a, lst), list_vectors(b, lst)):
            assert np.array_equal(u, v)


def test_mapped_index_answers_exactly_like_the_in_memory_one(pair):
    x, memory, disk = pair
    q = _clustered(30, x.shape[1], seed=5)
    for index in (memory, disk):
        index.nprobe = 4
    for k in (10, 300, 2000):  # FAISS's search below 256, tsds's list scan above
        for a, b in zip(memory.search(q, k), disk.search(q, k)):
            assert np.array_equal(a, b)
    for a, b in zip(memory.exact_search(q, 50), disk.exact_search(q, 50)):
        assert np.array_equal(a, b)
    ids = np.array([5, 3, 5, 5999, 0, 1234, 3])  # unsorted, repeated
    assert np.array_equal(memory.reconstruct(ids), disk.reconstruct(ids))
    assert np.array_equal(memory.lists_of(ids), disk.lists_of(ids))
    pts = np.random.default_rng(1).choice(x.shape[0], 700, replace=False)
    for a, b in zip(memory.densities(pts, 0.6, return_counts=True), disk.densities(pts, 0.6, return_counts=True)):
        assert np.array_equal(a, b)
    for a, b in zip(memory.within_radius(x[:20], 0.3), disk.within_radius(x[:20], 0.3)):
        assert np.array_equal(a, b)
    with pytest.raises(IndexError):
        disk.reconstruct(np.array([x.shape[0]]))


def test_selection_is_the_same_on_a_mapped_index(tmp_path):
    import tsds

    x = _clustered(60_000, 8, clusters=80)
    np.save(tmp_path / "X.npy", x)
    np.save(tmp_path / "Q.npy", x[:12] + 0.01)
    runs = {storage: tsds.select_embeddings(tmp_path / "X.npy", tmp_path / "Q.npy", size=200, sigma=0.3, C=1,
                                            index_storage=storage, work_dir=tmp_path)
            for storage in ("memory", "disk")}
    assert runs["memory"].timings["index"]["storage"] == "memory"
    assert runs["disk"].timings["index"]["storage"] == "disk"
    assert np.array_equal(runs["memory"].probabilities, runs["disk"].probabilities)
    assert np.array_equal(runs["memory"].counts, runs["disk"].counts)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Q.npy", "X.npy"]  # the index's file is gone


@linux
def test_resident_pages_stay_within_the_window():
    x = _clustered(40_000, 64)  # 10 MB of vectors
    index = build_index(x, kind="ivf", nlist=100, storage="disk")
    q = _clustered(40, 64, seed=2)
    index.nprobe = 100
    index.pages.limit = 1 << 20
    index.search(q, 500)
    index.densities(np.arange(0, 40_000, 10), 0.5)
    assert index.pages.releases > 0
    assert resident_bytes(index.pages) <= (1 << 20) + (4 << 20)
    index.pages.limit = 1 << 40  # no window: the same reads leave the whole file resident
    index.search(q, 500)
    assert resident_bytes(index.pages) > 8 << 20


def test_index_file_is_removed_and_nothing_left_in_the_work_dir(tmp_path):
    index = build_index(_clustered(3000, 8), kind="ivf", nlist=20, work_dir=tmp_path)
    assert index.pages is not None
    assert list(tmp_path.iterdir()) == []
    assert index.search(_clustered(3, 8, seed=9), 5)[1].shape == (3, 5)


def test_a_named_temporary_file_is_removed_where_unnamed_ones_are_not_offered(tmp_path, monkeypatch):
    """Without O_TMPFILE (other systems, some file systems) the file gets a name, removed once mapped."""
    from tsds.retrieval import mapped

    monkeypatch.setattr(mapped, "_unnamed_file", lambda folder: None)
    x = _clustered(3000, 8)
    index = build_index(x, kind="ivf", nlist=20, work_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []
    assert np.array_equal(index.reconstruct(np.arange(3000)), x)


def test_bad_storage_and_work_dir_are_one_line_errors(tmp_path):
    x = _clustered(2000, 8)
    with pytest.raises(ParameterError, match="index storage"):
        build_index(x, kind="ivf", storage="ram")
    with pytest.raises(InputError, match="nowhere does not exist"):
        build_index(x, kind="ivf", work_dir=tmp_path / "nowhere")
    with pytest.raises(InputError, match="nowhere does not exist"):  # also where the index stays in memory
        build_index(x, kind="flat", work_dir=tmp_path / "nowhere")
    (tmp_path / "a_file").write_text("")
    with pytest.raises(InputError, match="a_file is not a folder"):
        build_index(x, kind="ivf", work_dir=tmp_path / "a_file")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_unwritable_work_dir_is_a_clear_error(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(InputError, match="cannot write the index's temporary file"):
            build_index(_clustered(2000, 8), kind="ivf", nlist=10, work_dir=folder)
    finally:
        folder.chmod(0o700)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="no /proc")
def test_a_work_dir_that_refuses_files_is_a_clear_error_even_for_root():
    """/proc is a folder in which nobody can create files (the test above skips under root)."""
    with pytest.raises(InputError, match="cannot write the index's temporary file in /proc"):
        build_index(_clustered(2000, 8), kind="ivf", nlist=10, work_dir="/proc")


@pytest.mark.skipif(filesystem(Path("/dev/shm")) != "tmpfs", reason="no tmpfs at /dev/shm")
def test_a_work_dir_in_memory_gets_a_note(caplog):
    build_index(_clustered(2000, 8), kind="ivf", nlist=10, work_dir="/dev/shm")
    assert any("is in memory (tmpfs)" in r.getMessage() for r in caplog.records)


def test_cli_index_storage(tmp_path):
    x = _clustered(60_000, 8, clusters=80)
    np.save(tmp_path / "X.npy", x)
    np.save(tmp_path / "Q.npy", x[:6] + 0.01)
    base = [sys.executable, "-m", "tsds.cli", "select", "--candidate-embeddings", str(tmp_path / "X.npy"),
            "--query-embeddings", str(tmp_path / "Q.npy"), "--size", "50", "--sigma", "0.3", "--C", "1", "--quiet"]
    work = tmp_path / "work"
    work.mkdir()
    for storage in ("memory", "disk"):
        r = subprocess.run([*base, "--index-storage", storage, "--work-dir", str(work), "--out",
                            str(tmp_path / storage)], capture_output=True, text=True, check=False)
        assert r.returncode == 0, r.stderr
        assert json.loads((tmp_path / storage / "manifest.json").read_text())["index"]["storage"] == storage
    assert np.array_equal(np.load(tmp_path / "memory" / "probabilities.npy"),
                          np.load(tmp_path / "disk" / "probabilities.npy"))
    assert list(work.iterdir()) == []
    for extra, message in ((["--index-storage", "ram"], "index storage"),
                           (["--work-dir", str(tmp_path / "nowhere")], "nowhere does not exist"),
                           (["--pool", str(tmp_path), "--queries", "q.jsonl", "--index-storage", "disk"],
                            "applies to selecting from .npy embeddings")):
        r = subprocess.run([*base, *extra, "--out", str(tmp_path / "bad")], capture_output=True, text=True, check=False)
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert r.returncode != 0 and len(lines) == 1 and message in lines[0], r.stderr
        assert not (tmp_path / "bad").exists()


def test_store_copies_go_next_to_a_local_store_and_never_to_a_network_file_system(tmp_path, monkeypatch):
    from tsds.retrieval import mapped

    assert mapped.local_or_none(tmp_path) == tmp_path
    monkeypatch.setattr(mapped, "filesystem", lambda folder: "nfs4")
    assert mapped.local_or_none(tmp_path) is None
