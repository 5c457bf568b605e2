"""TextSpec: how one record becomes the text that is embedded (a field, a template, chat messages)."""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Any

from tsds.errors import ParameterError
from tsds.io.readers.limits import DEFAULT_MAX_CHARS, DEFAULT_TEXT_FIELD, MAX_FORMAT_NUMBER


_SURROGATE = re.compile("[\ud800-\udfff]")


class RowError(ValueError):
    """One row that cannot be used; carries the reason, the caller adds ``path:line``."""


@dataclass(frozen=True)
class TextSpec:
    """How to turn one record into the text that is embedded.

    Exactly one mode may be given: a field name, a template over fields
    (``str.format`` syntax with plain field names only), or a field holding a
    list of chat turns ``{"role": ..., "content": ...}`` rendered as
    ``role: content`` lines. With none given the field ``"text"`` is used.

    ``max_chars``: a longer text is clipped to its first ``max_chars`` characters
    (`extract` does it, so the text embedded is always the one it returns).
    """

    text_field: str | None = None
    template: str | None = None
    messages_field: str | None = None
    max_chars: int = DEFAULT_MAX_CHARS

    def __post_init__(self) -> None:
        given = [
            name
            for name, value in (
                ("text_field", self.text_field),
                ("template", self.template),
                ("messages_field", self.messages_field),
            )
            if value is not None
        ]
        if len(given) > 1:
            raise ParameterError(
                f"give only one of text_field, template, messages_field (got {', '.join(given)})"
            )
        for name in ("text_field", "messages_field"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ParameterError(f"{name} must be a non-empty string, got {value!r}")
        if type(self.max_chars) is not int or self.max_chars < 1:
            raise ParameterError(f"max_chars must be a positive integer, got {self.max_chars!r}")
        if self.template is not None:
            object.__setattr__(self, "_fields", self.template_fields())

    @property
    def mode(self) -> str:
        """``"field"``, ``"template"`` or ``"messages"``."""
        if self.template is not None:
            return "template"
        if self.messages_field is not None:
            return "messages"
        return "field"

    def template_fields(self) -> tuple[str, ...]:
        """The field names a template refers to, in order of first use."""
        if not isinstance(self.template, str):
            raise ParameterError(f"template must be a string, got {self.template!r}")
        try:
            parsed = list(string.Formatter().parse(self.template))
        except ValueError as exc:
            raise ParameterError(f"template {self.template!r} is not valid: {exc}") from None
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
                raise ParameterError(f"template {self.template!r}: the width or precision in {{{name}:{spec}}} "
                                     f"is larger than {MAX_FORMAT_NUMBER}")
            if name not in names:
                names.append(name)
        if not names:
            raise ParameterError(f"template {self.template!r} names no field")
        return tuple(names)

    def extract(self, record: dict[str, Any]) -> str:
        """The text embedded for one record (clipped to ``max_chars``); raises `RowError` when it cannot
        be made. The one function that makes it: every reader's texts are exactly its results."""
        return self.extract_clipped(record)[0]

    def extract_clipped(self, record: dict[str, Any]) -> tuple[str, bool]:
        """`extract`'s text, and whether it was clipped."""
        mode = self.mode
        if mode == "template":
            text = self._from_template(record)
        elif mode == "messages":
            text = self._from_messages(record)
        else:
            name = self.text_field or DEFAULT_TEXT_FIELD
            if name not in record:
                raise RowError(f"missing field {name!r}")
            text = record[name]
            if not isinstance(text, str):
                raise RowError(f"field {name!r} is {_kind(text)}, not a string")
        clipped = len(text) > self.max_chars
        if clipped:
            text = self.clip(text)
        if not text.strip():
            raise RowError("empty text")
        match = _SURROGATE.search(text)
        if match:
            raise RowError(_surrogate_reason(match.group()))
        return text, clipped

    def clip(self, text: str) -> str:
        """The clipping rule of `extract`: the first ``max_chars`` characters."""
        return text[: self.max_chars]

    def _from_template(self, record: dict[str, Any]) -> str:
        values: dict[str, Any] = {}
        for name in self._fields:  # type: ignore[attr-defined]
            if name not in record:
                raise RowError(f"missing field {name!r} for the template")
            value = record[name]
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise RowError(f"field {name!r} is {_kind(value)}, not a string or number")
            values[name] = value
        try:
            return string.Formatter().vformat(self.template or "", (), values)
        except (ValueError, TypeError, OverflowError) as exc:
            raise RowError(f"template cannot be filled: {exc}") from None

    def _from_messages(self, record: dict[str, Any]) -> str:
        name = self.messages_field or ""
        if name not in record:
            raise RowError(f"missing field {name!r}")
        turns = record[name]
        if not isinstance(turns, list):
            raise RowError(f"field {name!r} is {_kind(turns)}, not a list of messages")
        if not turns:
            raise RowError(f"field {name!r} has no messages")
        lines = []
        for i, turn in enumerate(turns):
            if not isinstance(turn, dict):
                raise RowError(f"message {i} in {name!r} is {_kind(turn)}, not an object")
            role, content = turn.get("role"), turn.get("content")
            if not isinstance(role, str) or not role:
                raise RowError(f"message {i} in {name!r} has no string 'role'")
            if not isinstance(content, str):
                raise RowError(f"message {i} in {name!r} has no string 'content'")
            lines.append(f"{role}: {content}")
        return "\n".join(lines)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return type(value).__name__


def _surrogate_reason(char: str) -> str:
    return f"lone surrogate \\u{ord(char):04x} in a string (not valid Unicode)"
