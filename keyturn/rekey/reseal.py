"""Re-sealing stored versions in batches, in this process or in a pool of worker processes.

A batch is the versions whose ids lie in ``[lo, hi]`` and that are sealed under a retired
data key. Producing it (read, decrypt, encrypt under the tenant's fresh key, decrypt again
to verify) is the CPU-bound part and runs in worker processes when the job is large; the
writer, in the main process, applies each batch with one UPDATE statement and no Python per
row: the new values travel in one byte string, one fixed-width slot per id, and the
statement cuts each row's new value out of its slot.

Reading is column-wise too: one aggregate row per range carries the ids, credential ids,
version numbers, values, value lengths and data key ids, each concatenated by the database,
and Python cuts them apart with `str.split` and one `struct` unpack. Fetching 5000 rows as
5000 tuples cost more than the AES-GCM work on them. The separators cannot occur inside the
parts (numbers are digits, credential ids are validated, data key ids are hex), and a batch
whose columns do not line up is read again row by row all the same.

A slot holds the old nonce, the new data key id (space-padded) and the new sealed value, which
has the length of the old one (same plaintext, same nonce and tag sizes). The UPDATE changes
a row only if its stored value still begins with the old nonce in its slot, so a row deleted,
replaced or re-sealed by someone else since it was read is left alone, and the writer never
needs to trust that nothing moved. Rows left under a retired key are found by the job's
closing sweep. Values longer than ``WIDE`` bytes are written one statement each instead, so
that one large value does not widen every slot of its batch.
"""

from __future__ import annotations

import contextlib
import functools
import os
import struct
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import compress, repeat
from operator import itemgetter, sub
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keyturn.crypto import envelope
from keyturn.domain.errors import CryptoError, StoreUnavailable

NONCE = envelope.NONCE_BYTES
TAG = 16
WIDE = 1024
_LONGEST = 2**62
SWEEP_IDS = 100_000  # ids per statement of the closing sweep (bounds the joined key ids)
NICE = 10  # workers yield the CPU to the writer, the API and rotations

_NONCE_AND = f"{NONCE}s%ds"  # a stored value: its nonce, then a body of %d bytes
_head = itemgetter(slice(None, NONCE))
_tail = itemgetter(slice(NONCE, None))
_decrypt = AESGCM.decrypt
_encrypt = AESGCM.encrypt


@dataclass(frozen=True, repr=False)
class Keys:
    """For each retired data key: its material, and its tenant's fresh key id and material."""

    retired: dict[str, tuple[bytes, str, bytes]]
    complete: bool = True  # every retired key is here (else the closing sweep must run)

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
class Columns:
    """Stored versions, column by column: row i is (ids[i], aads[i], nonces[i], bodies[i],
    key_ids[i]), where a stored value is nonce + body (ciphertext and tag)."""

    ids: Sequence[int] = ()
    aads: Sequence[bytes] = ()
    nonces: Sequence[bytes] = ()
    bodies: Sequence[bytes] = ()
    key_ids: Sequence[str] = ()

    def __len__(self) -> int:
        return len(self.ids)

    def columns(self) -> tuple[Sequence[Any], ...]:
        """The five columns, as they are (dataclasses.astuple would copy every value)."""
        return self.ids, self.aads, self.nonces, self.bodies, self.key_ids

    def select(self, keep: Iterable[bool]) -> Columns:
        keep = list(keep)
        return Columns(*(list(compress(column, keep)) for column in self.columns()))

    @classmethod
    def of_rows(cls, rows: Sequence[Any]) -> Columns:
        """From (id, credential id as UTF-8, number, stored value, data key id) rows."""
        if not rows:
            return cls()
        ids, cred_ids, numbers, stored, key_ids = zip(*rows, strict=True)
        aads = list(map(envelope.VALUE_AAD.__mod__, zip(cred_ids, numbers, strict=True)))
        return cls(ids, aads, list(map(_head, stored)), list(map(_tail, stored)), key_ids)

    @classmethod
    def of_aggregate(cls, row: Sequence[Any], lo: int, hi: int) -> Columns | None:
        """From Statements.read's one row for [lo, hi]; None if its columns do not line up or
        a value cannot be cut apart, for the caller to read the range row by row."""
        ids_text, cred_ids, numbers, values, lengths_text, keys_text = row
        if ids_text is None:
            return cls()
        key_ids = keys_text.split(",")
        lengths = lengths_text.split(",")
        cred_ids, numbers = bytes(cred_ids).split(b","), bytes(numbers).split(b",")
        count = len(key_ids)
        # The rows come in id order, so a range without gaps needs no id parsed.
        ids = range(lo, hi + 1) if count == hi - lo + 1 else list(map(int, ids_text.split(",")))
        if not len(cred_ids) == len(numbers) == len(lengths) == len(ids) == count:
            return None
        if lengths.count(lengths[0]) == count:  # one length: the usual case, no int per row
            shortest = int(lengths[0])
            layout = _values_layout(shortest, count) if shortest >= NONCE + TAG else None
        else:
            sizes = list(map(int, lengths))
            shortest = min(sizes)
            fields = "".join(map(_NONCE_AND.__mod__, map(sub, sizes, repeat(NONCE))))
            layout = struct.Struct("=" + fields) if shortest >= NONCE + TAG else None
        if layout is None or layout.size != len(values):
            # A value too short to hold a nonce and a tag (it may be under a key the job is
            # not retiring: the row read filters before it decrypts), or lengths that do not
            # add up.
            return None
        parts = layout.unpack(values)
        aads = list(envelope.value_aads(cred_ids, numbers))
        return cls(ids, aads, parts[0::2], parts[1::2], key_ids)


@functools.lru_cache(maxsize=16)
def _values_layout(size: int, count: int) -> struct.Struct:
    """*count* stored values of *size* bytes each, as (nonce, body) pairs."""
    return struct.Struct("=" + (_NONCE_AND % (size - NONCE)) * count)


@functools.lru_cache(maxsize=16)
def _nonces_layout(count: int) -> struct.Struct:
    return struct.Struct("=" + f"{NONCE}s" * count)


def read(connection: Any, sql: Statements, lo: int, hi: int) -> tuple[Columns, Columns]:
    """The versions with ids in [lo, hi]: (those up to WIDE bytes, the wider ones)."""
    (row,) = query(connection, sql.read, lo=lo, hi=hi)
    narrow = Columns.of_aggregate(row, lo, hi)
    if narrow is None:  # a separator inside a value, or a truncated value: row by row
        rows = query(connection, sql.read_rows, lo=lo, hi=hi, above=-1, upto=WIDE)
        narrow = Columns.of_rows(rows)
    wide = Columns()
    if len(narrow) < hi - lo + 1:  # gaps in the ids, or values left out for their size
        rows = query(connection, sql.read_rows, lo=lo, hi=hi, above=WIDE, upto=_LONGEST)
        wide = Columns.of_rows(rows)
    return narrow, wide


@dataclass
class Batch:
    lo: int
    hi: int
    count: int = 0
    stride: int = 0
    slots: bytes = b""
    wide: list[dict[str, Any]] = field(default_factory=list)  # Statements.write_one params

    @property
    def empty(self) -> bool:
        return self.count == 0


@dataclass(frozen=True)
class Statements:
    """The job's SQL in the driver's own placeholder style (named: sqlite3 `:x`, psycopg
    `%(x)s`)."""

    read: str  # a range's values up to WIDE bytes, as one row of concatenated columns
    read_rows: str  # a range's values with a length in (above, upto], a row each
    write: str  # one batch's slots spliced into its rows
    write_one: str  # one wide value
    first_after: str  # the first id after another (ranges skip gaps)
    bounds: str  # the lowest and highest id
    keys_in: str  # the data key ids in use in a range (the sweep)


def statements(is_sqlite: bool, padded: bool) -> Statements:
    """*padded*: the fresh key ids differ in length, so the slots pad them with spaces."""
    names = ("lo", "hi", "above", "upto", "slots", "stride", "kw", "after", "ciphertext", "key")
    p = {n: f":{n}" if is_sqlite else f"%({n})s" for n in (*names, "id", "was")}
    as_text = "CAST({} AS TEXT)" if is_sqlite else "convert_from({}, 'UTF8')"
    as_bytes = "CAST({} AS BLOB)" if is_sqlite else "convert_to({}, 'UTF8')"
    head = f"substr(ciphertext, 1, {NONCE})"
    in_range = f"id >= {p['lo']} AND id <= {p['hi']}"
    slot = f"({p['slots']}, (id - {p['lo']}) * {p['stride']}"
    key = as_text.format(f"substr{slot} + {NONCE + 1}, {p['kw']})")
    if padded:
        key = f"rtrim({key})"

    # SQLite: a rowid range is searched in rowid order, and every aggregate of one SELECT
    # sees the rows in that order, so the columns line up. (An ORDER BY subquery would say
    # so, at a quarter more time. Were the order ever different, the write's per-row check
    # would leave the misplaced rows alone for the sweep: slower, never wrong.) group_concat
    # keeps a blob's bytes as they are (keyturn's databases are UTF-8).
    def joined(expr: str, sep: str = ",", ordered: bool = True) -> str:
        if is_sqlite:
            return f"group_concat({expr}, '{sep}')"
        return f"string_agg(({expr})::text, '{sep}'{' ORDER BY id' if ordered else ''})"

    if is_sqlite:
        values = f"CAST({joined('ciphertext', '')} AS BLOB)"
    else:
        values = "string_agg(ciphertext, ''::bytea ORDER BY id)"
    # The associated data is put together in Python (envelope.value_aads): concatenating it
    # in SQL cost twice as much.
    cred_ids, numbers = as_bytes.format(joined("credential_id")), as_bytes.format(joined("number"))
    return Statements(
        read=(
            f"SELECT {joined('id')}, {cred_ids}, {numbers}, {values}, "
            f"{joined('length(ciphertext)')}, {joined('data_key_id')} FROM versions "
            f"WHERE {in_range} AND length(ciphertext) <= {WIDE}"
        ),
        read_rows=(
            f"SELECT id, {as_bytes.format('credential_id')}, number, ciphertext, data_key_id "
            f"FROM versions WHERE {in_range} AND length(ciphertext) > {p['above']} "
            f"AND length(ciphertext) <= {p['upto']} ORDER BY id"
        ),
        write=(
            f"UPDATE versions SET ciphertext = substr{slot} + {NONCE + 1} + {p['kw']}, "
            f"length(ciphertext)), data_key_id = {key} "
            f"WHERE {in_range} AND {head} = substr{slot} + 1, {NONCE})"
        ),
        write_one=(
            f"UPDATE versions SET ciphertext = {p['ciphertext']}, data_key_id = {p['key']} "
            f"WHERE id = {p['id']} AND {head} = {p['was']}"
        ),
        first_after=f"SELECT min(id) FROM versions WHERE id > {p['after']}",
        bounds="SELECT min(id), max(id) FROM versions",
        # A set in Python costs less than SQLite's DISTINCT (an index built per scan); the
        # order does not matter here, so PostgreSQL need not sort.
        keys_in=f"SELECT {joined('data_key_id', ordered=False)} FROM versions WHERE {in_range}",
    )


def query(connection: Any, sql: str, **params: Any) -> list[Any]:
    """A statement's rows through a DBAPI connection (autocommit: a transaction of its own)."""
    with contextlib.closing(connection.cursor()) as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall())


def ranges(connection: Any, sql: Statements, width: int) -> Iterator[tuple[int, int]]:
    """Id ranges *width* wide from the lowest id, each starting at an existing id (gaps
    skipped): together they cover every row the sweep scans."""
    bounds = id_bounds(connection, sql)
    lo = None if bounds is None else bounds[0]
    while lo is not None:
        yield lo, lo + width - 1
        lo = query(connection, sql.first_after, after=lo + width - 1)[0][0]


def id_bounds(connection: Any, sql: Statements) -> tuple[int, int] | None:
    lo, hi = query(connection, sql.bounds)[0]
    return None if lo is None else (lo, hi)


def keys_used(connection: Any, sql: Statements, lo: int, hi: int) -> set[str]:
    """The data key ids of the versions with ids in [lo, hi] (a scan: there is no index)."""
    used: set[str] = set()
    for start in range(lo, hi + 1, SWEEP_IDS):
        ((joined,),) = query(connection, sql.keys_in, lo=start, hi=min(start + SWEEP_IDS - 1, hi))
        used.update(joined.split(",") if joined else ())
    return used


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

    def batch(self, lo: int, hi: int, narrow: Columns, wide: Columns) -> Batch:
        """The re-sealed values of the versions with ids in [lo, hi] that are under a retired
        key (others were re-sealed before a resume, or are new): *narrow* as slots, *wide*
        as one-row UPDATEs."""
        out = Batch(lo, hi)
        narrow, wide = self._retired(narrow), self._retired(wide)
        out.count = len(narrow) + len(wide)
        if wide:
            nonces, bodies = self._reseal(wide)
            for vid, was, key_id, nonce, body in zip(
                wide.ids, wide.nonces, wide.key_ids, nonces, bodies, strict=True
            ):
                key = self.fresh_id[key_id]
                out.wide.append({"ciphertext": nonce + body, "key": key, "id": vid, "was": was})
        if not narrow:
            return out
        nonces, bodies = self._reseal(narrow)
        # Slot i holds the row with id lo + i: old nonce, padded fresh key id, new value.
        lengths = list(map(len, bodies))
        stride = 2 * NONCE + self.key_width + max(lengths)
        filled = map(
            b"".join,
            zip(
                narrow.nonces,
                map(self.padded.__getitem__, narrow.key_ids),
                nonces,
                bodies,
                strict=True,
            ),
        )
        if min(lengths) != max(lengths):
            filled = map(bytes.ljust, filled, repeat(stride))
        ids = narrow.ids
        if len(ids) == hi - lo + 1 and ids[0] == lo and ids[-1] == hi:  # every id, in order
            out.slots = b"".join(filled)
        else:
            slots = [bytes(stride)] * (hi - lo + 1)
            deque(map(slots.__setitem__, map(sub, ids, repeat(lo)), filled), maxlen=0)
            out.slots = b"".join(slots)
        out.stride = stride
        return out

    def _retired(self, columns: Columns) -> Columns:
        if self.old.keys() >= set(columns.key_ids):
            return columns
        return columns.select(map(self.old.__contains__, columns.key_ids))

    def _reseal(self, rows: Columns) -> tuple[Sequence[bytes], list[bytes]]:
        """(new nonces, new bodies). Every step is a `map` of a C function over the columns
        (the AEAD methods unbound, dict lookups), so the interpreter runs no bytecode per
        row: at a million versions that is a third of the time the same work takes in a `for`
        loop."""
        try:
            olds = map(self.old.__getitem__, rows.key_ids)
            plains = list(map(_decrypt, olds, rows.nonces, rows.bodies, rows.aads))
        except (InvalidTag, ValueError):
            raise self._first_undecryptable(rows) from None
        ciphers = list(map(self.fresh.__getitem__, rows.key_ids))
        nonces = _nonces_layout(len(rows)).unpack(os.urandom(NONCE * len(rows)))
        bodies = list(map(_encrypt, ciphers, nonces, plains, rows.aads))
        try:
            verified = list(map(_decrypt, ciphers, nonces, bodies, rows.aads)) == plains
        except InvalidTag:
            verified = False
        if not verified:
            raise CryptoError(
                f"a version with id in [{min(rows.ids)}, {max(rows.ids)}] did not verify; "
                "nothing kept"
            )
        return nonces, bodies

    def _first_undecryptable(self, rows: Columns) -> CryptoError:
        """The error for the first row that does not decrypt (the slow way: it is rare)."""
        for vid, aad, nonce, body, key_id in zip(*rows.columns(), strict=True):
            try:
                self.old[key_id].decrypt(nonce, body, aad)
            except (InvalidTag, ValueError):
                return _undecryptable(vid, key_id)
        return CryptoError("a version did not decrypt under its data key")


def _undecryptable(vid: int, key_id: str) -> CryptoError:
    return CryptoError(
        f"version {vid} does not decrypt under its data key {key_id}: the stored row was "
        "altered or moved; restore it from the backup"
    )


# -- worker processes ----------------------------------------------------------------------

_worker: tuple[Any, Resealer, Statements] | None = None


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
    global _worker
    _worker = (connect(where), Resealer(keys), statements(where[0] == "sqlite", keys.padded))


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
    connection, _, sql = _worker
    return keys_used(connection, sql, lo, hi)


def produce(lo: int, hi: int) -> Batch:
    """In a worker: read the rows with ids in [lo, hi] and re-seal those under retired keys."""
    assert _worker is not None, "init_worker was not called"
    connection, resealer, sql = _worker
    try:
        narrow, wide = read(connection, sql, lo, hi)
    except Exception as exc:
        if exc.__class__.__module__.split(".")[0] not in ("sqlite3", "psycopg"):
            raise
        # The driver's own exception may not survive the trip back; its message is not needed.
        raise StoreUnavailable(
            f"a rekey worker could not read keyturn's database ({exc.__class__.__name__}); "
            "run `keyturn rekey` again to carry on"
        ) from None
    return resealer.batch(lo, hi, narrow, wide)
