"""Where tsds writes: never over its inputs, files and folders with the umask's modes, temporaries of killed runs
swept, and the system's refusals to write (file too large, read-only) as one line naming the path."""

import gzip
import itertools
import json
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

TSDS = [sys.executable, "-m", "tsds.cli"]
ROOT = Path(__file__).resolve().parent.parent
QUERIES = ROOT / "data" / "demo" / "tasks" / "food" / "queries.jsonl"


def run(*args, cwd=None, env=None, preexec_fn=None):
    return subprocess.run([*TSDS, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=env, preexec_fn=preexec_fn)


def one_line_error(r, *needles) -> str:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def npy(tmp_path):
    d = tmp_path / "inputs"
    d.mkdir()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(800, 16)).astype(np.float32)
    np.save(d / "X.npy", x)
    np.save(d / "Q.npy", x[:5] + 0.01)
    return d


def npy_args(d):
    return ["select", "--candidate-embeddings", d / "X.npy", "--query-embeddings", d / "Q.npy", "--size", 10]


@pytest.fixture
def store_copy(small_store, tmp_path):
    """A private copy of the small store, so that a test that tries to replace it cannot harm the others."""
    return shutil.copytree(small_store.root, tmp_path / "store")


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---- --records ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["{victim}", "../victim.jsonl", "sub/x.jsonl", "..", "", "~/x.jsonl"])
def test_records_name_must_be_a_plain_file_name(store_copy, tmp_path, name):
    victim = tmp_path / "victim.jsonl"
    victim.write_text('{"keep": 1}\n')
    out = tmp_path / "sel"
    r = run("select", "--pool", store_copy, "--queries", QUERIES, "--size", 5, "--out", out,
            "--records", name.format(victim=victim))
    one_line_error(r, "--records")
    assert victim.read_text() == '{"keep": 1}\n'
    assert not out.exists() and not (tmp_path / "sub").exists()


def test_library_refuses_a_records_path_too(small_store, tmp_path):
    from tsds.config import make_config
    from tsds.errors import ParameterError
    from tsds.api import select_multi_text
    from tsds.api import select_text

    victim = tmp_path / "victim.jsonl"
    victim.write_text("mine\n")
    for call, queries in ((select_text, QUERIES), (select_multi_text, [f"{QUERIES}:1", f"{QUERIES}:2"])):
        with pytest.raises(ParameterError, match="plain file name"):
            call(small_store, queries, out=tmp_path / "sel", config=make_config(size=5), records_name=str(victim))
    assert victim.read_text() == "mine\n" and sorted(p.name for p in tmp_path.iterdir()) == ["victim.jsonl"]


# ---- --out over the inputs ---------------------------------------------------------------------

def test_out_is_the_pool_store(store_copy, tmp_path):
    before = _tree(store_copy)
    r = run("select", "--pool", store_copy, "--queries", QUERIES, "--size", 5, "--out", store_copy, "--overwrite")
    one_line_error(r, "--out", "holds the input")
    assert _tree(store_copy) == before


def test_library_never_replaces_a_pool_store(store_copy):
    from tsds.config import make_config
    from tsds.errors import ParameterError
    from tsds.api import select_text

    before = _tree(store_copy)
    with pytest.raises(ParameterError, match="is a pool store"):
        select_text(store_copy, QUERIES, out=store_copy, config=make_config(size=5), overwrite=True)
    assert _tree(store_copy) == before


def test_out_holds_the_query_file_or_the_exclude_file(store_copy, tmp_path):
    task = tmp_path / "task"
    task.mkdir()
    (task / "queries.jsonl").write_bytes(QUERIES.read_bytes())
    (task / "eval.jsonl").write_text('{"text": "an evaluation item"}\n')
    for extra in ([], ["--exclude", task / "eval.jsonl"]):
        queries = QUERIES if extra else task / "queries.jsonl"
        r = run("select", "--pool", store_copy, "--queries", queries, "--size", 5, "--out", task, "--overwrite",
                *extra)
        one_line_error(r, "holds the input")
        assert (task / "queries.jsonl").read_bytes() == QUERIES.read_bytes()
        assert (task / "eval.jsonl").is_file()


def test_out_holds_the_embeddings_or_the_config_file(npy, tmp_path):
    r = run(*npy_args(npy), "--out", npy, "--overwrite")
    one_line_error(r, "holds the input")
    assert (npy / "X.npy").is_file() and (npy / "Q.npy").is_file()
    cfg_dir = tmp_path / "cfg"
    cfg_dir.mkdir()
    (cfg_dir / "config.yaml").write_text(f"sample_size: 5\noutput_folder: {cfg_dir}\n")
    r = run("select", "--candidate-embeddings", npy / "X.npy", "--query-embeddings", npy / "Q.npy",
            "--config", cfg_dir / "config.yaml", "--overwrite")
    one_line_error(r, "holds the input", "config.yaml")
    assert (cfg_dir / "config.yaml").is_file()


def test_out_through_a_symlink_to_the_inputs(npy, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(npy, target_is_directory=True)
    r = run(*npy_args(npy), "--out", link, "--overwrite")
    one_line_error(r, "holds the input")
    assert (npy / "X.npy").is_file() and link.is_symlink()


def test_out_is_the_current_folder_root_or_home(npy, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for cwd in (npy, empty):  # with or without the inputs in it
        r = run(*npy_args(npy), "--out", ".", "--overwrite", cwd=cwd)
        one_line_error(r, "current folder")
    assert sorted(p.name for p in npy.iterdir()) == ["Q.npy", "X.npy"] and not list(empty.iterdir())
    one_line_error(run(*npy_args(npy), "--out", "/", "--overwrite"), "root folder")
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("mine")
    r = run(*npy_args(npy), "--out", home, "--overwrite", env={**os.environ, "HOME": str(home)})
    one_line_error(r, "home folder")
    r = run(*npy_args(npy), "--out", tmp_path, "--overwrite", env={**os.environ, "HOME": str(home)})
    one_line_error(r, "home folder or above it")
    assert (home / "notes.txt").read_text() == "mine"


def test_pool_build_out_holds_the_pool_or_other_files(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "pool.jsonl").write_text('{"text": "a"}\n{"text": "b"}\n')
    (data / ".pool.jsonl.abcdefgh").write_text("a file with a name like a temporary")
    before = _tree(data)
    one_line_error(run("pool", "build", data / "pool.jsonl", "--out", data), "holds the input")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    one_line_error(run("pool", "build", data / "pool.jsonl", "--out", other), "not a pool store")
    assert _tree(data) == before and sorted(p.name for p in other.iterdir()) == ["notes.txt"]


def test_sweep_and_eval_files_are_not_inputs(store_copy, tmp_path):
    queries = tmp_path / "queries.jsonl"
    queries.write_bytes(QUERIES.read_bytes())
    one_line_error(run("sweep", "--pool", store_copy, "--queries", queries, "--json", queries), "--json", "is the input")
    one_line_error(run("sweep", "--pool", store_copy, "--queries", queries, "--figure", store_copy / "store.json"),
                   "--figure", "inside the pool store")
    one_line_error(run("eval", "--pool", store_copy, "--queries", queries, "--heldout", queries, "--size", 5,
                       "--out", queries), "--out", "is the input")
    assert queries.read_bytes() == QUERIES.read_bytes()
    assert json.loads((store_copy / "store.json").read_text())["complete"] is True


# ---- modes -------------------------------------------------------------------------------------

def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_outputs_and_stores_follow_the_umask(mask, tmp_path, small_store, static_embedder):
    from tsds import atomic
    from tsds.api import select_embeddings
    from tsds.config import make_config
    from tsds.api import select_text
    from tsds.store import build_store

    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    src = tmp_path / "pool.jsonl"
    with gzip.open(ROOT / "data" / "demo" / "pool.jsonl.gz", "rt") as f, open(src, "w") as g:
        g.writelines(itertools.islice(f, 300))
    old = os.umask(mask)
    try:
        select_embeddings(x, x[:3], size=5, out=tmp_path / "npy-sel")
        store = build_store([src], tmp_path / "store", embedder=static_embedder, shard_rows=100)
        store.save_densities("euclidean", 0.5, np.zeros(store.n_rows), np.zeros(store.n_rows, np.int64))
        select_text(small_store, QUERIES, out=tmp_path / "text-sel", config=make_config(size=5, sigma=0))
        atomic.write_json(tmp_path / "one.json", {"a": 1})
    finally:
        os.umask(old)
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p.name not in ("pool.jsonl", ".build.lock")]
    folders = [tmp_path / "npy-sel", tmp_path / "text-sel"] + [p for p in tmp_path.rglob("*") if p.is_dir()]
    names = {p.name for p in files}
    assert {"probabilities.npy", "manifest.json", "selected.jsonl", "README.md", "store.json", "000000.npy",
            "000000.json", "euclidean.faiss", "one.json"} <= names, names
    assert any(p.parent.name == "densities" for p in files)
    for p in files:
        assert _mode(p) == 0o666 & ~mask, (p, oct(_mode(p)))
    for p in folders:
        assert _mode(p) == 0o777 & ~mask, (p, oct(_mode(p)))


# ---- temporaries of killed runs -----------------------------------------------------------------

def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_killed_writer_leaves_a_temporary_that_the_next_run_removes(npy, tmp_path):
    out = tmp_path / "sel"
    code = ("import sys, time\nfrom tsds.io.output import atomic_dir\n"
            "with atomic_dir(sys.argv[1]) as tmp:\n"
            "    (tmp / 'probabilities.npy').write_bytes(bytes(4_000_000))\n"
            "    print('writing', flush=True)\n    time.sleep(60)\n")
    writer = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "writing"
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    left = [p for p in tmp_path.iterdir() if p.name.startswith(".sel.tmp-")]
    assert len(left) == 1 and f"-{writer.pid}-" in left[0].name and (left[0] / "probabilities.npy").is_file()
    host = left[0].name.split("-")[2]
    alive = tmp_path / f".sel.tmp-{os.getpid()}-{host}-inuse"         # a live writer's temporary is kept
    elsewhere = tmp_path / f".sel.tmp-{writer.pid}-0badcafe-x"         # so is one written from another machine
    other = tmp_path / f".selection.tmp-{_dead_pid()}-{host}-x"       # and another output's
    for p in (alive, elsewhere, other):
        p.mkdir()
    r = run(*npy_args(npy), "--out", out)
    assert r.returncode == 0, r.stderr
    assert not left[0].exists() and alive.is_dir() and elsewhere.is_dir() and other.is_dir()
    assert (out / "manifest.json").is_file()


def _kill_while_writing(args, parent: Path, name: str, attempts: int = 5):
    """Start ``tsds select`` and SIGKILL it once its temporary output folder holds a file (mid-write); None if
    every attempt finished first."""
    for _ in range(attempts):
        proc = subprocess.Popen([*TSDS, *map(str, args)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while proc.poll() is None:
            busy = [e for e in os.scandir(parent) if e.name.startswith(f".{name}.tmp-") and _has_files(e.path)]
            if busy:
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait()
        if proc.returncode == -signal.SIGKILL:
            return proc
        shutil.rmtree(parent / name, ignore_errors=True)
    return None


def _has_files(folder) -> bool:
    try:
        return any(os.scandir(folder))
    except FileNotFoundError:
        return False


def test_select_killed_mid_write_is_cleaned_by_the_next_run(small_store, tmp_path):
    out = tmp_path / "sel"
    args = ["select", "--pool", small_store.root, "--queries", QUERIES, "--size", 1000, "--out", out, "-q"]
    killed = _kill_while_writing(args, tmp_path, "sel")
    if killed is None:
        pytest.skip("every run finished before it could be killed mid-write")
    left = [p for p in tmp_path.iterdir() if p.name.startswith(".sel.tmp-")]
    assert not out.exists() and len(left) == 1 and f"-{killed.pid}-" in left[0].name
    r = run(*args)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sel"]
    assert sum(1 for _ in open(out / "selected.jsonl")) == 1000


def test_previous_output_moved_aside_by_a_killed_writer_is_put_back(npy, tmp_path):
    out = tmp_path / "sel"
    from tsds.atomic import _owner

    aside = tmp_path / f".sel.old-{_dead_pid()}-{_owner().split('-')[1]}"
    aside.mkdir()
    (aside / "manifest.json").write_text("{}")
    r = run(*npy_args(npy), "--out", out)
    one_line_error(r, "exists")   # the previous output is back in place, so it is not replaced silently
    assert json.loads((out / "manifest.json").read_text()) == {} and not aside.exists()


# ---- the system refuses to write ------------------------------------------------------------------

def _file_size_limit(limit: int):
    def set_limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return set_limit


def test_file_too_large_is_one_line_and_leaves_nothing(npy, tmp_path):
    out = tmp_path / "sel"
    r = run(*npy_args(npy), "--out", out, preexec_fn=_file_size_limit(4096))
    one_line_error(r, "File too large", str(out))
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".sel")]


def test_store_build_past_the_file_size_limit_names_the_file(tmp_path):
    src = tmp_path / "pool.jsonl"
    with gzip.open(ROOT / "data" / "demo" / "pool.jsonl.gz", "rt") as f, open(src, "w") as g:
        g.writelines(itertools.islice(f, 300))
    r = run("pool", "build", src, "--out", tmp_path / "store", "--shard-rows", 100, "-q",
            preexec_fn=_file_size_limit(40_000))
    line = one_line_error(r, "File too large", str(tmp_path / "store"))
    assert "shards" in line


def test_faiss_write_error_names_the_file(tmp_path):
    code = ("import resource, sys, faiss, numpy as np\nfrom tsds import atomic\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))\n"
            "index = faiss.IndexFlatL2(8); index.add(np.ones((100, 8), np.float32))\n"
            "try:\n    atomic.write_index(sys.argv[1], index)\n"
            "except OSError as exc:\n    print(exc.errno, exc.filename)\n")
    target = tmp_path / "x.faiss"
    r = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True)
    assert r.stdout.split() == ["27", str(target)], r.stdout + r.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="no /proc")
def test_unwritable_output_folder_is_one_line_before_any_work(npy):
    """/proc refuses new files and folders even to root."""
    one_line_error(run(*npy_args(npy), "--out", "/proc/tsds-selection"), "/proc", "cannot write")
    one_line_error(run("pool", "build", QUERIES, "--out", "/proc/tsds-store"), "/proc/tsds-store", "cannot write")
    one_line_error(run("sweep", "--pool", ROOT / "no-store", "--queries", QUERIES, "--json", "/proc/sweep.json"),
                   "--json /proc/sweep.json", "cannot write")
