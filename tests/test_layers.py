"""The import contract: tsds is built in layers, and a module imports only from its own layer or below.

Every import counts, at module level or inside a function (a deferred import is still a dependency), so a
cycle or an upward import fails here, in `make test`. The layers, bottom to top:

    foundation   errors, config, atomic, memory, progress, lazy    (what everything may use)
    core | io    the pure solver and sampling | readers, writers, arrays     (peers: neither imports the other)
    embed | retrieval   embedding backends | FAISS indexes and densities  (peers)
    engines      generic executors (map, stateful map, serve): plain functions in, nothing of tsds above
                 the foundation
    store        the persistent pool store
    pipeline     the stages of one selection (read, embed, index, neighbours, density, solve, sample, write)
    methods      tsds and every baseline behind one signature and one registry
    report       the HTML report and its figures
    api          the Python facade (tsds.Pool, tsds.Selector, tsds.select, tsds.solve)
    evaluation   the finetune-and-evaluate harness
    cli          the command line, a thin layer over the facade
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "tsds"

# (rank, peer group) of each layer: a module may import a layer of lower rank, or its own layer; a layer of the
# same rank in another peer group is off limits (core and io, embed and retrieval are independent peers).
LAYERS: dict[str, tuple[int, str]] = {
    "errors": (0, "foundation"), "config": (0, "foundation"), "atomic": (0, "foundation"),
    "memory": (0, "foundation"), "progress": (0, "foundation"), "lazy": (0, "foundation"), "__init__": (99, "package"),
    "core": (1, "core"), "io": (1, "io"),
    "embed": (2, "embed"), "retrieval": (2, "retrieval"),
    "engines": (3, "engines"),
    "store": (4, "store"),
    "pipeline": (5, "pipeline"),
    "methods": (6, "methods"),
    "report": (7, "report"),
    "api": (8, "api"),
    "evaluation": (9, "evaluation"),
    "cli": (10, "cli"),
}
# engines run plain functions: they may use the foundation and nothing else of tsds
ONLY_FOUNDATION = {"engines"}


def _layer(module: str) -> str:
    """'tsds.store.pool' -> 'store'; 'tsds' (the package's own __init__) -> '__init__'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every tsds import in the file, wherever it stands."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "tsds"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "tsds":
                continue
            if target == "tsds":  # `from tsds import x`: x is a module of the package or a name of its facade
                found += [(node.lineno, f"tsds.{a.name}" if (SRC / a.name).exists() or (SRC / f"{a.name}.py").exists()
                           else "tsds") for a in node.names]
            else:
                found.append((node.lineno, target))
    return found


def _all_modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py"))


def violations() -> list[str]:
    out = []
    for path in _all_modules():
        mod = _module_name(path)
        src_layer = _layer(mod)
        if src_layer not in LAYERS:
            out.append(f"{path.relative_to(SRC.parent)}: module of no layer ({src_layer!r}); add it to LAYERS")
            continue
        rank, group = LAYERS[src_layer]
        for line, target in _imports(path):
            dst_layer = _layer(target)
            if dst_layer == src_layer or dst_layer not in LAYERS:
                continue
            d_rank, d_group = LAYERS[dst_layer]
            if src_layer == "__init__":
                continue  # the package's front door re-exports the facade
            if dst_layer == "__init__":
                out.append(f"{path.relative_to(SRC.parent)}:{line}: imports the package front door `tsds`")
            elif src_layer in ONLY_FOUNDATION and d_rank > 0:
                out.append(f"{path.relative_to(SRC.parent)}:{line}: {src_layer} imports {target} (only the foundation)")
            elif d_rank > rank:
                out.append(f"{path.relative_to(SRC.parent)}:{line}: {src_layer} imports {target} (upward)")
            elif d_rank == rank and d_group != group:
                out.append(f"{path.relative_to(SRC.parent)}:{line}: {src_layer} imports its peer {target}")
    return out


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    names = {_module_name(p) for p in _all_modules()}
    for path in _all_modules():
        mod = _module_name(path)
        for _, target in _imports(path):
            while target not in names and "." in target:  # `from tsds.x.y import name`: the module is tsds.x.y
                target = target.rsplit(".", 1)[0]
            if target != mod and target in names:
                graph.setdefault(mod, set()).add(target)
    return graph


def module_cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), i.e. import cycles between modules."""
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_upward_or_sideways_import():
    found = violations()
    assert not found, f"{len(found)} import(s) break the layers:\n" + "\n".join(found)


def test_no_import_cycle_between_modules():
    cycles = module_cycles()
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_checker_sees_deferred_and_relative_imports(tmp_path):
    code = "def f():\n    from ..store import pool\n    import tsds.cli\n"
    path = SRC / "core" / "_probe_for_the_layer_test.py"
    path.write_text(code)
    try:
        found = [v for v in violations() if "_probe_for_the_layer_test" in v]
    finally:
        path.unlink()
    assert len(found) == 2 and all("upward" in v for v in found)


@pytest.mark.parametrize("limit", [500])
def test_no_source_file_over_the_size_limit(limit):
    big = [f"{p.relative_to(SRC.parent)}: {n} lines" for p in _all_modules()
           if (n := len(p.read_text().splitlines())) > limit]
    assert not big, "files over the limit:\n" + "\n".join(big)


def test_no_function_with_more_than_eight_parameters_outside_the_cli():
    over = []
    for path in _all_modules():
        if _layer(_module_name(path)) == "cli":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs if x.arg not in ("self", "cls")]
                if len(names) > 8:
                    over.append(f"{path.relative_to(SRC.parent)}:{node.lineno} {node.name}: {len(names)} parameters")
    assert not over, "functions with more than 8 parameters:\n" + "\n".join(over)
