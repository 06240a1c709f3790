"""Re-sealing stored versions in batches, in this process or in a pool of worker processes.

A batch is the versions whose ids lie in ``[lo, hi]`` and that are sealed under a retired
data key. Producing it (read, decrypt, encrypt under the tenant's fresh key, decrypt again
to verify) is the CPU-bound part and runs in worker processes when the job is large; the
writer, in the main process, applies each batch with one UPDATE statement and no Python per
row: the new values travel in one byte string, one fixed-width slot per id, and the
statement cuts each row's new value out of its slot.

A slot holds the old nonce, the new data key id (space-padded) and the new sealed value, which
has the length of the old one (same plaintext, same nonce and tag sizes). The UPDATE changes
a row only if its stored value still begins with the old nonce in its slot, so a row deleted,
replaced or re-sealed by someone else since it was read is left alone, and the writer never
needs to trust that nothing moved. Rows left under a retired key are found by the job's final
sweep. Values longer than ``WIDE`` bytes are written one statement each instead, so that one
large value does not widen every slot of its batch.
"""

from __future__ import annotations

import os
import struct
from collections import deque
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter, sub
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keyturn.crypto import envelope
from keyturn.domain.errors import CryptoError, StoreUnavailable

NONCE = envelope.NONCE_BYTES
WIDE = 1024
NICE = 10  # workers yield the CPU to the writer, the API and rotations

_first = itemgetter(0)
_sealed = itemgetter(3)
_key_id = itemgetter(4)
_head = itemgetter(slice(None, NONCE))
_tail = itemgetter(slice(NONCE, None))
_decrypt = AESGCM.decrypt
_encrypt = AESGCM.encrypt


@dataclass(frozen=True, repr=False)
class Keys:
    """For each retired data key: its material, and its tenant's fresh key id and material."""

    retired: dict[str, tuple[bytes, str, bytes]]

    def __repr__(self) -> str:  # never the material
        return f"Keys({len(self.retired)} retired data keys)"

    @property
    def key_width(self) -> int:
        return max((len(fresh_id) for _, fresh_id, _ in self.retired.values()), default=0)

    @property
    def padded(self) -> bool:
        """Do the fresh key ids differ in length (so that slots pad them)?"""
        return len({len(fresh_id) for _, fresh_id, _ in self.retired.values()}) > 1


@dataclass
class Batch:
    lo: int
    hi: int
    count: int = 0
    stride: int = 0
    key_width: int = 0
    slots: bytes = b""
    wide: list[tuple[bytes, str, int, bytes]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return self.count == 0


def dialect_sql(is_sqlite: bool, padded: bool = True) -> tuple[str, str, str]:
    """(read, write slots, write one) in the driver's own placeholder style.

    *padded*: the fresh key ids differ in length, so the slots pad them with spaces."""
    if is_sqlite:
        p = {n: f":{n}" for n in ("lo", "hi", "slots", "stride", "kw")}
        as_text = "CAST({} AS TEXT)"
        utf8 = "CAST(credential_id AS BLOB)"
        one = "UPDATE versions SET ciphertext = ?, data_key_id = ? WHERE id = ? AND {head} = ?"
    else:
        p = {n: f"%({n})s" for n in ("lo", "hi", "slots", "stride", "kw")}
        as_text = "convert_from({}, 'UTF8')"
        utf8 = "convert_to(credential_id, 'UTF8')"
        one = "UPDATE versions SET ciphertext = %s, data_key_id = %s WHERE id = %s AND {head} = %s"
    head = f"substr(ciphertext, 1, {NONCE})"
    read = (
        f"SELECT id, {utf8}, number, ciphertext, data_key_id FROM versions "
        f"WHERE id >= {p['lo']} AND id <= {p['hi']} ORDER BY id"
    )
    slot = f"({p['slots']}, (id - {p['lo']}) * {p['stride']}"
    key = as_text.format(f"substr{slot} + {NONCE + 1}, {p['kw']})")
    if padded:
        key = f"rtrim({key})"
    write = (
        f"UPDATE versions SET ciphertext = substr{slot} + {NONCE + 1} + {p['kw']}, "
        f"length(ciphertext)), data_key_id = {key} "
        f"WHERE id >= {p['lo']} AND id <= {p['hi']} AND {head} = substr{slot} + 1, {NONCE})"
    )
    return read, write, one.format(head=head)


class Resealer:
    """Decrypt under the retired key, encrypt under the fresh one, verify; lay out slots."""

    def __init__(self, keys: Keys) -> None:
        self.key_width = keys.key_width
        ciphers: dict[str, AESGCM] = {}
        # Keyed by retired data key id: its cipher; the fresh key's cipher, id and padded id.
        self.old: dict[str, AESGCM] = {}
        self.fresh: dict[str, AESGCM] = {}
        self.fresh_id: dict[str, str] = {}
        self.padded: dict[str, bytes] = {}
        for key_id, (material, fresh_id, fresh_material) in keys.retired.items():
            if fresh_id not in ciphers:
                ciphers[fresh_id] = AESGCM(fresh_material)
            self.old[key_id] = AESGCM(material)
            self.fresh[key_id] = ciphers[fresh_id]
            self.fresh_id[key_id] = fresh_id
            self.padded[key_id] = fresh_id.encode().ljust(self.key_width)

    def batch(self, lo: int, hi: int, rows: list[Any]) -> Batch:
        """*rows*: (id, credential id as UTF-8, number, sealed, data key id), ids in [lo, hi]; those
        under a retired key are re-sealed (others were re-sealed before a resume, or are new).

        Column-wise: every step is a `map` of a C function over the batch (the AEAD methods
        unbound, dict lookups, slicing), so the interpreter runs no bytecode per row; at a
        million versions that is a third of the time the same work takes in a `for` loop.
        """
        out = Batch(lo, hi)
        table = self.old
        if not rows:
            return out
        if not table.keys() >= set(map(_key_id, rows)):
            rows = [r for r in rows if r[4] in table]
            if not rows:
                return out
        if max(map(len, map(_sealed, rows))) > WIDE:
            out.wide = [self._wide(r) for r in rows if len(r[3]) > WIDE]
            rows = [r for r in rows if len(r[3]) <= WIDE]
        out.count = len(out.wide) + len(rows)
        if not rows:
            return out
        ids, cred_ids, numbers, sealed, key_ids = zip(*rows, strict=True)
        n = len(ids)
        aads = list(map(envelope.VALUE_AAD.__mod__, zip(cred_ids, numbers, strict=True)))
        was = list(map(_head, sealed))
        try:
            plains = list(
                map(_decrypt, map(self.old.__getitem__, key_ids), was, map(_tail, sealed), aads)
            )
        except InvalidTag:
            raise self._undecryptable(rows, aads) from None
        ciphers = list(map(self.fresh.__getitem__, key_ids))
        nonces = list(map(_first, struct.iter_unpack(f"{NONCE}s", os.urandom(NONCE * n))))
        bodies = list(map(_encrypt, ciphers, nonces, plains, aads))
        try:
            verified = list(map(_decrypt, ciphers, nonces, bodies, aads)) == plains
        except InvalidTag:
            verified = False
        if not verified:
            raise CryptoError(f"a version with id in [{lo}, {hi}] did not verify; nothing kept")
        # Slot i holds the row with id lo + i: old nonce, padded fresh key id, new value.
        longest = max(map(len, sealed))
        stride = NONCE + self.key_width + longest
        padded = map(self.padded.__getitem__, key_ids)
        filled = map(b"".join, zip(was, padded, nonces, bodies, strict=True))
        if min(map(len, sealed)) != longest:
            filled = map(bytes.ljust, filled, repeat(stride))
        if n == hi - lo + 1:  # every id of the range, in order (the read sorts): slots = rows
            out.slots = b"".join(filled)
        else:
            slots = [bytes(stride)] * (hi - lo + 1)
            deque(map(slots.__setitem__, map(sub, ids, repeat(lo)), filled), maxlen=0)
            out.slots = b"".join(slots)
        out.stride, out.key_width = stride, self.key_width
        return out

    def _undecryptable(self, rows: list[Any], aads: list[bytes]) -> CryptoError:
        """The error for the first row that does not decrypt (the slow way: it is rare)."""
        for (vid, _, _, sealed, key_id), aad in zip(rows, aads, strict=True):
            try:
                self.old[key_id].decrypt(sealed[:NONCE], sealed[NONCE:], aad)
            except InvalidTag:
                return _undecryptable(vid, key_id)
        return CryptoError("a version did not decrypt under its data key")

    def _wide(self, row: Any) -> tuple[bytes, str, int, bytes]:
        """The parameters of the one-row UPDATE for a value longer than WIDE."""
        vid, cred_id, number, sealed, key_id = row
        cipher = self.fresh[key_id]
        aad = envelope.VALUE_AAD % (cred_id, number)
        try:
            plain = self.old[key_id].decrypt(sealed[:NONCE], sealed[NONCE:], aad)
        except InvalidTag as exc:
            raise _undecryptable(vid, key_id) from exc
        nonce = os.urandom(NONCE)
        body = cipher.encrypt(nonce, plain, aad)
        if cipher.decrypt(nonce, body, aad) != plain:
            raise CryptoError(f"version {vid} did not verify; nothing kept")
        return nonce + body, self.fresh_id[key_id], vid, sealed[:NONCE]


def _undecryptable(vid: int, key_id: str) -> CryptoError:
    return CryptoError(
        f"version {vid} does not decrypt under its data key {key_id}: the stored row was "
        "altered or moved; restore it from the backup"
    )


# -- worker processes ----------------------------------------------------------------------

_worker: tuple[Any, Resealer, str] | None = None


def source(db: Any) -> tuple[str, str]:
    """What a worker needs to open the database on its own: ("sqlite", path) or
    ("postgresql", a libpq URI). Workers do not load SQLAlchemy."""
    if db.is_sqlite:
        return "sqlite", str(db.sqlite_path)
    return "postgresql", db.url.set(drivername="postgresql").render_as_string(hide_password=False)


def connect(where: tuple[str, str]) -> Any:
    """A DBAPI connection in autocommit mode: every batch read is a transaction of its own."""
    kind, target = where
    if kind == "sqlite":
        import sqlite3
        from pathlib import Path

        connection = sqlite3.connect(
            Path(target).absolute().as_uri() + "?mode=ro", uri=True, isolation_level=None
        )
        connection.execute("PRAGMA busy_timeout=30000")
        return connection
    import psycopg

    return psycopg.connect(target, autocommit=True)


def init_worker(where: tuple[str, str], keys: Keys) -> None:
    """Process-pool initializer: one database connection and the ciphers."""
    import gc

    gc.disable()  # short-lived, allocation-heavy, and no reference cycles
    os.nice(NICE)
    _exit_with_parent()
    read, _, _ = dialect_sql(where[0] == "sqlite", keys.padded)
    global _worker
    _worker = (connect(where), Resealer(keys), read)


def _exit_with_parent() -> None:
    """A killed rekey must not leave its workers behind: they would wait for work forever."""
    import multiprocessing
    import threading
    from multiprocessing.connection import wait

    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def keys_in(lo: int, hi: int) -> set[str]:
    """In a worker: the data key ids used by the versions with ids in [lo, hi]."""
    assert _worker is not None, "init_worker was not called"
    return keys_used(_worker[0], lo, hi)


def produce(lo: int, hi: int) -> Batch:
    """In a worker: read the rows with ids in [lo, hi] and re-seal those under retired keys."""
    assert _worker is not None, "init_worker was not called"
    connection, resealer, read = _worker
    try:
        rows = fetch(connection, read, lo, hi)
    except Exception as exc:
        if exc.__class__.__module__.split(".")[0] not in ("sqlite3", "psycopg"):
            raise
        # The driver's own exception may not survive the trip back; its message is not needed.
        raise StoreUnavailable(
            f"a rekey worker could not read keyturn's database ({exc.__class__.__name__}); "
            "run `keyturn rekey` again to carry on"
        ) from None
    return resealer.batch(lo, hi, rows)


def _mark(connection: Any) -> str:
    return "?" if connection.__class__.__module__ == "sqlite3" else "%s"


def keys_used(connection: Any, lo: int, hi: int) -> set[str]:
    """The data key ids of the versions with ids in [lo, hi] (a scan: there is no index)."""
    cursor = connection.cursor()
    try:
        mark = _mark(connection)
        cursor.execute(
            f"SELECT DISTINCT data_key_id FROM versions WHERE id >= {mark} AND id <= {mark}",
            (lo, hi),
        )
        return {row[0] for row in cursor.fetchall()}
    finally:
        cursor.close()


def id_bounds(connection: Any) -> tuple[int, int] | None:
    cursor = connection.cursor()
    try:
        cursor.execute("SELECT min(id), max(id) FROM versions")
        row = cursor.fetchone()
        return None if row is None or row[0] is None else (int(row[0]), int(row[1]))
    finally:
        cursor.close()


def first_id_after(connection: Any, after: int) -> int | None:
    cursor = connection.cursor()
    try:
        cursor.execute(f"SELECT min(id) FROM versions WHERE id > {_mark(connection)}", (after,))
        row = cursor.fetchone()
        return None if row is None or row[0] is None else int(row[0])
    finally:
        cursor.close()


def fetch(connection: Any, read: str, lo: int, hi: int) -> list[Any]:
    cursor = connection.cursor()
    try:
        cursor.execute(read, {"lo": lo, "hi": hi})
        return list(cursor.fetchall())
    finally:
        cursor.close()
