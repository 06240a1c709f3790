"""The master key (KEK): where it comes from and its id.

The master key is 32 random bytes given as base64url (padding optional) in
KEYTURN_MASTER_KEY, or in the file named by KEYTURN_MASTER_KEY_FILE. Its id is derived from
it (HKDF), so the id travels with every wrapped data key and a wrong key is recognised before
anything is decrypted.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from keyturn.domain.errors import UsageError

KEY_BYTES = 32
log = logging.getLogger("keyturn.crypto")


def derive(key: bytes, purpose: str, length: int = 32) -> bytes:
    """A subkey of *key* for one *purpose*; distinct purposes give independent keys."""
    return HKDF(
        algorithm=hashes.SHA256(), length=length, salt=None, info=b"keyturn:" + purpose.encode()
    ).derive(key)


@dataclass(frozen=True, repr=False)
class MasterKey:
    material: bytes

    @property
    def id(self) -> str:
        return "mk-" + derive(self.material, "master-key-id", 8).hex()

    def __repr__(self) -> str:
        return f"MasterKey(id={self.id!r})"


def encode_key(material: bytes) -> str:
    return base64.urlsafe_b64encode(material).decode().rstrip("=")


def decode_key(text: str, source: str) -> MasterKey:
    """Decode base64url (padding optional); the error names the source, never the value."""
    cleaned = text.strip()
    try:
        material = base64.urlsafe_b64decode(cleaned + "=" * (-len(cleaned) % 4))
    except (binascii.Error, ValueError):
        material = b""
    if len(material) != KEY_BYTES:
        raise UsageError(
            f"{source} is not a master key: expected base64url of {KEY_BYTES} bytes "
            "(make one with `keyturn init` or `python -c 'import secrets,base64;"
            "print(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())'`)"
        )
    return MasterKey(material)


def generate_key() -> MasterKey:
    return MasterKey(secrets.token_bytes(KEY_BYTES))


def write_key_file(path: Path, key: MasterKey) -> None:
    """Create *path* with mode 0600; refuse to overwrite an existing key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(encode_key(key.material) + "\n")


def load_key(
    env_value: str | None, file_path: str | None, name: str, *, default: bool = False
) -> MasterKey | None:
    """The key from the variable *name* or its ``_FILE`` variant; None if neither is set.
    *default*: *file_path* is keyturn's default key file, no variable named it."""
    if env_value:
        return decode_key(env_value, name)
    if file_path:
        path = Path(file_path)
        source = f"{name}_FILE {str(path)!r}"
        if default:
            source = f"the key file {str(path)!r} (keyturn's default: {name}_FILE is not set)"
        try:
            with path.open() as handle:
                mode = stat.S_IMODE(os.fstat(handle.fileno()).st_mode)
                text = handle.read()
        except OSError as exc:
            raise UsageError(f"cannot read {source}: {exc.strerror}") from exc
        if mode & 0o077:
            # A warning, not a refusal: a secret volume mounted 0644 in a one-user container
            # is common, and refusing would stop every keyturn process at once.
            log.warning(
                "%s has mode %o: users other than its owner can read the master key "
                "(every secret keyturn holds); `chmod 600 %s`",
                source,
                mode,
                path,
            )
        return decode_key(text, source)
    return None
