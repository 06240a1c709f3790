"""Secret references: `env:NAME`, `file:PATH`, `keyturn:ID`. Never literals.

`SecretRef` is the one type of a secret setting, in every plugin's settings model and in the
inventory; `is_reference` is the one test of what a reference is, and `Resolver` turns one
into its value.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator

from keyturn.domain.errors import ConfigInvalid, LiteralSecret, ReferenceUnresolved
from keyturn.domain.ids import validate_id
from keyturn.domain.model import Secret

SCHEMES = ("env:", "file:", "keyturn:")
MAX_SECRET_FILE = 64 * 1024
# Setting names that hold secrets: their values must be references.
SECRET_KEY = re.compile(r"(password|passwd|secret|token|api_?key|private_key|credentials?)$")
_KNOWN_PREFIXES = (
    "AKIA",
    "ASIA",
    "ghp_",
    "gho_",
    "github_pat_",
    "xoxb-",
    "xoxp-",
    "sk_live_",
    "kt_",
    "-----BEGIN",
)


def is_reference(value: object) -> bool:
    """`env:NAME`, `file:PATH` or `keyturn:ID` with something after the scheme."""
    return isinstance(value, str) and value.startswith(SCHEMES) and len(value.split(":", 1)[1]) > 0


def check_reference(value: str) -> str:
    """Refuse anything but a reference; the error never repeats the value."""
    if is_reference(value):
        return value
    if value in SCHEMES:
        raise ConfigInvalid(f"{value!r} names nothing: write env:NAME, file:PATH or keyturn:ID")
    # Not a ValueError: pydantic would copy the input (the secret) into its message.
    raise LiteralSecret()


# A setting that holds a secret, as a reference: `admin_password: SecretRef | None = None`.
SecretRef = Annotated[str, AfterValidator(check_reference)]


def how_to_reference(where: str, key: str) -> str:
    # The variable named after what holds it: `targets.db` + admin_password -> DB_ADMIN_PASSWORD.
    owner = where.rpartition(".")[2] if where != "file" else ""
    env = re.sub(r"[^A-Z0-9]+", "_", f"{owner}_{key}".upper()).strip("_") or "SECRET"
    return (
        f'{where}: {key} holds a literal secret; reference it instead: {key} = "env:{env}" '
        '(or "file:/path/to/secret", "keyturn:other/credential")'
    )


def require_reference(value: object, where: str, key: str) -> str:
    if not is_reference(value):
        raise LiteralSecret(how_to_reference(where, key))
    return str(value)


def looks_like_secret(value: str) -> bool:
    """High-entropy tokens and well-known key prefixes, as secret scanners flag them; in a
    text of several words (a purpose, a tag), each word on its own: "the key is AKIA..."."""
    if any(c.isspace() for c in value):
        return any(_token_like_secret(word.strip(_PUNCTUATION)) for word in value.split())
    return _token_like_secret(value)


_PUNCTUATION = "\"'`()[]{}<>,;:.!?"


def _token_like_secret(value: str) -> bool:
    if is_reference(value) or "://" in value:
        return False
    if value.startswith(_KNOWN_PREFIXES) and len(value) >= 16:
        return True
    if len(value) < 20 or "/" in value:
        return False
    counts = Counter(value)
    entropy = -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())
    classes = sum(any(test(c) for c in value) for test in (str.islower, str.isupper, str.isdigit))
    return entropy >= 4.0 and classes >= 3


def settings_path(base_dir: str | Path, name: str) -> Path:
    """A path from the settings: `~` expanded, a relative one taken from *base_dir* (the
    inventory file's folder)."""
    path = Path(name).expanduser()
    return path if path.is_absolute() else Path(base_dir) / path


class Resolver:
    """Resolves references; `keyturn:` reads another credential's current value."""

    def __init__(
        self, base_dir: Path, keyturn_lookup: Callable[[str], Secret] | None = None
    ) -> None:
        self.base_dir = base_dir
        self.keyturn_lookup = keyturn_lookup

    def __call__(self, ref: str) -> Secret:
        scheme, _, rest = ref.partition(":")
        if scheme == "env":
            if rest not in os.environ:
                raise ReferenceUnresolved(f"{ref}: the environment variable {rest} is not set")
            return Secret(os.environ[rest])
        if scheme == "file":
            return Secret(self._read(rest, ref))
        if scheme == "keyturn":
            if self.keyturn_lookup is None:
                raise ReferenceUnresolved(f"{ref}: keyturn references cannot be used here")
            return self.keyturn_lookup(validate_id(rest))
        raise ReferenceUnresolved(
            f"{ref!r} is not a reference; use env:NAME, file:PATH or keyturn:ID"
        )

    def _read(self, path_text: str, ref: str) -> str:
        path = settings_path(self.base_dir, path_text)
        try:
            if path.stat().st_size > MAX_SECRET_FILE:
                raise ReferenceUnresolved(f"{ref}: file is larger than {MAX_SECRET_FILE} bytes")
            text = path.read_text()
        except OSError as exc:
            raise ReferenceUnresolved(f"{ref}: cannot read {path}: {exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            raise ReferenceUnresolved(f"{ref}: {path} is not UTF-8 text") from exc
        return text.rstrip("\r\n")
