"""A JSON array of objects (Alpaca-style lists), loaded whole."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tsds.errors import InputError
from tsds.io.readers.limits import _READ_ERRORS
from tsds.io.readers.lines import Row, _check_surrogates, _json_kind, _one_line, _open_binary, _read_problem
from tsds.io.readers.spec import RowError


def _load_json_array(path: Path) -> list[Any]:
    with _open_binary(path) as fh:
        try:
            data = fh.read()
        except _READ_ERRORS as exc:
            raise InputError(f"{path}:1: {_read_problem(exc)}") from None
    try:
        value = json.loads(data)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}:1: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except (ValueError, RecursionError) as exc:     # an integer of too many digits, nesting too deep
        raise InputError(f"{path}:1: invalid JSON ({_one_line(exc)})") from None
    if not isinstance(value, list):
        raise InputError(f"{path}:1: expected a JSON array of objects, got {_json_kind(value)}")
    # every item is looked at: json.loads of bytes lets even encoded surrogates through ("surrogatepass")
    for index, item in enumerate(value):
        if isinstance(item, dict):
            try:
                _check_surrogates(item)
            except RowError as exc:
                value[index] = _BadItem(str(exc))
    return value


class _BadItem(str):
    """An item of a JSON array that is a bad row for a reason other than its type."""


def _json_item_problem(value: Any) -> str | None:
    if isinstance(value, _BadItem):
        return str(value)
    if not isinstance(value, dict):
        return f"expected a JSON object, got {_json_kind(value)}"
    return None


def _object_or_raise(path: Path, number: int, value: Any) -> dict[str, Any]:
    problem = _json_item_problem(value)
    if problem is not None:
        raise InputError(f"{path}:{number}: {problem}")
    return value


def _rows_json(path: Path) -> Iterator[Row]:
    for index, value in enumerate(_load_json_array(path)):
        problem = _json_item_problem(value)
        if problem is None:
            yield index, index + 1, value, None
        else:
            yield index, index + 1, None, problem
