"""The commands of README.md and docs/*.md run for real, so that the documentation cannot go stale.

Every fenced block that is shell (unlabelled, sh, bash, console, shell) is read, and each of its lines that
starts with a known program (PROGRAMS) is a documented command. The ``tsds`` commands run as the ``tsds``
program does (``python -m tsds.cli``), in one temporary folder, in the order the docs give them, on real
data: the files they name are made there from the bundled demo data (FILES), budgets above 40 become 40
(the pool has 1,000 rows), and one store, built by the README's own ``tsds pool build``, serves every later
command. The few tsds commands that cannot run here are listed by their exact text, with the reason, in
SKIPPED, and installing and setting up (make, pip, virtual environments) by program in NOT_RUN; the
subcommands and option names of every tsds command are checked against the real CLI, as are the ``tsds ...``
commands and the bare options written in backticks in the prose, every ``tsds`` subcommand the docs name
gets its ``--help`` run, and make targets, pip extras and repository paths named must exist.
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_BLOCKS = {"", "sh", "bash", "console", "shell"}
REPO_DIRS = ("data", "examples", "benchmarks", "scripts")
"""Linked into the folder the commands run in, so that repository paths in the docs resolve (or fail)."""

MADE_BY_RUNS = {"benchmarks/work/": "the benchmarks' scratch folder (ignored by git), made when they run"}
"""Paths the docs name that are not in the repository until something writes them."""

POOL_ROWS, MORE_ROWS, MAX_SIZE = 1000, 200, 40

FILES = {
    "pool.jsonl": f"the first {POOL_ROWS} rows of data/demo/pool.jsonl.gz",
    "more.jsonl": f"the {MORE_ROWS} rows after them",
    "task.jsonl": "data/demo/tasks/food/queries.jsonl",
    "a.jsonl": "data/demo/tasks/food/queries.jsonl",
    "b.jsonl": "data/demo/tasks/zoology/queries.jsonl",
    "eval.jsonl": "the first 50 rows of data/demo/tasks/food/heldout.jsonl.gz",
    "X.npy": "pool.jsonl embedded by the static embedder",
    "Q.npy": "task.jsonl embedded by the static embedder",
    "config.yaml": "the authors' config naming X.npy and Q.npy (sample_size 40, output_folder sel-config/)",
}
"""What the file names of the docs are in the folder the commands run in."""

WORDS = {"store": "pool.store", "/new/place": "new/place"}
"""Whole words of the documented commands replaced before they run: docs/report.md calls the README's store
``store``; the README's moved pool is put in ``new/place`` of the temporary folder."""

COMPLETIONS = {
    "tsds select --pool pool.store --source-root /new/place ...": "--queries task.jsonl --size 1000 --out moved/",
}
"""What a documented ``...`` stands for. For this command the pool files are moved to new/place first (and
back after it), so that it shows that a moved pool is found."""

NEEDS = {
    "tsds compare sel/ sel-knn/ --out cmp/":
        "tsds select --pool pool.store --queries task.jsonl --size 1000 --out sel-knn/ --method knn",
}
"""Commands reading what a later documented command writes: that command (itself documented) runs first."""

SKIPPED = {
    "tsds pool build pool.jsonl --out pool.store --engine ray --index-shards 8":
        "starts a Ray cluster (seconds and a GiB); tests/test_ray.py builds with the Ray engine on a real local one",
    "tsds select --pool pool.store --queries task.jsonl --size 1000 --out sel/ --engine ray":
        "starts a Ray cluster; tests/test_ray.py selects with the Ray engine on a real local one",
}
"""Documented tsds and python commands that do not run here, each with the reason (their subcommands and
options are still checked)."""

NOT_RUN = {
    "make": "creates .venv and installs the packages (make demo; make test is the whole suite, this file "
            "included); every target named must exist in the Makefile",
    "pip": "installs packages; every extra named must exist in pyproject.toml",
    "uv": "installs packages; every extra named must exist in pyproject.toml",
    "python -m venv": "creates a virtual environment", "python3 -m venv": "creates a virtual environment",
    "python -m pip": "installs packages", "python3 -m pip": "installs packages",
    "source": "activates a virtual environment", ".": "activates a virtual environment",
    "cd": "changes folder", "export": "sets a variable", "git": "fetches the repository",
    "hf": "downloads a model (nothing is downloaded here)", "flock": "runs a benchmark under a lock",
}
"""Commands about installing and setting up, by program: never run here."""

PROGRAMS = {"tsds", "python", "python3", *(k.split()[0] for k in NOT_RUN)}
"""First words that make a line of a shell block a command. In an unlabelled block any other line is not a
command (a listing, say); in a block labelled as shell, or after a ``$`` prompt, it is an error."""


def not_run(command) -> str | None:
    """Why a documented command is not run here (SKIPPED by its text, NOT_RUN by its program), or None."""
    return SKIPPED.get(command.text) or NOT_RUN.get(" ".join(command.words[:3])) or \
        (NOT_RUN.get(command.words[0]) if command.words[0] not in ("python", "python3") else None)


@dataclass(frozen=True)
class Command:
    doc: str
    line: int
    words: tuple
    comment: str = ""

    @property
    def text(self) -> str:
        return " ".join(self.words)

    def where(self) -> str:
        return f"{self.doc}:{self.line}: {self.text}"


def _strip_fences(text: str) -> str:
    return re.sub(r"^(`{3,}).*?^\1[ \t]*$", "", text, flags=re.M | re.S)


def documented_commands() -> tuple[list[Command], list[str]]:
    """The commands of the shell blocks of the docs, in order, and the lines that look like commands of
    unknown programs."""
    commands, unknown = [], []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        doc = path.relative_to(ROOT).as_posix()
        for block in re.finditer(r"^(`{3,})([\w-]*)[^\n]*\n(.*?)^\1[ \t]*$", text, flags=re.M | re.S):
            lang = block.group(2).lower()
            if lang not in SHELL_BLOCKS:
                continue
            first = text.count("\n", 0, block.start(3)) + 1
            lines = block.group(3).split("\n")
            i = 0
            while i < len(lines):
                number, line = first + i, lines[i].strip()
                while line.endswith("\\") and i + 1 < len(lines):
                    i += 1
                    line = line[:-1] + " " + lines[i].strip()
                i += 1
                prompted = line.startswith("$ ")
                words = shlex.split(line[2:] if prompted else line, comments=True)
                comment = _comment(line)
                for part in _split_and(words):
                    if part and part[0] in PROGRAMS:
                        commands.append(Command(doc, number, tuple(part), comment))
                    elif part and (prompted or lang):
                        unknown.append(f"{doc}:{number}: {' '.join(part)}")
    return commands, unknown


def _comment(line: str) -> str:
    """What follows the first ``#`` that starts a shell comment (outside quotes, after a blank)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[i + 1:].strip()
    return ""


def _split_and(words: list[str]) -> list[list[str]]:
    parts, part = [], []
    for w in words:
        if w in ("&&", ";"):
            parts.append(part)
            part = []
        else:
            part.append(w)
    return [*parts, part]


def prose_spans() -> list[tuple[str, str]]:
    """(doc, text) of every inline code span outside the fenced blocks."""
    spans = []
    for path in DOCS:
        if path.name == "api.md":          # generated from the docstrings (tests/test_docs.py)
            continue
        text = _strip_fences(path.read_text(encoding="utf-8"))
        spans += [(path.relative_to(ROOT).as_posix(), " ".join(m.group(1).split()))
                  for m in re.finditer(r"`([^`]+)`", text)]
    return spans


def prose_tsds_commands() -> list[Command]:
    return [Command(doc, 0, tuple(_words(span))) for doc, span in prose_spans() if span.startswith("tsds ")]


def _words(span: str) -> list[str]:
    try:
        return shlex.split(span)
    except ValueError:
        return span.split()


# --- the real CLI --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli():
    import typer

    from tsds.cli import app

    return typer.main.get_command(app)


def resolve(cli, words) -> tuple[list[str], object, list[str]]:
    """(subcommand path, click command, the remaining words) of ``tsds WORDS...``."""
    cmd, path, rest = cli, [], list(words[1:])
    while rest and hasattr(cmd, "commands") and rest[0] in cmd.commands:
        cmd = cmd.commands[rest[0]]
        path.append(rest.pop(0))
    return path, cmd, rest


def option_names(cmd) -> set[str]:
    return {o for p in cmd.params for o in (*p.opts, *p.secondary_opts) if o.startswith("-")} | {"--help"}


def option_problems(cli, command: Command) -> list[str]:
    path, cmd, rest = resolve(cli, command.words)
    if hasattr(cmd, "commands") and not (rest and rest[0].startswith("-")):    # tsds --version is the group's
        return [f"{command.where()}: no such subcommand {' '.join(['tsds', *path, *rest[:1]])!r}"]
    known = option_names(cmd)
    noted = re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", command.comment)   # "# --json for machines"
    used = {w.strip("[]").split("=")[0] for w in rest if w.strip("[]").startswith("-")} | set(noted)
    return [f"{command.where()}: {' '.join(['tsds', *path])} has no option {o}"
            for o in sorted(used - known) if not re.fullmatch(r"-\d.*", o)]


def all_options(cli) -> set[str]:
    names, todo = set(), [cli]
    while todo:
        cmd = todo.pop()
        names |= option_names(cmd)
        todo += list(getattr(cmd, "commands", {}).values())
    return names


def script_options() -> set[str]:
    """Options the benchmark and helper scripts define (named in the docs next to their script)."""
    found = set()
    for folder in ("benchmarks", "scripts"):
        for script in (ROOT / folder).glob("*.py"):
            found |= set(re.findall(r"""["'](--[a-z][\w-]*)["']""", script.read_text(encoding="utf-8")))
    return found


# --- what is checked without running -------------------------------------------------------------------


def test_the_docs_commands_are_found_and_every_exception_is_listed():
    commands, unknown = documented_commands()
    assert not unknown, "lines of shell blocks whose program this test does not know (add it to PROGRAMS " \
                        "and say how it is checked):\n" + "\n".join(unknown)
    texts = {c.text for c in commands}
    assert sum(c.words[0] == "tsds" for c in commands) >= 20
    for table in (SKIPPED, COMPLETIONS, NEEDS):
        stale = [t for t in table if t not in texts]
        assert not stale, f"no longer in the docs (remove from this test's table): {stale}"
    assert all(n in texts for n in NEEDS.values())
    placeholders = [c.where() for c in commands if "..." in c.words and c.text not in COMPLETIONS]
    assert not placeholders, f"documented commands with a '...' this test cannot complete: {placeholders}"


def test_documented_subcommands_and_options_exist(cli):
    commands = [c for c in documented_commands()[0] if c.words[0] == "tsds"] + prose_tsds_commands()
    problems = [p for c in commands for p in option_problems(cli, c)]
    assert not problems, "\n".join(problems)


def test_every_documented_subcommand_has_help(cli):
    from typer.testing import CliRunner

    from tsds.cli import app

    commands = [c for c in documented_commands()[0] if c.words[0] == "tsds"] + prose_tsds_commands()
    paths = {tuple(resolve(cli, c.words)[0]) for c in commands}
    assert {("select",), ("pool", "build"), ("pool", "verify"), ("eval",), ("compare",)} <= paths
    for path in sorted(paths):
        res = CliRunner().invoke(app, [*path, "--help"])
        assert res.exit_code == 0 and "Usage" in res.output, (path, res.output)


def test_bare_options_in_the_prose_exist(cli):
    """A span such as `--index-storage memory` names an option of some tsds command (or, next to its
    script, of a benchmark)."""
    known = all_options(cli) | script_options()
    bad = [f"{doc}: `{span}`" for doc, span in prose_spans() if re.match(r"-{1,2}[A-Za-z]", span)
           for w in _words(span) if re.fullmatch(r"-{1,2}[A-Za-z][\w-]*", w.strip("[]")) and w.strip("[]") not in known]
    assert not bad, "options named in the docs that no command has:\n" + "\n".join(bad)


def test_scripts_and_repository_paths_named_in_the_docs_exist():
    named = [(doc, w) for doc, span in prose_spans() for w in _words(span)
             if re.match(rf"({'|'.join((*REPO_DIRS, 'src', 'docs', 'tests'))})/", w)]
    named += [(c.doc, c.words[1]) for c in documented_commands()[0] if c.words[0] in ("python", "python3")
              and len(c.words) > 1 and not c.words[1].startswith("-")]
    assert len(named) > 10
    missing = [f"{doc}: {p}" for doc, p in named if not p.startswith(tuple(MADE_BY_RUNS))
               and not any(ROOT.glob(p.split("::")[0].rstrip("/")))]
    assert not missing, "paths named in the docs that are not in the repository:\n" + "\n".join(missing)


def test_make_targets_and_pip_extras_exist():
    commands = documented_commands()[0]
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([\w.-]+):", makefile, flags=re.M))
    missing = [c.where() for c in commands if c.words[0] == "make" and not set(c.words[1:]) <= targets]
    assert any(c.words[0] == "make" for c in commands)
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"].get("optional-dependencies", {}))
    for c in commands:
        if "install" in c.words:
            for w in c.words:
                m = re.fullmatch(r"[\w.-]*\[([\w,-]+)\]", w.split("/")[-1])
                if m and not set(m.group(1).split(",")) <= extras:
                    missing.append(c.where())
    assert not missing, "\n".join(missing)




# --- running them ----------------------------------------------------------------------------------------


def _write_lines(path: Path, lines) -> None:
    path.write_text("".join(lines), encoding="utf-8")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, static_embedder):
    """The folder the commands run in, holding the files of FILES and links to the repository's folders."""
    d = tmp_path_factory.mktemp("docs")
    demo = ROOT / "data" / "demo"
    with gzip.open(demo / "pool.jsonl.gz", "rt", encoding="utf-8") as f:
        rows = list(itertools.islice(f, POOL_ROWS + MORE_ROWS))
    _write_lines(d / "pool.jsonl", rows[:POOL_ROWS])
    _write_lines(d / "more.jsonl", rows[POOL_ROWS:])
    shutil.copy(demo / "tasks" / "food" / "queries.jsonl", d / "task.jsonl")
    shutil.copy(demo / "tasks" / "food" / "queries.jsonl", d / "a.jsonl")
    shutil.copy(demo / "tasks" / "zoology" / "queries.jsonl", d / "b.jsonl")
    with gzip.open(demo / "tasks" / "food" / "heldout.jsonl.gz", "rt", encoding="utf-8") as f:
        _write_lines(d / "eval.jsonl", itertools.islice(f, 50))
    texts = [json.loads(r)["text"] for r in rows[:POOL_ROWS]]
    queries = [json.loads(r)["text"] for r in (d / "task.jsonl").read_text(encoding="utf-8").splitlines()]
    np.save(d / "X.npy", np.asarray(static_embedder.embed(texts), dtype=np.float32))
    np.save(d / "Q.npy", np.asarray(static_embedder.embed(queries), dtype=np.float32))
    (d / "config.yaml").write_text("query_embedding_path: Q.npy\ncandidate_embedding_path: X.npy\n"
                                   f"output_folder: sel-config\nsample_size: {MAX_SIZE}\n"
                                   "alpha: 0.5\nC: 5\nsigma: 0.75\nmax_K: 64\n", encoding="utf-8")
    for name in REPO_DIRS:
        (d / name).symlink_to(ROOT / name, target_is_directory=True)
    assert {p.name for p in d.iterdir()} >= set(FILES)
    return d


def runnable(command: Command) -> list[str]:
    """The documented words with WORDS, COMPLETIONS and the scaled budget applied."""
    words = [WORDS.get(w, w) for w in command.words]
    if command.text in COMPLETIONS:
        i = words.index("...")
        words[i:i + 1] = shlex.split(COMPLETIONS[command.text])
    for i, w in enumerate(words[:-1]):
        if w == "--size" and int(words[i + 1]) > MAX_SIZE:
            words[i + 1] = str(MAX_SIZE)
    return words


def _option(words, name):
    return words[words.index(name) + 1] if name in words else None


def _rows(path: Path) -> int:
    with (gzip.open if path.name.endswith(".gz") else open)(path, "rb") as f:
        return sum(1 for _ in f)


def run_tsds(d: Path, command: Command, built: dict) -> None:
    """Run one documented tsds command in ``d`` and check what it wrote."""
    words = runnable(command)
    out = _option(words, "--out")
    if out and words[1] in ("select", "compare") and (d / out).exists():
        shutil.rmtree(d / out)            # a later example writing to an earlier one's folder replaces it
    moved = []
    if "--source-root" in words:
        place = d / _option(words, "--source-root")
        place.mkdir(parents=True, exist_ok=True)
        for name in ("pool.jsonl", "more.jsonl"):
            (d / name).rename(place / name)
            moved.append(name)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "COLUMNS": "120"}
    try:
        res = subprocess.run([sys.executable, "-m", "tsds.cli", *words[1:]], cwd=d, env=env, capture_output=True,
                             text=True, timeout=300)
    finally:
        for name in moved:
            (place / name).rename(d / name)
    assert res.returncode == 0, f"{command.where()}\nran: {shlex.join(words)}\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    assert "Traceback" not in res.stderr, f"{command.where()}\n{res.stderr[-3000:]}"
    _check_written(d, command, words, res.stdout, built)


def _check_written(d: Path, command: Command, words, stdout: str, built: dict) -> None:
    where, out = command.where(), _option(words, "--out")
    if words[1:3] == ["pool", "build"]:
        import typer

        from tsds.cli import app

        build = typer.main.get_command(app).commands["pool"].commands["build"]
        files = build.make_context("build", list(words[3:]), resilient_parsing=True).params["files"]
        rows = sum(_rows(d / f) for f in files) + (built.get(out, 0) if "--append" in words else 0)
        meta = json.loads((d / out / "store.json").read_text(encoding="utf-8"))
        assert meta["complete"] and meta["n_rows"] == rows, (where, meta["n_rows"], rows)
        built[out] = rows
    elif words[1] == "select":
        out = out or "sel-config"
        size = int(_option(words, "--size") or MAX_SIZE)
        picked = np.load(d / out / "selected_indices.npy", allow_pickle=False)
        assert 0 < len(np.unique(picked)) <= size and (d / out / "manifest.json").exists(), where
        if "--pool" in words and not {"--records", "--with-replacement", "--paper"} & set(words):
            records = d / out / "selected.jsonl"
            assert _rows(records) == size, (where, _rows(records))   # n distinct draws (the default)
    elif words[1] == "report":
        assert (d / words[2] / "report.html").stat().st_size > 0, where
    elif words[1] == "compare":
        assert (d / out / "compare.html").stat().st_size > 0, where
    else:                                   # preview, info, verify, sweep, eval: what they print
        assert stdout.strip(), where


def test_the_documented_commands_run(workdir):
    commands, _ = documented_commands()
    by_text = {c.text: c for c in commands}
    built: dict = {}
    ran = set()
    for command in commands:
        if not_run(command):
            continue
        if command.words[0] == "tsds":
            need = NEEDS.get(command.text)
            if need is not None and need not in ran:
                run_tsds(workdir, by_text[need], built)
                ran.add(need)
            run_tsds(workdir, command, built)
            ran.add(command.text)
        elif command.words[1:2] and command.words[1].startswith("examples/"):
            res = subprocess.run([sys.executable, *command.words[1:]], cwd=workdir, capture_output=True, text=True,
                                 env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, timeout=300)
            assert res.returncode == 0, f"{command.where()}\n{res.stderr[-3000:]}"
            ran.add(command.text)
        else:
            pytest.fail(f"{command.where()}: not run and not in SKIPPED")
    assert len(ran) >= 20


PYTHON_PRELUDE = """
import numpy as np
X, Q = np.load("X.npy"), np.load("Q.npy")
D = np.sort(np.linalg.norm(Q[:, None, :] - X[None, :, :], axis=2), axis=1)[:, :64]
rho = np.ones(D.shape)
"""
"""The names the README's Python block uses without defining: the embeddings of FILES, and neighbour lists
with densities of 1 for ``tsds.solve``."""


def test_the_readme_python_block_runs(workdir, tmp_path):
    """The README's Python block, in a folder of its own holding the files it names, with sizes above 40
    scaled down as for the commands."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```python\n(.*?)^```", text, flags=re.M | re.S)
    assert len(blocks) == 1
    code = re.sub(r"size=(\d+)", lambda m: f"size={min(int(m.group(1)), MAX_SIZE)}", blocks[0])
    for name in ("pool.jsonl", "task.jsonl", "X.npy", "Q.npy"):
        shutil.copy(workdir / name, tmp_path / name)
    (tmp_path / "readme_block.py").write_text(PYTHON_PRELUDE + code, encoding="utf-8")
    res = subprocess.run([sys.executable, "readme_block.py"], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    store = json.loads((tmp_path / "pool.store" / "store.json").read_text(encoding="utf-8"))
    assert store["n_rows"] == POOL_ROWS, "Pool.build did not read pool.jsonl as a file"
    assert _rows(tmp_path / "selection" / "selected.jsonl") == MAX_SIZE
    assert (tmp_path / "selection" / "report.html").stat().st_size > 0
