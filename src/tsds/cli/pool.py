"""`tsds pool ...`: build pool stores (embeddings, index) once, reuse them for every task."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from tsds.cli import _fail_cleanly, _logging, app, out
from tsds.cli import spec_from_options as _spec

pool_app = typer.Typer(help="Build and inspect pool stores (embeddings, index, densities computed once).")
app.add_typer(pool_app, name="pool")


@pool_app.command("build")
@_fail_cleanly
def pool_build(
    files: list[Path] = typer.Argument(..., help="Pool files (jsonl, json, parquet, csv, tsv, txt, or a saved HF dataset)."),
    out_dir: Path = typer.Option(..., "--out", help="Store folder; an existing store is resumed or extended."),
    embedder: str = typer.Option("static", "--embedder", help="static (fast CPU default), minilm, or a local model folder."),
    text_field: str | None = typer.Option(None, "--text-field", help="Field holding the text (default: text)."),
    template: str | None = typer.Option(None, "--template", help="Template over fields, e.g. '{instruction}\\n{output}'."),
    messages_field: str | None = typer.Option(None, "--messages-field", help="Field holding chat messages."),
    on_bad_row: str = typer.Option("fail", "--on-bad-row", help="fail (default) or skip malformed rows."),
    fmt: str | None = typer.Option(None, "--format", help="Force the input format."),
    metric: str = typer.Option("euclidean", help="Metric of the index built with the store."),
    index: str = typer.Option("auto", help="auto, flat, ivf or ivfpq (IVF-PQ shards, exact re-ranking from the stored embeddings)."),
    shard_rows: int = typer.Option(8192, "--shard-rows", help="Rows per embedding shard (the unit of resume)."),
    engine: str = typer.Option("local", "--engine", help="local (this process) or ray (a Ray cluster)."),
    ray_address: str | None = typer.Option(None, "--ray-address",
                                              help="Ray cluster to join (e.g. auto, ray://host:10001); default: start a local one."),
    index_shards: int | None = typer.Option(None, "--index-shards",
                                               help="Build a sharded index with this many shards (ray default: one per worker)."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
    log_json: bool = typer.Option(False, "--log-json", help="A JSON line on stderr per finished shard."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Build the store anew from FILES; the old store "
                                   "is replaced only once the new one is complete."),
    append: bool = typer.Option(False, "--append", help="FILES are new files to add to the store (the "
                                "store's own files are taken from its record, checked unchanged)."),
    source_root: Path | None = typer.Option(None, "--source-root", help="Where the store's files are now, if "
                                            "they moved (found by relative path or name, checked by content)."),
):
    """Embed a pool once into a reusable store (resumable; appends embed only new rows)."""
    import json as _json

    from tsds.api import Pool
    from tsds.engines import make_engine
    from tsds.progress import progress_bar

    from tsds.config import check_choice
    from tsds.store.options import check_build_options
    from tsds.engines import ENGINES
    from tsds.errors import ParameterError

    _logging(quiet, log_json)
    check_choice("--engine", engine, ENGINES)
    if engine == "local" and ray_address:
        raise ParameterError("--ray-address applies to --engine ray only")
    _spec(text_field, template, messages_field)  # checked before any work
    check_build_options(files, out_dir, metric=metric, index_kind=index, shard_rows=shard_rows,
                        on_bad_row=on_bad_row, fmt=fmt, index_shards=index_shards, embedder_spec=embedder,
                        overwrite=overwrite, append=append, source_root=source_root)
    log = logging.getLogger("tsds.stage")
    from tsds.io.readers import estimate_rows

    total = None if quiet else estimate_rows(files, fmt)
    if total is not None and append:           # the store's own rows are counted as they are reused
        from tsds.store import PoolStore

        total += PoolStore(out_dir).n_rows
    runner = make_engine(engine, ray_address)
    try:
        with progress_bar("embedding pool", total, quiet=quiet) as advance:
            store = Pool.build(files, out_dir, embedder=embedder, text_field=text_field, template=template,
                               messages_field=messages_field, on_bad_row=on_bad_row, fmt=fmt, metric=metric,
                               index_kind=index, shard_rows=shard_rows, progress=advance, engine=runner,
                               index_shards=index_shards, overwrite=overwrite, append=append,
                               source_root=None if source_root is None else str(source_root),
                               on_shard=lambda i: log.info(_json.dumps({"event": "shard_done", "shard": i}))).store
    finally:
        runner.close()
    if not quiet:
        m = store.meta
        out.print(f"store {out_dir}: {m['n_rows']} rows, dim {m['dim']}, embedder {m['embedder'].get('model')}; "
                  f"embedded {m['last_build']['embedded_shards']} shard(s), reused {m['last_build']['reused_shards']}; "
                  f"skipped rows {m['skipped_rows']}, truncated texts {m['truncated_texts']}, "
                  f"zero-vector rows {m.get('zero_rows', 0)}", highlight=False)
        if m.get("zero_rows"):
            from tsds.pipeline.eligibility import name_rows

            out.print(f"note: {m['zero_rows']} rows embed to an all-zero vector (no token the embedder knows: "
                      f"emoji, unknown script, over-long word, invisible text); selections leave them out "
                      f"(--keep-zero-rows keeps them); e.g. {'; '.join(name_rows(store, store.zero_rows(), 3))}",
                      highlight=False)


@pool_app.command("info")
@_fail_cleanly
def pool_info(
    store: Path = typer.Argument(..., help="Store folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON object."),
    check: bool = typer.Option(False, "--check", help="Hash every pool file (sha256) to tell whether it changed."),
    source_root: Path | None = typer.Option(None, "--source-root", help="Where the pool files are now, if they moved."),
):
    """What a store holds: rows, files (ok / moved / changed / touched / missing), embedder, text spec,
    indexes, density caches, sizes on disk, skipped / clipped / zero rows. Reads no pool file unless --check."""
    import json as _json

    from tsds.errors import ParameterError
    from tsds.api import Pool

    if source_root is not None and not source_root.is_dir():
        raise ParameterError(f"--source-root {source_root}: not a folder")
    info = Pool.inspect(store, source_root=source_root, check=check)
    if as_json:
        print(_json.dumps(info, indent=2, ensure_ascii=False))
        return
    out.print(_info_text(info), highlight=False, soft_wrap=True)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def _info_text(i: dict) -> str:
    from rich.markup import escape

    e = i["embedder"]
    lines = [f"store {i['store']}: {i['rows']} rows, dim {i['dim']}"
             + ("" if i["complete"] else " (build not finished: run `tsds pool build` again to resume it)"),
             f"embedder: {e.get('spec')} ({e.get('model')})",
             f"text spec: {i['text_spec']}; on bad row: {i['on_bad_row']}; {i['shard_rows']} rows per shard",
             f"files ({len(i['files'])}, source root {i['source_root']}):"]
    for f in i["files"]:
        moved = f"  (recorded {f['recorded_path']})" if f["path"] != f["recorded_path"] else ""
        lines.append(f"  {f['state']:<8} {f['path']}  {f['format']}, {f['rows']} rows, {_size(f['bytes'])}{moved}")
    lines.append("indexes: " + ("; ".join(f"{x['name']} ({x['metric']}, {x['kind']}"
                                          + (f", {x['shards']} shards" if x["shards"] not in (None, 1) else "")
                                          + f", {_size(x['bytes'])})" for x in i["indexes"]) or "none"))
    lines.append("density caches: " + ("; ".join(f"{d['metric']} sigma {d['sigma']:g} ({_size(d['bytes'])})"
                                                 for d in i["densities"]) or "none"))
    b = i["bytes"]
    lines.append(f"on disk: {_size(b['total'])} (shards {_size(b['shards'])}, index {_size(b['index'])}, "
                 f"densities {_size(b['densities'])})")
    lines.append(f"skipped rows {i['skipped_rows']}, clipped texts {i['clipped_texts']}, truncated texts "
                 f"{i['truncated_texts']}, zero-vector rows {i['zero_rows']}")
    if not i["checked"]:
        lines.append("(file states from size and mtime; --check hashes the files)")
    return escape("\n".join(lines))
