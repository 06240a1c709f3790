"""What text and times keyturn accepts from outside: the API, the inventory file, the CLI.

Text that keyturn stores and shows again must survive every later use of it: JSON responses,
exports, terminals, logs and the drivers of the systems it manages. So a text field refuses

- NUL (C drivers cut the string there: a password with a NUL is not the password set),
- lone surrogates (they cannot be encoded as UTF-8: one stored made every listing fail),
- control characters: C0 and C1 controls and DEL (terminal escapes, forged log lines), and
  line or paragraph separators; multi-line fields (a purpose) keep tab and newline,
- bidirectional overrides and isolates (they make a name read as another one).

A secret value only refuses NUL and lone surrogates: it is never shown, and the target's
password rules say the rest.

Times are bounded to years 1970-9998 (after conversion to UTC), so that nothing downstream
overflows converting or comparing them (year 1 at +14:00 is in year 0 in UTC).
"""

from __future__ import annotations

from datetime import UTC, datetime

from keyturn.domain.errors import UsageError

_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_SEPARATORS = frozenset("\u2028\u2029")
_MULTILINE = frozenset("\t\n")
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)


def _kind(char: str, multiline: bool) -> str | None:
    code = ord(char)
    if code == 0:
        return "a NUL character"
    if 0xD800 <= code <= 0xDFFF:
        return "a lone surrogate (not valid Unicode text)"
    if char in _MULTILINE and multiline:
        return None
    if code < 0x20 or 0x7F <= code <= 0x9F:
        return f"a control character (U+{code:04X})"
    if char in _SEPARATORS:
        return f"a line separator (U+{code:04X})"
    if char in _BIDI:
        return f"a bidirectional control (U+{code:04X})"
    return None


def text_problem(value: str, *, multiline: bool = False) -> str | None:
    """What is wrong with *value* as a text field, or None. Never quotes the value."""
    for char in value:
        if (ord(char) < 0x20 or ord(char) >= 0x7F) and (kind := _kind(char, multiline)):
            return f"contains {kind}"
    return None


def secret_problem(value: str) -> str | None:
    """What is wrong with *value* as a secret value, or None."""
    if "\x00" in value:
        return "contains a NUL character"
    if any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        return "contains a lone surrogate (not valid Unicode text)"
    return None


def check_text(value: str, what: str, *, multiline: bool = False) -> str:
    """*value* if it is acceptable text, else UsageError naming *what* (not the value)."""
    problem = text_problem(value, multiline=multiline)
    if problem:
        raise UsageError(f"{what} {problem}")
    return value


def clean(value: str) -> str:
    """*value* with everything a multi-line text field refuses written as an escape
    (``\\x1b``, ``\\ud800``). For text keyturn records but did not get from a person (a
    server's error message), where refusing it would lose the record, and for stored text
    written before these rules (a lone surrogate in an old row must not break a listing)."""
    if value.isascii() and value.isprintable():  # only 0x20-0x7E: nothing to escape
        return value
    out = []
    for char in value:
        if _kind(char, multiline=True) is None:
            out.append(char)
        elif ord(char) <= 0xFF:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(f"\\u{ord(char):04x}")
    return "".join(out)


def check_moment(value: datetime, what: str) -> datetime:
    """*value* in UTC if it has a time zone and lies in 1970-9998; UsageError otherwise."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise UsageError(f"{what} needs a time zone, e.g. 2026-01-01T00:00:00Z")
    try:
        moment = value.astimezone(UTC)
    except (OverflowError, ValueError) as exc:
        raise UsageError(f"{what} is out of range: use a time between 1970 and 9998") from exc
    if not EARLIEST <= moment < LATEST:
        raise UsageError(f"{what} is out of range: use a time between 1970 and 9998")
    return moment


def parse_moment(text: str, what: str) -> datetime:
    """An ISO 8601 time from a person (CLI flag, query string); naive times are UTC."""
    if text_problem(text) or len(text) > 64:
        raise UsageError(f"{what} is not an ISO time; e.g. 2026-06-01T02:00Z")
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise UsageError(f"{what} is not an ISO time; e.g. 2026-06-01T02:00Z") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return check_moment(moment, what)


def first_error(exc: ValueError) -> str:
    """The first problem of a pydantic ValidationError as `where: what`, never the input:
    its str() repeats the settings it was given (`input_value={...}`), secrets included."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    found = errors(include_input=False, include_url=False)
    first = found[0]
    where = ".".join(str(p) for p in first["loc"])
    message = str(first["msg"]).removeprefix("Value error, ")
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    return f"{where}: {message}{more}" if where else f"{message}{more}"
