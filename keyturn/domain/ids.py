"""Credential ids: slash paths of [a-z0-9._-] segments.

An error says what is wrong and where, never the value: a secret pasted where an id or a
name goes must not come back in an error message (docs/api.md)."""

from __future__ import annotations

import re

from keyturn.domain.errors import InvalidId

MAX_ID_LENGTH = 200
_SEGMENT = re.compile(r"[a-z0-9._-]+")
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
_ALLOWED = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-")


def _where(value: str, allowed: frozenset[str]) -> str:
    """The first character not in *allowed*, by position (shown when it is not a letter or
    digit, which a secret is mostly made of), or '' when there is none."""
    for i, char in enumerate(value, 1):
        if char in allowed:
            continue
        if char.isalnum():
            return f"a letter or digit outside [a-z0-9] at character {i}"
        if char.isascii() and char.isprintable():
            return f"{char!r} at character {i}"
        return f"character {i} (U+{ord(char):04X})"
    return ""


def validate_id(value: str) -> str:
    """Return *value* if it is a valid credential id, else raise InvalidId."""
    if not isinstance(value, str) or not value:
        raise InvalidId("invalid credential id: empty")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidId(
            f"invalid credential id: {len(value)} characters, at most {MAX_ID_LENGTH} allowed"
        )
    for number, segment in enumerate(value.split("/"), 1):
        if segment in ("", ".", ".."):
            raise InvalidId(
                f"invalid credential id: segment {number} is empty, '.' or '..'; "
                "use [a-z0-9._-] segments joined by '/'"
            )
        if not _SEGMENT.fullmatch(segment):
            raise InvalidId(
                f"invalid credential id: {_where(value, _ALLOWED | {'/'})}; use only "
                "[a-z0-9._-] in segments joined by '/'"
            )
    return value


def validate_name(value: str, what: str = "name") -> str:
    """Names of tenants, policies, targets and stores: one lower-case segment."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        text = str(value)
        if not text:
            problem = "empty"
        elif len(text) > 63:
            problem = f"{len(text)} characters"
        elif text[0] in "._-":
            problem = "it starts with " + repr(text[0])
        else:
            problem = _where(text, _ALLOWED)
        raise InvalidId(
            f"invalid {what}: {problem}; use 1-63 characters of [a-z0-9._-], "
            "starting with a letter or digit"
        )
    return value
