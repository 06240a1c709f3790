"""The keys a scan computes its fingerprints with.

They are derived (HKDF) from keyturn's fingerprint key, which is stored wrapped by the master
key and survives master key rotations: the same value gives the same scan fingerprints
before and after a `keyturn rekey`, so baselines stay valid. None of them is ever written.

Without access to keyturn's database a scan still finds unmanaged credentials, but has no
secret to key their fingerprints with: it then uses a public constant, like the unkeyed hashes
of detect-secrets' baselines, and says so in the baseline (``keyed: false``).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from keyturn.crypto.keys import derive

_UNKEYED_ROOT = b"keyturn scan: no keyturn database, fingerprints are not keyed"
FINGERPRINT_PREFIX = "ks1:"


@dataclass(frozen=True, repr=False)
class ScanKeys:
    """Three independent keys: matching (form fingerprints), anchors (the matcher's
    pre-filter) and findings (baseline fingerprints)."""

    match: bytes = field(repr=False)
    anchor: bytes = field(repr=False)
    finding: bytes = field(repr=False)
    keyed: bool = True

    @classmethod
    def from_fingerprint_key(cls, fingerprint_key: bytes) -> ScanKeys:
        root = derive(fingerprint_key, "scan")
        return cls(
            derive(root, "scan:match"), derive(root, "scan:anchor"), derive(root, "scan:finding")
        )

    @classmethod
    def unkeyed(cls) -> ScanKeys:
        root = hashlib.sha256(_UNKEYED_ROOT).digest()
        keys = cls.from_fingerprint_key(root)
        return cls(keys.match, keys.anchor, keys.finding, keyed=False)

    @property
    def key_id(self) -> str:
        """Names the finding key in a baseline, so a baseline made under another key (another
        keyturn database, or none) is recognised instead of silently matching nothing."""
        return hmac.new(self.finding, b"key-id", hashlib.sha256).hexdigest()[:12]

    def finding_fingerprint(self, *parts: str | bytes) -> str:
        message = b"\0".join(p if isinstance(p, bytes) else p.encode() for p in parts)
        digest = hmac.new(self.finding, message, hashlib.sha256).hexdigest()
        return FINGERPRINT_PREFIX + digest[:32]

    def value_mac(self, value: bytes) -> str:
        """What stands for an unmanaged value in findings and the cache."""
        return hmac.new(self.finding, b"value\0" + value, hashlib.sha256).hexdigest()

    def __repr__(self) -> str:
        return f"ScanKeys(keyed={self.keyed}, id={self.key_id!r})"
