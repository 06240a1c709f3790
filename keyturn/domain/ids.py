"""Credential ids: slash paths of [a-z0-9._-] segments."""

from __future__ import annotations

import re

from keyturn.domain.errors import InvalidId

MAX_ID_LENGTH = 200
_SEGMENT = re.compile(r"[a-z0-9._-]+")
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")


def _shown(value: str) -> str:
    return repr(value if len(value) <= 60 else value[:57] + "...")


def validate_id(value: str) -> str:
    """Return *value* if it is a valid credential id, else raise InvalidId."""
    if not isinstance(value, str) or not value:
        raise InvalidId("invalid credential id: empty")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidId(
            f"invalid credential id {_shown(value)}: {len(value)} characters, "
            f"at most {MAX_ID_LENGTH} allowed"
        )
    for segment in value.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidId(
                f"invalid credential id {_shown(value)}: empty, '.' or '..' segment; "
                "use [a-z0-9._-] segments joined by '/'"
            )
        if not _SEGMENT.fullmatch(segment):
            raise InvalidId(
                f"invalid credential id {_shown(value)}: use only [a-z0-9._-] in segments "
                "joined by '/'"
            )
    return value


def validate_name(value: str, what: str = "name") -> str:
    """Names of tenants, policies, targets and stores: one lower-case segment."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise InvalidId(
            f"invalid {what} {_shown(str(value))}: use 1-63 characters of [a-z0-9._-], "
            "starting with a letter or digit"
        )
    return value
