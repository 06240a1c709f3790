"""MailU's password check, so that keyturn can tell from the hash MailU reports whether MailU
accepts a value, without a login (a refused login counts against MailU's rate limit).

It follows ``User.check_password`` of MailU's admin (``core/admin/mailu/models.py``, releases
1.9 to 2024.06): an empty password is refused; the ``{SCHEME}`` prefixes older MailU wrote
(``{PBKDF2}``, ``{BLF-CRYPT}``, ``{SHA512-CRYPT}``, ``{SHA256-CRYPT}``, ``{MD5-CRYPT}``,
``{CRYPT}``) are stripped; the rest goes to a passlib ``CryptContext`` made of every crypt
handler passlib registers except ``scrypt`` and the plaintext ones, which picks the first
handler that claims the hash. New passwords are ``bcrypt_sha256``
(``$bcrypt-sha256$v=2,t=2b,r=12$...``); a legacy hash is replaced by one on the user's next
successful login.

A hash keyturn cannot check raises :class:`Uncheckable`, which says why and what would make it
checkable; the caller logs in over SMTP instead when it can. No message carries the hash
beyond its scheme label (a ``{PLAIN}`` hash *is* the password).
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from keyturn.domain.errors import PluginMissing
from keyturn.domain.model import Secret

__all__ = ["LEGACY_PREFIXES", "Uncheckable", "accepts", "scheme_label"]

LEGACY_PREFIXES = (
    "{PBKDF2}",
    "{BLF-CRYPT}",
    "{SHA512-CRYPT}",
    "{SHA256-CRYPT}",
    "{MD5-CRYPT}",
    "{CRYPT}",
)
# bcrypt 4 (MailU pins 4.1.3) truncates a secret to 72 bytes; bcrypt 5 raises instead.
_BCRYPT_PLAIN = {"bcrypt", "ldap_bcrypt", "django_bcrypt"}
_BCRYPT_LIMIT = 72
# A Dovecot-style scheme name ({PLAIN}, {SSHA512}): upper case, so never a stored password.
_PREFIX = re.compile(r"\{[A-Z0-9-]{1,20}\}")


class Uncheckable(Exception):
    """keyturn cannot check this hash itself."""

    def __init__(self, scheme: str, why: str, *, mailu_refuses: bool = False) -> None:
        super().__init__(f"{scheme}: {why}")
        self.scheme = scheme
        self.why = why
        # True when MailU itself refuses every password for such a hash at login.
        self.mailu_refuses = mailu_refuses


def scheme_label(stored: str, handler: str | None = None) -> str:
    """What a message may say of a hash: its ``{SCHEME}`` prefix and the passlib scheme that
    claimed it, never more of it (an unrecognised hash may be a password in clear)."""
    match = _PREFIX.match(stored)
    prefix = match.group(0) if match else ""
    if handler:
        return f"{prefix} ({handler})" if prefix else handler
    return prefix or "an unrecognised format"


@cache
def _context() -> Any:
    try:
        from passlib.context import CryptContext
        from passlib.registry import list_crypt_handlers
    except ImportError as exc:  # pragma: no cover - libpass is a core dependency
        raise PluginMissing("checking MailU hashes needs passlib: pip install libpass") from exc
    # MailU's own rule (models.User.get_password_context), so the same handler claims a hash.
    schemes = [s for s in list_crypt_handlers() if not (s == "scrypt" or s.endswith("plaintext"))]
    return CryptContext(schemes=schemes)


def _reference(stored: str) -> str:
    if stored.startswith(LEGACY_PREFIXES):
        return stored.split("}", 1)[1]
    return stored


def accepts(value: Secret, stored: str) -> bool:
    """Whether MailU, holding *stored* for a user, accepts *value* as that user's password.

    Raises :class:`Uncheckable` when keyturn cannot tell.
    """
    secret = value.reveal()
    if secret == "":
        return False
    reference = _reference(stored)
    handler = _context().identify(reference, resolve=True, required=False)
    if handler is None:
        # MailU's passlib 1.7.4 ends its list with unix_fallback, which claims any hash and
        # refuses every password; libpass dropped that handler, so the refusal is said here.
        raise Uncheckable(
            scheme_label(stored), "no passlib scheme recognises this hash", mailu_refuses=True
        )
    name = str(handler.name)
    data = secret.encode()
    if name in _BCRYPT_PLAIN:
        data = data[:_BCRYPT_LIMIT]
    return _verify(handler, name, data, reference, scheme_label(stored, name))


def _verify(handler: Any, name: str, secret: bytes, reference: str, label: str) -> bool:
    from passlib.exc import MissingBackendError

    try:
        return bool(handler.verify(secret, reference))
    except MissingBackendError as exc:
        package = (
            "keyturn[mailu]" if "bcrypt" in name else "argon2-cffi" if "argon2" in name else ""
        )
        fix = f"pip install '{package}'" if package else "install a backend for it"
        raise Uncheckable(label, f"passlib's {name} has no backend here: {fix}") from exc
    except TypeError as exc:  # schemes salted with the user name (postgres_md5, msdcc, ...)
        raise Uncheckable(label, f"passlib's {name} needs more than the hash") from exc
    except ValueError as exc:  # malformed: MailU fails on it too
        raise Uncheckable(label, f"the hash is not a valid {name} hash") from exc
