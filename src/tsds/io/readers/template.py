"""Text templates: ``str.format`` fields with plain names, optional ``[[...]]`` sections, escapes.

A template is literal text with ``{field}`` placeholders (``str.format`` syntax: conversions and
format specs are allowed, attribute, index and positional fields are not, so a template can never
reach into an object). A section ``[[ ... ]]`` is optional: it vanishes, with its literal text, when
any field in it is missing, null, or a blank string in the record, so Alpaca's empty ``input`` leaves
no trace in ``"{instruction}[[\\n\\nInput: {input}]]\\n\\n{output}"``. A field used outside every
section is required (a row without it is a bad row). Sections do not nest; ``[[`` and ``]]`` always
open and close one.

`decode_escapes` turns ``\\n``, ``\\t`` and ``\\\\`` of a template typed on a command line into a
newline, a tab and a backslash (once); the template kept in a store is the decoded one.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Any

from tsds.errors import ParameterError
from tsds.io.readers.limits import MAX_FORMAT_NUMBER

ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}


def decode_escapes(text: str, what: str = "--template") -> str:
    """``text`` with ``\\n``, ``\\t`` and ``\\\\`` decoded once; any other backslash is refused, so a
    template never means something else than it seems."""
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            nxt = text[i + 1:i + 2]
            if not nxt or nxt not in ESCAPES:
                raise ParameterError(f"{what} '{text}': unknown escape '\\{nxt}' "
                                     "(known: \\n, \\t, and \\\\ for a backslash)")
            out.append(ESCAPES[nxt])
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


@dataclass(frozen=True)
class Part:
    """A stretch of a template: ``str.format`` text, its field names, and whether it is optional."""

    text: str
    names: tuple[str, ...]
    optional: bool


def parse_template(template: Any) -> tuple[Part, ...]:
    """The parts of a template, checked (plain field names, bounded widths, balanced sections)."""
    if not isinstance(template, str):
        raise ParameterError(f"template must be a string, got {template!r}")
    parts = []
    for chunk, optional in _sections(template):
        names = _fields(template, chunk)
        if optional and not names:
            raise ParameterError(f"template {template!r}: the section [[{chunk}]] names no field")
        if chunk:
            parts.append(Part(chunk, names, optional))
    if not any(p.names for p in parts):
        raise ParameterError(f"template {template!r} names no field")
    return tuple(parts)


def _sections(template: str) -> list[tuple[str, bool]]:
    pieces = re.split(r"(\[\[|\]\])", template)
    out, inside = [], False
    for piece in pieces:
        if piece == "[[":
            if inside:
                raise ParameterError(f"template {template!r}: sections [[...]] do not nest")
            inside = True
        elif piece == "]]":
            if not inside:
                raise ParameterError(f"template {template!r}: ']]' closes no section")
            inside = False
        else:
            out.append((piece, inside))
    if inside:
        raise ParameterError(f"template {template!r}: a section '[[' is never closed")
    return out


def _fields(template: str, chunk: str) -> tuple[str, ...]:
    try:
        parsed = list(string.Formatter().parse(chunk))
    except ValueError as exc:
        raise ParameterError(f"template {template!r} is not valid: {exc}") from None
    names: list[str] = []
    for _, name, spec, _ in parsed:
        if name is None:
            continue
        if not name or name.isdigit() or "." in name or "[" in name:
            raise ParameterError(
                f"template field {{{name}}} must be a plain field name "
                "(no positional, attribute or index fields)"
            )
        if spec and ("{" in spec):
            raise ParameterError(f"template field {{{name}}} may not nest fields in its format spec")
        if spec and any(int(n) > MAX_FORMAT_NUMBER for n in re.findall(r"\d+", spec)):
            raise ParameterError(f"template {template!r}: the width or precision in {{{name}:{spec}}} "
                                 f"is larger than {MAX_FORMAT_NUMBER}")
        if name not in names:
            names.append(name)
    return tuple(names)


def is_empty(value: Any) -> bool:
    """Whether a value makes an optional section vanish: missing (None) or a blank string."""
    return value is None or (isinstance(value, str) and not value.strip())


def render(parts: tuple[Part, ...], values: dict[str, Any]) -> str:
    """The filled template; ``values`` holds every required field, and the optional ones present
    (None or blank for an empty one)."""
    fmt = string.Formatter()
    out = []
    for part in parts:
        if part.optional and any(is_empty(values.get(n)) for n in part.names):
            continue
        out.append(fmt.vformat(part.text, (), values))
    return "".join(out)
