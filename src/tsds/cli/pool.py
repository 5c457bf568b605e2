"""`tsds pool ...`: build pool stores (embeddings, index) once, reuse them for every task."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from tsds.cli import _fail_cleanly, _logging, app, out
from tsds.cli import spec_from_options as _spec
from tsds.cli import spec_keywords

pool_app = typer.Typer(help="Build and inspect pool stores (embeddings, index, densities computed once).")
app.add_typer(pool_app, name="pool")


@pool_app.command("build")
@_fail_cleanly
def pool_build(
    files: list[Path] = typer.Argument(..., help="Pool files (jsonl, json, parquet, csv, tsv, txt, or a saved HF dataset)."),
    out_dir: Path = typer.Option(..., "--out", help="Store folder; an existing store is resumed or extended."),
    embedder: str = typer.Option("static", "--embedder", help="static (fast CPU default), minilm, a local model folder, a hub id (org/name[@rev]) cached locally, or gradients[:MODEL][?dim=8192&...] (LESS-style gradient features; README)."),
    text_field: str | None = typer.Option(None, "--text-field", help="Field holding the text (default: text)."),
    template: str | None = typer.Option(None, "--template", help="Template over fields, e.g. '{instruction}\\n{output}': backslash escapes n, t and a doubled backslash are decoded; a double-bracketed section vanishes when a field in it is empty (README: Text of a row)."),
    messages_field: str | None = typer.Option(None, "--messages-field", help="Field holding chat messages."),
    roles: str | None = typer.Option(None, "--roles", help="With --messages-field: roles embedded, comma-separated, or all (default: user,assistant)."),
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
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only errors."),
    log_json: bool = typer.Option(False, "--log-json", help="stderr carries only JSON lines (with a timestamp): one per finished shard, and warnings; no bar."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Build the store anew from FILES; the old store "
                                   "is replaced only once the new one is complete."),
    append: bool = typer.Option(False, "--append", help="FILES are new files to add to the store (the "
                                "store's own files are taken from its record, checked unchanged)."),
    source_root: Path | None = typer.Option(None, "--source-root", help="Where the store's files are now, if "
                                            "they moved (found by relative path or name, checked by content)."),
    densities: str | None = typer.Option(None, "--densities", help="SIGMA[,SIGMA...] or auto: also compute "
                                         "every row's density for these sigmas (selections then compute none)."),
    density_metric: str = typer.Option("cosine", "--density-metric", help="Metric of --densities (cosine, as "
                                       "selections by default, or euclidean)."),
):
    """Embed a pool once into a reusable store (resumable; appends embed only new rows)."""
    import json as _json

    from tsds.api import Pool
    from tsds.engines import make_engine
    from tsds.progress import progress_bar

    from tsds.config import check_choice
    from tsds.engines import ENGINES
    from tsds.errors import ParameterError
    from tsds.io.readers import TextSpec
    from tsds.store.options import check_build_options

    _logging(quiet, log_json)
    check_choice("--engine", engine, ENGINES)
    if engine == "local" and ray_address:
        raise ParameterError("--ray-address applies to --engine ray only")
    spec = _spec(text_field, template, messages_field, roles)  # checked before any work
    sigmas = _sigmas(densities, density_metric) if densities is not None else None
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
            store = Pool.build(files, out_dir, embedder=embedder, **spec_keywords(spec),
                               on_bad_row=on_bad_row, fmt=fmt, metric=metric,
                               index_kind=index, shard_rows=shard_rows, progress=advance, engine=runner,
                               index_shards=index_shards, overwrite=overwrite, append=append,
                               source_root=None if source_root is None else str(source_root),
                               on_shard=lambda i: log.info(_json.dumps({"event": "shard_done", "shard": i}))).store
        if sigmas:
            _densities(Pool(store), sigmas, density_metric, quiet)
    finally:
        runner.close()
    if not quiet:
        m = store.meta
        out.print(f"store {out_dir}: {m['n_rows']} rows, dim {m['dim']}, embedder {m['embedder'].get('model')}; "
                  f"embedded {m['last_build']['embedded_shards']} shard(s), reused {m['last_build']['reused_shards']}; "
                  f"skipped rows {m['skipped_rows']}, clipped texts {m.get('clipped_texts', 0)} (over "
                  f"{spec.max_chars if spec else TextSpec().max_chars} characters), truncated texts {m['truncated_texts']}, "
                  f"zero-vector rows {m.get('zero_rows', 0)}", highlight=False)
        if m.get("zero_rows"):
            from tsds.pipeline.eligibility import name_rows

            out.print(f"note: {m['zero_rows']} rows embed to an all-zero vector (no token the embedder knows: "
                      f"emoji, unknown script, over-long word, invisible text); selections leave them out "
                      f"(--keep-zero-rows keeps them); e.g. {'; '.join(name_rows(store, store.zero_rows(), 3))}",
                      highlight=False)


def _sigmas(text: str, metric: str, flags=("--densities", "--density-metric")) -> list:
    from tsds.config import check_choice
    from tsds.pipeline.densities import parse_sigmas

    check_choice(flags[1], metric, ("cosine", "euclidean"))
    return parse_sigmas(text, flags[0])


def _densities(pool, sigmas: list, metric: str, quiet: bool) -> None:
    from tsds.progress import progress_bar

    for sigma in sigmas:
        with progress_bar(f"densities sigma {sigma}", None, quiet=quiet) as advance:
            done = pool.add_densities(sigma, metric=metric, progress=advance)[0]
        if not quiet:
            out.print(f"densities {done['metric']} sigma {done['sigma']:g}: {done['rows']} rows "
                      f"({done['computed']} computed now, {done['seconds']:.1f} s)", highlight=False)


@pool_app.command("densities")
@_fail_cleanly
def pool_densities(
    store: Path = typer.Argument(..., help="Store folder."),
    sigma: str = typer.Option(..., "--sigma", help="SIGMA[,SIGMA...] or auto: kernel radius of the densities."),
    metric: str = typer.Option("cosine", "--metric", help="cosine (as selections by default) or euclidean."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only errors."),
    log_json: bool = typer.Option(False, "--log-json", help="stderr carries only JSON lines and warnings; no bar."),
):
    """Compute every row's density once (resumable): later selections with that metric and sigma read them."""
    from tsds.api import Pool

    _logging(quiet, log_json)
    sigmas = _sigmas(sigma, metric, ("--sigma", "--metric"))
    _densities(Pool.open(store), sigmas, metric, quiet)


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


def _density_state(d: dict, rows: int) -> str:
    """Whether a density cache holds every row a selection can take (zero rows are never computed)."""
    if d.get("state", "ok") != "ok":
        return f"{d['state']}: not used"
    return "every row" if d["known"] >= rows else f"{d['known']} of {rows} rows"


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
    eligible = i["rows"] - (i["zero_rows"] or 0)
    lines.append("density caches: " + ("; ".join(
        f"{d['metric']} sigma {d['sigma']:g}{'' if d['density'] == 'exact' else ' ' + d['density']} "
        f"({_density_state(d, eligible)}, {_size(d['bytes'])})" for d in i["densities"]) or "none"))
    b = i["bytes"]
    lines.append(f"on disk: {_size(b['total'])} (shards {_size(b['shards'])}, index {_size(b['index'])}, "
                 f"densities {_size(b['densities'])}, pool scale {_size(b.get('scale', 0))})")
    lines.append(f"skipped rows {i['skipped_rows']}, clipped texts {i['clipped_texts']}, truncated texts "
                 f"{i['truncated_texts']}, zero-vector rows {i['zero_rows']}")
    if not i["checked"]:
        lines.append("(file states from size and mtime; --check hashes the files)")
    return escape("\n".join(lines))




@pool_app.command("preview")
@_fail_cleanly
def pool_preview(
    files: list[Path] = typer.Argument(..., help="Pool (or query) files, or a pool store folder (its files and text spec)."),
    text_field: str | None = typer.Option(None, "--text-field", help="Field holding the text (default: text)."),
    template: str | None = typer.Option(None, "--template", help="Template over fields, as for `tsds pool build`."),
    messages_field: str | None = typer.Option(None, "--messages-field", help="Field holding chat messages."),
    roles: str | None = typer.Option(None, "--roles", help="With --messages-field: roles embedded, comma-separated, or all."),
    rows: int = typer.Option(5, "--rows", "-n", help="How many rows to show."),
    fmt: str | None = typer.Option(None, "--format", help="Force the input format."),
    on_bad_row: str = typer.Option("fail", "--on-bad-row", help="fail (default, as a build would) or skip malformed rows."),
    plain: bool = typer.Option(False, "--plain", help="Print each text as it is, under a header line, instead of as a JSON string."),
):
    """Show the exact texts that would be embedded for the first rows: the text spec in normal form, then
    per row its row number and text (a JSON string by default, so newlines and spaces are visible)."""
    import json as _json

    from tsds.config import check_count
    from tsds.errors import ParameterError
    from tsds.io.readers import ReadStats, TextSpec, iter_batches

    check_count("--rows", rows, high=10_000)
    spec = _spec(text_field, template, messages_field, roles)
    paths, formats = list(files), None
    if len(files) == 1 and (files[0] / "store.json").is_file():
        from tsds.store import PoolStore

        if spec is not None:
            raise ParameterError(f"{files[0]} is a pool store: its text spec is used; give no text options")
        store = PoolStore(files[0])
        spec = store.text_spec
        paths = [Path(e["path"]) for e in store.files]
        formats = [e.get("format") for e in store.files]
    spec = spec or TextSpec()
    typer.echo(f"# text spec: {_json.dumps(spec.to_dict(), ensure_ascii=False)}")
    stats, shown = ReadStats(), 0
    for i, path in enumerate(paths):
        fmt_i = formats[i] if formats is not None else fmt
        for batch in iter_batches(path, spec, batch_size=rows, fmt=fmt_i, on_bad_row=on_bad_row, stats=stats):
            for text in batch.texts[: rows - shown]:
                if plain:
                    typer.echo(f"--- row {shown} ({len(text)} chars) ---\n{text}")
                else:
                    typer.echo(f"{shown}\t{_json.dumps(text, ensure_ascii=False)}")
                shown += 1
            break
        if shown >= rows:
            break
    for message in stats.bad_examples:
        typer.echo(f"# skipped: {message}", err=True)
