"""Core statements run straight on a DBAPI connection: the secret read's hot path (issue 23).

SQLAlchemy's `Connection.execute` of an already compiled, cached statement still costs more
than the statement: a pool checkout and its reset on return (a ROLLBACK round trip on
PostgreSQL), event dispatch, an execution context, a result object. For the two statements
every secret read runs (the lookup, keyturn.db.reads.read, and the audit group writer's
append) that was most of their time: on SQLite 75 µs against 9 µs for the lookup and
90 against 16 µs a read for the append, measured in one process.

So these statements are compiled once per dialect by SQLAlchemy itself (`Prepared`: the same
SQL, the same parameter order, the column types' own bind and result conversions) and run
on a DBAPI connection that a thread keeps (`Direct`), taken out of the engine's pool for good
(so it went through the same connect-time setup: SQLite's WAL, busy timeout, full sync). A
driver error is raised as SQLAlchemy's DBAPIError would be, so `Database.guard` turns it into
the same one line. A connection the dialect calls lost (`is_disconnect`) is dropped, and the
work is tried once more on a fresh one when nothing can have been written (a server that
closed an idle connection costs no request); a refusal is raised at once and the connection
kept.

`execute` runs a Prepared statement the same way on the DBAPI connection under a SQLAlchemy
`Connection`, inside that connection's transaction: what a rotation's chain writes on Core
(its pointer moves, the versions' promotion, its audit entries, its notice), for which
SQLAlchemy's execution was about half of each statement's CPU (issue 23). The engine's
`before_cursor_execute` listeners still hear of each statement (what tests count), a driver
error is raised as SQLAlchemy's, and a connection found lost is invalidated as SQLAlchemy
would. Everything else in keyturn keeps SQLAlchemy's own execution.
"""

from __future__ import annotations

import os
import threading
import time
from collections import namedtuple
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar, cast

from sqlalchemy import Insert, Table, bindparam, insert
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement, Select
from sqlalchemy.sql.compiler import SQLCompiler

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from keyturn.db.engine import Database

__all__ = ["Direct", "Done", "Prepared", "add", "execute", "prepared"]


class Prepared:
    """*statement* compiled for *dialect*: its SQL, how its parameters are passed, and the
    conversions SQLAlchemy would apply to them and (for a SELECT) to its rows."""

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)
        # Column defaults computed in Python at each execution (created_at = now) are
        # SQLAlchemy's execution's work, which this skips: such a statement must give them.
        computed = [*compiled.insert_prefetch, *compiled.update_prefetch]
        if computed:
            names = ", ".join(c.name for c in computed)
            raise ValueError(f"give the columns that default in Python: {names}")
        self.sql = str(compiled)
        self._order: Sequence[str] | None = compiled.positiontup  # None: named parameters
        self._defaults: dict[str, Any] = {  # the values written in the statement (id = 1)
            name: bind.value for name, bind in compiled.binds.items() if not bind.required
        }
        self._binds: dict[str, Callable[[Any], Any]] = {}
        for name, bind in compiled.binds.items():
            convert = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if convert is not None:
                self._binds[name] = convert
        self._results: list[Callable[[Any], Any] | None] = []
        self.row: type | None = None
        if isinstance(statement, Select):
            columns = list(statement.selected_columns)
            self._results = [
                c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns
            ]
            self.row = namedtuple("Row", [c.key for c in columns])  # type: ignore[misc]

    def parameters(self, values: dict[str, Any]) -> Any:
        """*values* (by bind name) converted and in the form the driver takes."""
        values = {**self._defaults, **values}
        if self._binds:
            values = {
                name: (convert(values[name]) if (convert := self._binds.get(name)) else value)
                for name, value in values.items()
            }
        if self._order is None:
            return values
        return tuple(values[name] for name in self._order)

    def rows(self, raw: Sequence[Sequence[Any]]) -> list[Any]:
        """The driver's rows as named rows, each value converted as SQLAlchemy would."""
        assert self.row is not None, "not a SELECT"
        results, make = self._results, self.row
        return [
            make(*(v if f is None or v is None else f(v) for f, v in zip(results, r, strict=True)))
            for r in raw
        ]


_PREPARED: dict[tuple[int, str, str, str], tuple[ClauseElement, Prepared]] = {}


def prepared(statement: ClauseElement, dialect: Dialect) -> Prepared:
    """*statement* compiled for *dialect*, once (statements given here are kept constants)."""
    key = (id(statement), dialect.name, dialect.driver, dialect.paramstyle)
    known = _PREPARED.get(key)
    if known is None or known[0] is not statement:
        known = (statement, Prepared(statement, dialect))
        _PREPARED[key] = known
    return known[1]


class Done(NamedTuple):
    """What `execute` did: the rows it counted (`rowcount`) and the rows it returned (a
    SELECT's converted as SQLAlchemy would; RETURNING's as the driver gave them)."""

    rowcount: int
    rows: list[Any]


def execute(conn: Connection, statement: ClauseElement, values: dict[str, Any]) -> Done:
    """*statement* with *values* on *conn*'s DBAPI connection, in *conn*'s transaction."""
    dialect = conn.dialect
    ready = prepared(statement, dialect)
    params = ready.parameters(values)
    fairy = conn.connection
    dbapi = fairy.dbapi_connection
    assert dbapi is not None
    cursor = dbapi.cursor()
    try:
        if conn.dispatch.before_cursor_execute:  # what tests count, when they listen
            conn.dispatch.before_cursor_execute(conn, cursor, ready.sql, params, None, False)
        cursor.execute(ready.sql, params)
        raw = cursor.fetchall() if cursor.description is not None else []
        rows = ready.rows(raw) if ready.row is not None else list(raw)
        return Done(cursor.rowcount, rows)
    except dialect.loaded_dbapi.Error as exc:
        if dialect.is_disconnect(exc, dbapi, cursor):
            conn.invalidate(exc)
        error = dialect.loaded_dbapi.Error
        raise DBAPIError.instance(
            ready.sql, params, exc, error, hide_parameters=True, dialect=dialect
        ) from exc
    finally:
        _quietly(cursor.close)


_INSERTS: dict[Table, Insert] = {}
M = TypeVar("M")


def add(session: Session, model: type[M], values: dict[str, Any]) -> M:
    """A new *model* row with *values* (every column but its generated `id`): one INSERT
    ... RETURNING id on the session's connection, after what the session holds (flushed
    first). The row joins the session as loaded, every column known: no flush of its own,
    nothing read back. Without RETURNING (SQLite < 3.35), the ORM's own insert."""
    from sqlalchemy.orm import make_transient_to_detached  # the secret read needs no ORM

    if not session.get_bind().dialect.insert_returning:
        row = model(**values)
        session.add(row)
        session.flush()
        return row
    table = cast(Table, model.__table__)  # type: ignore[attr-defined]
    statement = _INSERTS.get(table)
    if statement is None:
        given = {c.name: bindparam(c.name, type_=c.type) for c in table.c if c.name != "id"}
        statement = _INSERTS[table] = insert(table).values(given).returning(table.c.id)
    session.flush()
    done = execute(session.connection(), statement, values)
    row = model(**values, **{"id": done.rows[0][0]})
    make_transient_to_detached(row)
    session.add(row)
    return row


class Direct:
    """A DBAPI connection per thread over *db*, in autocommit (*transactions* False: each
    statement stands alone, as a single read needs) or not (the caller commits)."""

    def __init__(self, db: Database, *, transactions: bool, max_age: float) -> None:
        self._db = db
        self._transactions = transactions
        self._max_age = max_age
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: dict[Any, int] = {}  # connection -> the process that opened it
        dialect = db.engine.dialect
        self._dialect = dialect
        self._error: type[Exception] = dialect.loaded_dbapi.Error

    def prepare(self, statement: ClauseElement) -> Prepared:
        """*statement* compiled for this database, once (statements here are constants)."""
        return prepared(statement, self._dialect)

    def fetch(self, prepared: Prepared, values: dict[str, Any]) -> list[Any]:
        """The rows of *prepared* with *values*; one retry on a fresh connection if a kept
        one turns out lost (closed by the server while idle, say)."""
        params = prepared.parameters(values)
        for attempt in (1, 2):
            conn, fresh = self._connection()
            try:
                cursor = conn.cursor()
                try:
                    cursor.execute(prepared.sql, params)
                    raw = cursor.fetchall()
                finally:
                    cursor.close()
                return prepared.rows(raw)
            except self._error as exc:
                lost = self._lost(exc, conn)  # asked before closing: closed is "lost"
                if lost:
                    self._drop(conn)
                if fresh or attempt == 2 or not lost:
                    raise self._wrapped(prepared.sql, params, exc) from exc
        raise AssertionError("unreachable")

    def transaction(self, begin: str | None, work: Callable[[Run], T]) -> T:
        """work(run) in a transaction on this thread's connection (opened by the SQL *begin*
        if given: SQLite's `BEGIN IMMEDIATE`), committed when it returns, rolled back if it
        raises; `run(prepared, values, many=False)` returns a SELECT's rows. If the first
        statement finds a kept connection lost (the server closed it while idle, say),
        nothing was written: the work is done once more on a fresh connection. A failure
        after that, the commit's included, is raised and never retried."""
        assert self._transactions
        while True:
            conn, fresh = self._connection()
            try:
                cursor = conn.cursor()
            except self._error as exc:  # closed under us
                lost = self._lost(exc, conn)
                self._drop(conn)
                if fresh or not lost:
                    raise self._wrapped("BEGIN", None, exc) from exc
                continue
            steps = _Steps(self, conn, cursor, fresh)
            try:
                if begin is not None:
                    steps.execute(begin)
                result = work(steps.run)
                try:
                    conn.commit()
                except self._error as exc:
                    raise self._wrapped("COMMIT", None, exc) from exc
                return result
            except _Stale:
                self._drop(conn)  # and once more, on a fresh connection
            except BaseException:
                self._rollback(conn)
                raise
            finally:
                _quietly(steps.cursor.close)

    def close(self) -> None:
        """Close every connection this holds (any thread's); later calls open new ones."""
        with self._lock:
            held, self._open = self._open, {}
        for conn, pid in held.items():
            if pid == os.getpid():  # a parent's, inherited by a fork: the parent's to close
                _quietly(conn.close)
        self._local = threading.local()

    def _connection(self) -> tuple[Any, bool]:
        """(this thread's connection, whether it was just opened)."""
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is not None and local.pid == os.getpid():
            if time.monotonic() - local.since < self._max_age:
                return conn, False
            self._drop(conn)
        fairy = self._db.engine.raw_connection()
        fairy.detach()  # ours now: never back to the pool, which may open another
        dbapi = fairy.dbapi_connection
        assert dbapi is not None
        if not self._db.is_sqlite:
            # psycopg: reads in autocommit (no transaction left open between them); the
            # writer's statements in one transaction (its head row locked until the commit).
            dbapi.autocommit = not self._transactions
        local.conn, local.pid, local.since = dbapi, os.getpid(), time.monotonic()
        with self._lock:
            self._open[dbapi] = os.getpid()
        return dbapi, True

    def _drop(self, conn: Any) -> None:
        with self._lock:
            self._open.pop(conn, None)
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None
        _quietly(conn.close)

    def _rollback(self, conn: Any) -> None:
        try:
            conn.rollback()
        except Exception:  # a broken connection: the next transaction opens another
            self._drop(conn)

    def _lost(self, exc: Exception, conn: Any) -> bool:
        """Is *exc* the connection's loss (closed, or ended by the server), as SQLAlchemy
        tells it, rather than a refusal a new connection would meet too (a lock held)?"""
        return bool(self._dialect.is_disconnect(exc, conn, None))  # type: ignore[arg-type]

    def _wrapped(self, sql: str, params: Any, exc: Exception) -> Exception:
        """*exc* as SQLAlchemy raises a driver's error (what `Database.guard` reads); the
        parameters are never shown (a token's hash, an entry's fields)."""
        return DBAPIError.instance(
            sql, params, exc, self._error, hide_parameters=True, dialect=self._dialect
        )


class _Stale(Exception):
    """The first statement of a transaction failed on a kept connection."""


class _Steps:
    """The statements of one transaction on *cursor*; a failure of the first one on a kept
    (not *fresh*) connection is `_Stale`."""

    def __init__(self, direct: Direct, conn: Any, cursor: Any, fresh: bool) -> None:
        self.direct, self.conn, self.cursor, self.fresh, self.sent = direct, conn, cursor, fresh, 0

    def execute(self, sql: str, params: Any = None, many: bool = False) -> None:
        try:
            if many:
                self.cursor.executemany(sql, params)
            elif params is None:
                self.cursor.execute(sql)
            else:
                self.cursor.execute(sql, params)
        except self.direct._error as exc:
            stale = self.sent == 0 and not self.fresh and self.direct._lost(exc, self.conn)
            raise (_Stale() if stale else self.direct._wrapped(sql, None, exc)) from exc
        self.sent += 1

    def run(self, prepared: Prepared, values: Any, many: bool = False) -> list[Any] | None:
        if many:
            self.execute(prepared.sql, [prepared.parameters(v) for v in values], many=True)
            return None
        self.execute(prepared.sql, prepared.parameters(values))
        return prepared.rows(self.cursor.fetchall()) if prepared.row is not None else None


Run = Callable[..., "list[Any] | None"]
T = TypeVar("T")


def _quietly(call: Callable[[], object]) -> None:
    with suppress(Exception):  # closing a connection that is already broken
        call()
