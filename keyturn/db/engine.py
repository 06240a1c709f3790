"""Connecting to keyturn's database: SQLite (embedded default, WAL) or PostgreSQL.

A failure to reach or write the database is one line that says what is wrong and what to do
(`describe_failure`): a missing file or folder, a read-only file, a full disk, a lock held
too long, a PostgreSQL database that does not exist, a refused password, a server that cannot
be reached. Nothing of the URL's password, and no driver message beyond the classified part,
reaches the user.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    InternalError,
    OperationalError,
    SQLAlchemyError,
)

from keyturn.domain.errors import PluginMissing, StoreUnavailable, UsageError

if TYPE_CHECKING:  # the ORM loads with the first session: `keyturn get` runs on Core alone
    from sqlalchemy.orm import Session, sessionmaker

DEFAULT_URL = "sqlite:///keyturn.db"
# How long a SQLite writer waits for another's write lock before giving up.
BUSY_SECONDS = 30.0


# Pooled PostgreSQL connections older than this are replaced at checkout (no round trip):
# below the idle timeouts of proxies and load balancers in front of a server.
RECYCLE_SECONDS = 1800
# Connections a process keeps open. The API runs its blocking work on AnyIO's thread pool
# (40 threads): a pool smaller than the requests in flight closes a connection at every
# check-in above its size and opens one at the next checkout (a SQLite open runs four
# PRAGMAs; a PostgreSQL one is a login), which under 20 concurrent readers cost a tenth of
# the server's time. Kept connections are idle file handles (SQLite) or idle backends.
POOL_SIZE = 20
POOL_OVERFLOW = 20


def parse_url(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise UsageError(
            f"KEYTURN_DB is not a database URL ({exc.__class__.__name__}); "
            "use e.g. sqlite:///keyturn.db or postgresql+psycopg://user@host/db"
        ) from exc
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise UsageError(
            f"unsupported database {parsed.get_backend_name()!r}: use sqlite or postgresql"
        )
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def sqlite_file(url: URL) -> Path | None:
    """The file of a SQLite URL (None for PostgreSQL and in-memory databases)."""
    name = url.database
    if url.get_backend_name() != "sqlite" or not name or name == ":memory:":
        return None
    if url.query.get("uri") == "true" and name.startswith("file:"):
        name = name.removeprefix("file:")  # a URI filename (?mode=ro&uri=true)
    return Path(name)


def _sqlite_setup(engine: Engine, busy_seconds: float) -> None:
    """WAL, foreign keys, a busy timeout, full sync; write transactions begin IMMEDIATE.

    pysqlite's own transaction handling is turned off so that we say how a transaction
    begins: IMMEDIATE takes the write lock up front, so two writers queue on the busy
    timeout instead of one failing on a lock upgrade.
    """

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_seconds * 1000)}")
        # FULL: a commit is on disk before it returns, power loss included. NORMAL (WAL's
        # usual choice) survives a crash of the process but may lose the last commits to a
        # power cut, and a lost pending value after its target was changed is a lockout
        # (DESIGN.md invariant 1). The audit group writer pays it once per batch.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {mode}")


class Database:
    """An engine plus session factories; `write()` for changes, `read()` for queries.

    *busy_seconds* is how long a SQLite writer waits for another's lock before giving up.
    """

    def __init__(self, url: str | URL, *, busy_seconds: float = BUSY_SECONDS) -> None:
        self.url = parse_url(url) if isinstance(url, str) else url
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        self.busy_seconds = busy_seconds
        kwargs: dict[str, Any] = {"future": True}
        if self.is_sqlite:
            kwargs["connect_args"] = {"timeout": busy_seconds, "check_same_thread": False}
            if sqlite_file(self.url) is not None:  # a file: pooled (memory has its own pool)
                kwargs.update(pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW)
        else:
            # No pre-ping: a `SELECT 1` before every checkout is a round trip on every
            # transaction. A connection the server dropped fails its first statement instead;
            # SQLAlchemy then discards it and every pooled connection older than it, so
            # the next transaction connects afresh (tests/core/test_engine_pool.py).
            kwargs.update(
                pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW, pool_recycle=RECYCLE_SECONDS
            )
        try:
            self.engine = create_engine(self.url, **kwargs)
        except ImportError as exc:  # the URL's driver is not installed
            raise PluginMissing(
                f"KEYTURN_DB is a PostgreSQL URL, which needs psycopg 3 ({exc.name} is not "
                "installed): pip install 'keyturn[postgres]'"
            ) from None
        if self.is_sqlite:
            _sqlite_setup(self.engine, busy_seconds)
        # Copied into the `info` of every session made after a change: how the audit log's
        # key set reaches the code that appends to it (keyturn.audit.chain.bind).
        self.session_info: dict[str, Any] = {}
        self._writers: tuple[int, int] = (0, -1)  # (pid, fd) of `queued`'s lock file
        from keyturn.db.direct import Direct  # connects nothing until first used

        # Single statements on connections the reading threads keep, in autocommit (the
        # secret read's lookup), and transactions on the one the audit writer keeps.
        self.direct = Direct(self, transactions=False, max_age=RECYCLE_SECONDS)
        self.direct_writes = Direct(self, transactions=True, max_age=RECYCLE_SECONDS)

    @cached_property
    def _sessions(self) -> sessionmaker[Session]:
        from sqlalchemy.orm import sessionmaker

        return sessionmaker(self.engine, expire_on_commit=False, info=self.session_info)

    @cached_property
    def _readers(self) -> sessionmaker[Session]:
        from sqlalchemy.orm import sessionmaker

        reader = self.engine.execution_options(sqlite_begin="DEFERRED")
        return sessionmaker(reader, expire_on_commit=False, info=self.session_info)

    @property
    def sqlite_path(self) -> Path | None:
        return sqlite_file(self.url)

    def describe(self) -> str:
        return self.url.render_as_string(hide_password=True)

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction that commits on success and rolls back on any error."""
        with self.guard(), self._sessions() as session, session.begin():
            yield session

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        with self.guard(), self._readers() as session, session.begin():
            yield session

    @contextlib.contextmanager
    def queued(self) -> Iterator[None]:
        """Around a write transaction that runs often in several processes at once (the audit
        group writers of `serve --workers N`): on a SQLite file, an exclusive lock on a file
        beside it (`<database>.writers`, flock), so those writers wait in the kernel's queue
        and wake as soon as it is released. Without it they poll SQLite's write lock with the
        busy handler's growing sleeps (1 ms up to 100 ms), under which one process's writer,
        committing batch after batch, starved the other's readers for tenths of a second.
        PostgreSQL queues lock waiters itself: there this does nothing."""
        lock = self._writers_lock()
        if lock is None:
            yield
            return
        fcntl.flock(lock, fcntl.LOCK_EX)  # blocking: woken as it is released, in turn
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)

    def _writers_lock(self) -> int | None:
        """This process's descriptor of the writers' lock file (opened after a fork afresh:
        a descriptor shared with the parent would share its lock too); None without a file."""
        path = self.sqlite_path
        if path is None:
            return None
        pid, fd = self._writers
        if pid != os.getpid():
            try:
                fd = os.open(f"{path}.writers", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError:  # a read-only folder: nothing writes here anyway
                fd = -1
            self._writers = (os.getpid(), fd)
        return None if fd < 0 else fd

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Turn a database failure (not a constraint or a bug) into one clear line."""
        try:
            yield
        except DBAPIError as exc:
            message = describe_failure(self, exc)
            if message is None:
                raise
            raise StoreUnavailable(message) from exc

    def exists(self) -> bool:
        """False for a SQLite file that is not there (checked without creating it)."""
        path = self.sqlite_path
        return path is None or path.exists()

    def is_initialised(self) -> bool:
        if not self.exists():  # connecting would create an empty file
            return False
        try:
            with self.guard():
                return inspect(self.engine).has_table("alembic_version")
        except SQLAlchemyError as exc:
            raise StoreUnavailable(
                f"keyturn's database {self.describe()} is unavailable "
                f"({exc.__class__.__name__}); check KEYTURN_DB"
            ) from exc

    def check_creatable(self) -> None:
        """Before `init` creates a SQLite file: its folder must exist and be writable."""
        path = self.sqlite_path
        if path is None or path.exists():
            return
        folder = path.parent
        if not folder.is_dir():
            raise UsageError(
                f"cannot create keyturn's database {path}: the folder {folder} does not exist; "
                "create it, or set KEYTURN_DB to a path in an existing folder"
            )
        if not os.access(folder, os.W_OK | os.X_OK):
            raise UsageError(
                f"cannot create keyturn's database {path}: the folder {folder} is not writable"
            )

    def dispose(self) -> None:
        self.direct.close()
        self.direct_writes.close()
        self.engine.dispose()
        pid, fd = self._writers
        if pid == os.getpid() and fd >= 0:
            os.close(fd)
        self._writers = (0, -1)


# (what the driver says, what the user reads): the first entry whose words all appear in the
# driver's message wins. {db}, {path}, {host}, {user}, {name} and {busy} are filled in from
# the URL and the settings, never from the message.
_SQLITE = (
    (
        ("readonly database",),
        "keyturn's database {path} is read-only: keyturn must write to it and to its folder "
        "(for the -wal and -shm files); check their permissions and that the file system is "
        "not mounted read-only",
    ),
    (
        ("database or disk is full",),
        "the disk holding keyturn's database {path} is full: free some space and try again "
        "(nothing was written: the transaction was rolled back)",
    ),
    (
        ("database is locked",),
        "keyturn's database {path} is locked: another process held its write lock for more "
        "than {busy} s; try again, or find the process (`fuser {path}`)",
    ),
    (
        ("unable to open database file",),
        "cannot open keyturn's database {path}: check that its folder exists and that the "
        "file and folder are readable and writable",
    ),
    (
        ("disk i/o error",),
        "keyturn's database {path} could not be read or written (disk I/O error): check the "
        "disk, and that no other machine opens the file over a network share",
    ),
)
_POSTGRES = (
    (
        ('database "', "does not exist"),
        "the PostgreSQL database {name!r} does not exist on {host}: create it "
        "(`createdb {name}`), or fix KEYTURN_DB",
    ),
    (
        ('role "', "does not exist"),
        "PostgreSQL at {host} has no role {user!r}: create it, or fix the user in KEYTURN_DB",
    ),
    (
        ("password authentication failed",),
        "PostgreSQL at {host} refused the login of {user!r} (password authentication failed): "
        "check the user and password in KEYTURN_DB",
    ),
    (
        ("no pg_hba.conf entry",),
        "PostgreSQL at {host} does not accept {user!r} from this host (no pg_hba.conf entry): "
        "allow it in pg_hba.conf, or fix KEYTURN_DB",
    ),
    (
        ("read-only transaction",),
        "keyturn's database {db} is read-only (a standby, or default_transaction_read_only): "
        "point KEYTURN_DB at the primary",
    ),
    *(
        (
            (words,),
            "the PostgreSQL server of keyturn's database {db} is out of disk space: free some "
            "space on the server (nothing was written: the transaction was rolled back)",
        )
        for words in ("could not extend file", "no space left on device")
    ),
    (
        ("too many", "connections"),
        "PostgreSQL at {host} has no connection slot left (too many clients): raise "
        "max_connections, or run fewer keyturn processes",
    ),
)
_UNREACHABLE = (
    "connection refused",
    "could not connect",
    "failed to resolve host",
    "could not translate host name",
    "timeout expired",
    "connection timed out",
    "server closed the connection",
    "terminating connection",
    "no route to host",
    "network is unreachable",
)


def describe_failure(db: Database, exc: DBAPIError) -> str | None:
    """One line for a database failure a user can act on; None for anything else (a
    constraint violation, a bug), which the caller re-raises as it is."""
    if not isinstance(exc, OperationalError | InternalError):
        return None
    said = str(exc.orig if exc.orig is not None else exc).lower()
    url = db.url
    fields = {
        "db": db.describe(),
        "path": str(db.sqlite_path or url.database),
        "host": f"{url.host or 'localhost'}:{url.port or 5432}",
        "user": url.username or "",
        "name": url.database or "",
        "busy": f"{db.busy_seconds:g}",
    }
    for words, text in _SQLITE if db.is_sqlite else _POSTGRES:
        if all(word in said for word in words):
            return text.format(**fields)
    if not db.is_sqlite and any(marker in said for marker in _UNREACHABLE):
        return (
            "cannot reach PostgreSQL at {host} for keyturn's database: is the server running, "
            "and are the host and port in KEYTURN_DB right?".format(**fields)
        )
    if isinstance(exc, OperationalError):
        kind = type(exc.orig).__name__ if exc.orig is not None else "error"
        return f"keyturn's database {fields['db']} is unavailable ({kind}); check KEYTURN_DB"
    return None
