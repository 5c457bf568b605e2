"""TextSpec: how one record becomes the text that is embedded (a field, a template, chat messages)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from tsds.errors import ParameterError
from tsds.io.readers.limits import DEFAULT_MAX_CHARS, DEFAULT_TEXT_FIELD
from tsds.io.readers.template import parse_template, render


_SURROGATE = re.compile("[\ud800-\udfff]")


class RowError(ValueError):
    """One row that cannot be used; carries the reason, the caller adds ``path:line``."""


DEFAULT_ROLES = ("user", "assistant")
_KEYS = ("text_field", "template", "messages_field", "roles", "max_chars")


@dataclass(frozen=True)
class TextSpec:
    """How to turn one record into the text that is embedded.

    Exactly one mode may be given: a field name, a template over fields (see
    `tsds.io.readers.template`: ``str.format`` syntax with plain field names only,
    and optional ``[[...]]`` sections that vanish when a field in them is missing
    or empty), or a field holding a list of chat turns ``{"role": ..., "content": ...}``
    rendered as ``role: content`` lines. With none given the field ``"text"`` is used,
    and the spec is the same as ``text_field="text"``.

    ``roles``: in chat mode, the roles whose turns are embedded (default ``user`` and
    ``assistant``: a system prompt shared by every row would dominate every text);
    None embeds every turn. Other turns are still checked. Outside chat mode it is None.

    ``max_chars``: a longer text is clipped to its first ``max_chars`` characters
    (`extract` does it, so the text embedded is always the one it returns).

    `to_dict` is the normal form a store records; `from_dict` reads it back, also from
    stores that recorded fewer keys.
    """

    text_field: str | None = None
    template: str | None = None
    messages_field: str | None = None
    roles: tuple[str, ...] | None = DEFAULT_ROLES
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
        if not given:
            object.__setattr__(self, "text_field", DEFAULT_TEXT_FIELD)
        object.__setattr__(self, "roles", self._checked_roles())
        if self.template is not None:
            parts = parse_template(self.template)
            object.__setattr__(self, "_parts", parts)
            object.__setattr__(self, "_required", tuple(dict.fromkeys(
                n for p in parts if not p.optional for n in p.names)))

    def _checked_roles(self) -> tuple[str, ...] | None:
        roles = self.roles
        if roles is None:
            return None
        if isinstance(roles, str) or not all(isinstance(r, str) and r for r in roles) or not roles:
            raise ParameterError(f"roles must be a list of role names, got {roles!r}")
        roles = tuple(dict.fromkeys(roles))
        if self.messages_field is None:
            if roles != DEFAULT_ROLES:
                raise ParameterError("roles apply to chat messages only (give messages_field)")
            return None
        return roles

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> "TextSpec":
        """The spec a store recorded. Keys it lacks take the values of the version that wrote it:
        ``max_chars`` the default, ``roles`` None (every turn was embedded before roles existed)."""
        spec = dict(spec or {})
        unknown = sorted(set(spec) - set(_KEYS))
        if unknown:
            raise ParameterError(f"text spec {spec} has unknown keys {unknown}; made by a newer tsds?")
        spec.setdefault("roles", None)
        if isinstance(spec["roles"], list):
            spec["roles"] = tuple(spec["roles"])
        return cls(**spec)

    def to_dict(self) -> dict[str, Any]:
        """The normal form recorded in a store: every key, roles as a list (or None)."""
        return {"text_field": self.text_field, "template": self.template,
                "messages_field": self.messages_field,
                "roles": list(self.roles) if self.roles is not None else None, "max_chars": self.max_chars}

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
        return tuple(dict.fromkeys(n for p in parse_template(self.template) for n in p.names))

    def required_fields(self) -> tuple[str, ...]:
        """The template's fields used outside every optional section."""
        return self._required  # type: ignore[attr-defined]

    def extract(self, record: dict[str, Any]) -> str:
        """The text embedded for one record (clipped to ``max_chars``); raises `RowError` when it cannot
        be made. The one function that makes it: every reader's texts are exactly its results."""
        return self.extract_clipped(record)[0]

    def extract_clipped(self, record: dict[str, Any]) -> tuple[str, bool]:
        """`extract`'s text, and whether it was clipped."""
        mode = self.mode
        if mode == "template":
            text = self.fill_template(record)
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

    def fill_template(self, record: dict[str, Any]) -> str:
        """The template filled from ``record`` (before clipping); `RowError` when it cannot be."""
        required = self.required_fields()
        values: dict[str, Any] = {}
        for part in self._parts:  # type: ignore[attr-defined]
            for name in part.names:
                if name in values:
                    continue
                if name not in record:
                    if name in required:
                        raise RowError(f"missing field {name!r} for the template")
                    continue
                value = record[name]
                if value is None and name not in required:
                    continue
                if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                    raise RowError(f"field {name!r} is {_kind(value)}, not a string or number")
                values[name] = value
        try:
            return render(self._parts, values)  # type: ignore[attr-defined]
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
            if self.roles is None or role in self.roles:
                lines.append(f"{role}: {content}")
        if not lines:
            raise RowError(f"field {name!r} has no messages of role {', '.join(self.roles or ())}")
        return "\n".join(lines)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return type(value).__name__


def _surrogate_reason(char: str) -> str:
    return f"lone surrogate \\u{ord(char):04x} in a string (not valid Unicode)"
