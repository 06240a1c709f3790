"""The keys keyturn keeps beside its data, sealed together under the master key.

One blob in the `meta` table holds, AES-256-GCM-sealed under the master key:

- the fingerprint key (HMAC of values in audit entries and `show`),
- the audit key (HMAC-SHA256 that chains the audit log),
- the checkpoint key (an Ed25519 seed that signs checkpoints of the audit head),
- the id of this database (named in every checkpoint), and
- how many audit entries were written before the log was keyed (the legacy SHA-256 prefix).

Sealing them as one blob makes them all-or-nothing: whoever can write the database but lacks
the master key can neither read them, nor change one of them (the legacy boundary included),
nor delete the audit key alone and have keyturn make a fresh one. A rekey re-seals the same
blob under the new master key, so fingerprints, the audit chain and checkpoint signatures all
survive it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature, InvalidTag

from keyturn.crypto import envelope
from keyturn.crypto.keys import MasterKey
from keyturn.domain.errors import CryptoError, WrongMasterKey

if TYPE_CHECKING:
    # Imported where checkpoints are signed or verified: Ed25519 brings cryptography's
    # serialization (and bcrypt), which a read that only chains an HMAC does not need.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

AAD = b"keyturn:keyset"
FORMAT = 1
KEY_BYTES = 32


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: object, what: str) -> bytes:
    try:
        raw = base64.b64decode(str(text), validate=True)
    except ValueError as exc:
        raise CryptoError(f"the key set's {what} is not base64") from exc
    if len(raw) != KEY_BYTES:
        raise CryptoError(f"the key set's {what} is not {KEY_BYTES} bytes")
    return raw


@dataclass(frozen=True, repr=False)
class KeySet:
    """The sealed keys of one database (see the module docstring)."""

    database_id: str
    fingerprint: bytes
    audit: bytes
    checkpoint: bytes
    legacy_through: int = 0

    @classmethod
    def generate(cls, fingerprint: bytes | None = None, legacy_through: int = 0) -> KeySet:
        """Fresh keys; *fingerprint* keeps an existing fingerprint key (an upgrade)."""
        return cls(
            database_id="db-" + secrets.token_hex(8),
            fingerprint=fingerprint or secrets.token_bytes(KEY_BYTES),
            audit=secrets.token_bytes(KEY_BYTES),
            checkpoint=secrets.token_bytes(KEY_BYTES),
            legacy_through=legacy_through,
        )

    def __repr__(self) -> str:
        return f"KeySet(database_id={self.database_id!r}, legacy_through={self.legacy_through})"

    # -- the audit chain -------------------------------------------------------------------

    def audit_mac(self, message: bytes) -> str:
        """HMAC-SHA256 of *message* under the audit key, as hex."""
        return hmac.new(self.audit, message, hashlib.sha256).hexdigest()

    # -- checkpoints -----------------------------------------------------------------------

    def _signer(self) -> Ed25519PrivateKey:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return Ed25519PrivateKey.from_private_bytes(self.checkpoint)

    def sign(self, message: bytes) -> bytes:
        return self._signer().sign(message)

    @property
    def public_key(self) -> str:
        """The checkpoint key's public half, base64 of the 32 raw bytes."""
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        raw = self._signer().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return _b64(raw)

    # -- sealing ---------------------------------------------------------------------------

    def _dump(self) -> bytes:
        return json.dumps(
            {
                "format": FORMAT,
                "database": self.database_id,
                "fingerprint": _b64(self.fingerprint),
                "audit": _b64(self.audit),
                "checkpoint": _b64(self.checkpoint),
                "legacy_through": self.legacy_through,
            },
            sort_keys=True,
        ).encode()

    def seal(self, master: MasterKey) -> bytes:
        """The blob to store, verified under *master* before it is returned."""
        sealed = envelope.seal(master.material, self._dump(), AAD)
        if open_keyset(master, sealed) != self:
            raise WrongMasterKey("the key set did not verify under the master key")
        return sealed

    def with_legacy(self, legacy_through: int) -> KeySet:
        return replace(self, legacy_through=legacy_through)


def open_keyset(master: MasterKey, sealed: bytes) -> KeySet:
    """Open a sealed key set; WrongMasterKey if *master* did not seal it (or it was altered)."""
    try:
        plain = envelope.open_sealed(master.material, sealed, AAD)
    except (InvalidTag, ValueError) as exc:
        raise WrongMasterKey() from exc
    data = json.loads(plain)
    if data.get("format") != FORMAT:
        raise CryptoError(f"the key set has format {data.get('format')!r}; this keyturn reads 1")
    return KeySet(
        database_id=str(data["database"]),
        fingerprint=_unb64(data["fingerprint"], "fingerprint key"),
        audit=_unb64(data["audit"], "audit key"),
        checkpoint=_unb64(data["checkpoint"], "checkpoint key"),
        legacy_through=int(data["legacy_through"]),
    )


def verify_signature(public_key: str, signature: str, message: bytes) -> bool:
    """Whether *signature* (base64) is an Ed25519 signature of *message* under *public_key*."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        raw_key = base64.b64decode(public_key, validate=True)
        raw_sig = base64.b64decode(signature, validate=True)
        Ed25519PublicKey.from_public_bytes(raw_key).verify(raw_sig, message)
    except (ValueError, InvalidSignature):
        return False
    return True
