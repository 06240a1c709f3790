"""Durations written as "180d", "7d", "12h", "30m", "45s" or "2w" (and sums like "1d12h")."""

from __future__ import annotations

import re
from datetime import timedelta

from keyturn.domain.errors import PolicyInvalid

_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_PART = re.compile(r"(\d{1,6})([wdhms])")


def parse_duration(text: str, what: str = "duration") -> timedelta:
    """Parse a duration; raise PolicyInvalid with an example when it is malformed (naming
    *what*, never echoing the text: it may come from a request)."""
    value = str(text).strip().lower()
    parts = _PART.findall(value)
    if not value or "".join(n + u for n, u in parts) != value:
        raise PolicyInvalid(
            f'invalid {what}: write a number and a unit (w, d, h, m, s), e.g. "180d" or "12h"'
        )
    return timedelta(seconds=sum(int(n) * _UNITS[u] for n, u in parts))


def format_duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds == 0:
        return "0s"
    out = []
    for unit in ("d", "h", "m", "s"):
        count, seconds = divmod(seconds, _UNITS[unit])
        if count:
            out.append(f"{count}{unit}")
    return "".join(out)
