"""The records file of a selection written on a distributed engine (Ray): read tasks fetch the selected
records from the pool files by location (groups of rows), and one write task writes the file with the
local writer (temporary name, then rename; rows counted and checked), so the file has the same bytes."""

from __future__ import annotations

from functools import partial

from tsds.errors import InputError, TsdsError
from tsds.io.writers import records_summary, write_records


def _fetch(fetch, group) -> tuple[list, str]:
    """(records, "") of one group, or ([], the error's line) when a record is refused (e.g. a pool file
    changed since the build)."""
    try:
        return fetch(group), ""
    except TsdsError as exc:
        return [], str(exc)


def _write(path: str, source_field: str, expected: int | None, fetched: list) -> dict:
    """The records file from every group's records, in order; nothing written after a failed fetch."""
    records = []
    for group_records, error in fetched:
        if error:
            return {"error": error}
        records.extend(group_records)
    try:
        rows = write_records(path, records, expected=expected)
    except TsdsError as exc:
        return {"error": str(exc)}
    return records_summary(records, source_field, rows=rows)


def write_records_on(engine, path, groups: list[dict], fetch, *, source_field: str = "source",
                     expected: int | None = None) -> dict:
    """Fetch each group with ``fetch`` (tsds.pipeline.text.fetch_group, which checks each record against
    the store) in the engine's tasks and write ``path`` in one of them; returns the file's summary."""
    if not groups:
        return records_summary([], source_field, rows=write_records(path, [], expected=expected))
    summary = engine.map_reduce(partial(_fetch, fetch), groups, partial(_write, str(path), source_field, expected))
    if "error" in summary:
        raise InputError(summary["error"])
    return summary
