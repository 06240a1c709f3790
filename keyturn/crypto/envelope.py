"""Envelope encryption: the master key wraps one data key per tenant; data keys seal values.

Every value is AES-256-GCM under its tenant's data key, with the credential id and version
number as associated data, so a ciphertext moved to another row fails to open. A sealed value
is ``nonce (12 bytes) || ciphertext+tag``; the data key id is stored beside it. A wrapped data
key is sealed the same way under the master key, with its own id as associated data, and
records the id of the master key that wrapped it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import repeat

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keyturn.crypto.keys import MasterKey
from keyturn.domain.errors import CryptoError, WrongMasterKey
from keyturn.domain.model import Secret

NONCE_BYTES = 12
VALUE_AAD_PREFIX = b"keyturn:value:"
VALUE_AAD = VALUE_AAD_PREFIX + b"%b:%d"  # credential id (UTF-8), version number


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def open_sealed(key: bytes, sealed: bytes, aad: bytes) -> bytes:
    """Decrypt; raises cryptography's InvalidTag on a wrong key or a moved ciphertext."""
    return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad)


def value_aad(credential_id: str, number: int) -> bytes:
    return VALUE_AAD % (credential_id.encode(), number)


def value_aads(credential_ids: Iterable[bytes], numbers: Iterable[bytes]) -> Iterator[bytes]:
    """value_aad for columns of UTF-8 credential ids and decimal ASCII numbers, without
    formatting each one (the rekey reads millions of them as columns)."""
    return map(b"".join, zip(repeat(VALUE_AAD_PREFIX), credential_ids, repeat(b":"), numbers))


def data_key_aad(data_key_id: str) -> bytes:
    return f"keyturn:data-key:{data_key_id}".encode()


@dataclass(frozen=True, repr=False)
class WrappedKey:
    id: str
    master_key_id: str
    wrapped: bytes


def new_data_key(master: MasterKey) -> tuple[WrappedKey, bytes]:
    """A fresh data key, and its wrapped form to store."""
    key_id = "dk-" + secrets.token_hex(8)
    material = AESGCM.generate_key(bit_length=256)
    return wrap(master, key_id, material), material


def wrap(master: MasterKey, key_id: str, material: bytes) -> WrappedKey:
    return WrappedKey(key_id, master.id, seal(master.material, material, data_key_aad(key_id)))


def unwrap(masters: dict[str, MasterKey], key: WrappedKey) -> bytes:
    """Open a wrapped data key with whichever configured master key wrapped it."""
    master = masters.get(key.master_key_id)
    if master is None:
        raise WrongMasterKey()
    try:
        return open_sealed(master.material, key.wrapped, data_key_aad(key.id))
    except InvalidTag as exc:
        raise WrongMasterKey() from exc


class Keyring:
    """Data keys opened on demand and cached for the life of one process."""

    def __init__(self, masters: list[MasterKey], fetch: Callable[[str], WrappedKey]) -> None:
        self.masters = {m.id: m for m in masters}
        self._fetch = fetch
        self._open: dict[str, bytes] = {}

    def data_key(self, key_id: str) -> bytes:
        material = self._open.get(key_id)
        if material is None:
            material = self._open[key_id] = unwrap(self.masters, self._fetch(key_id))
        return material

    def remember(self, key_id: str, material: bytes) -> None:
        """Cache a key this process just made (its row may not be committed yet)."""
        self._open[key_id] = material

    def encrypt(self, key_id: str, credential_id: str, number: int, value: Secret) -> bytes:
        aad = value_aad(credential_id, number)
        return seal(self.data_key(key_id), value.reveal().encode(), aad)

    def decrypt(self, key_id: str, credential_id: str, number: int, sealed: bytes) -> Secret:
        try:
            plain = open_sealed(self.data_key(key_id), sealed, value_aad(credential_id, number))
        except InvalidTag as exc:
            raise CryptoError(
                f"version {number} of {credential_id} does not decrypt: the stored row was "
                "altered or moved; restore it from a backup"
            ) from exc
        return Secret(plain.decode())
