"""Text in, selected records out: the one-call functions over a pool store, for one target or several."""

from __future__ import annotations

import time

from tsds.config import SelectionConfig
from tsds.io.output import check_output_dir
from tsds.methods import get_method
from tsds.methods.run import run_method, split_options
from tsds.pipeline.multi import MultiSelection, select_multi, write_multi_selection
from tsds.pipeline.select import Selection
from tsds.pipeline.stages import StageLog
from tsds.pipeline.write import Output, write_text_selection

_OUTPUT = ("records_name", "overwrite", "source_field")


def _store(pool):
    from tsds.store import PoolStore

    return pool if isinstance(pool, PoolStore) else PoolStore(pool)


def select_text(pool, queries, *, out, config: SelectionConfig, **options) -> Selection:
    """One call: pool store + query file -> selected records, arrays, manifest and card in ``out``.

    ``options``: ``method`` (tsds, or a baseline: random, knn, dsir, full; see tsds.methods), ``report``
    (also write report.html and figures), ``task_name`` (the target's name in the card and manifest;
    default from the query file's path), the fields of ``tsds.pipeline.write.Output`` (records_name,
    overwrite, source_field), of ``tsds.methods.run.Reading`` (query_spec, embedder, progress) and of
    ``tsds.pipeline.prepare.Preparation`` (exclude, exclude_radius, exclude_spec, keep_zero_rows, ...),
    the same for every method. An unknown option is refused.
    """
    method = options.pop("method", "tsds")
    report = options.pop("report", False)
    task = options.pop("task_name", None)
    output = Output(out, **{k: options.pop(k) for k in _OUTPUT if k in options})
    reading, prep, method_options = split_options(options)
    m = get_method(method, **method_options)
    check_output_dir(out, output.overwrite)
    store = _store(pool)
    stages = reading.stages = reading.stages or StageLog()
    started = time.time()
    selection = run_method(m, store, queries, config, reading=reading, preparation=prep)
    selection.info.update(task_name=task, description=m.description)
    write_text_selection(output, store, selection, selection.info, queries_path=queries, stages=stages)
    selection.timings["total_seconds"] = round(time.time() - started, 3)
    if report:
        from tsds.report import build_report

        build_report(out, store=store)
    return selection


def select_multi_text(pool, targets, *, out, config: SelectionConfig, **options) -> MultiSelection:
    """One call: pool store + several ``path:weight`` targets -> one selection written to ``out``.

    ``options``: as ``select_text`` (method tsds only).
    """
    report = options.pop("report", False)
    output = Output(out, **{k: options.pop(k) for k in _OUTPUT if k in options})
    reading, prep, _ = split_options(options)
    check_output_dir(out, output.overwrite)
    store = _store(pool)
    stages = reading.stages or StageLog()
    started = time.time()
    multi, info = select_multi(store, targets, config, query_spec=reading.query_spec, embedder=reading.embedder,
                               stages=stages, progress=reading.progress, preparation=prep)
    write_multi_selection(output, store, multi, info, stages=stages)
    multi.timings["total_seconds"] = round(time.time() - started, 3)
    if report:
        from tsds.report import build_report

        build_report(out, store=store)
    return multi


__all__ = ["select_multi_text", "select_text"]
