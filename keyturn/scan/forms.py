"""The shapes a value takes when someone copies it into a file.

Each form is the exact byte string that appears in the file: raw, percent-encoded (in a URL,
its query or its userinfo), JSON/backslash-escaped, hex, and base64 (standard and URL-safe).
Base64 is taken at each of the three byte alignments and cut to the characters that depend
on the value alone, so a value is found inside a larger base64 blob too: an HTTP Basic
``Authorization`` header (``user:password``), an SMTP ``AUTH PLAIN`` line, a base64'd config
file or Kubernetes secret.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from urllib.parse import quote, quote_plus

# RFC 3986 sub-delims: kept as they are in a URL's userinfo; the rest is percent-encoded.
_USERINFO_SAFE = "!$&'()*+,;="
_PERCENT = re.compile(r"%[0-9A-F]{2}")


def _base64_cores(raw: bytes, encode: Callable[[bytes], bytes]) -> list[bytes]:
    """The characters of encode(prefix + raw + suffix) that depend on raw alone, for a
    prefix of 0, 1 and 2 bytes (the three ways raw can sit in a base64 stream)."""
    cores = []
    for shift in range(3):
        encoded = encode(b"\0" * shift + raw)
        first = -(-8 * shift // 6)  # first character with no prefix bit in it
        last = 8 * (shift + len(raw)) // 6  # characters made of raw's bits only
        cores.append(encoded[first:last])
    return cores


def encodings(value: str) -> list[tuple[str, bytes]]:
    """Every form of *value*, each once, named by its encoding, raw first."""
    raw = value.encode()
    candidates: list[tuple[str, bytes]] = [
        ("raw", raw),
        ("url-encoded", quote(value, safe="").encode()),
        ("url-encoded", _PERCENT.sub(lambda m: m.group().lower(), quote(value, safe="")).encode()),
        ("form-encoded", quote_plus(value, safe="").encode()),
        ("url-userinfo", quote(value, safe=_USERINFO_SAFE).encode()),
        ("escaped", json.dumps(value)[1:-1].encode()),
        ("hex", raw.hex().encode()),
        ("hex", raw.hex().upper().encode()),
    ]
    candidates += [("base64", core) for core in _base64_cores(raw, base64.b64encode)]
    candidates += [("base64url", core) for core in _base64_cores(raw, base64.urlsafe_b64encode)]
    seen: set[bytes] = set()
    out = []
    for name, form in candidates:
        if form and form not in seen:
            seen.add(form)
            out.append((name, form))
    return out
