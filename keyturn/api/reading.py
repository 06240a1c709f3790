"""The secret read, on its hot path: one statement, one audit wait.

Token lookup, scope check and the versions asked for come from one Core statement outside any
transaction (`keyturn.db.reads.read_direct`: one statement is one snapshot), run on the
reading thread's own DBAPI connection (keyturn.db.direct); the values are opened
with the data keys the keyring keeps; their audit entries (one per value handed out, with its
fingerprint) go to the process's group writer (`keyturn.audit.group`), awaited on the event
loop, and the values are returned only once those entries are committed. No write
transaction, no BEGIN or COMMIT, no ORM object. `keyturn.runtime.read_secret` is the
reference: the same checks, the same entries.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass
from queue import SimpleQueue
from typing import Any, TypeVar

from fastapi import Request

from keyturn import auth as tokens
from keyturn.api.auth import Principal, caller, keyturn_of, require
from keyturn.audit.group import Record
from keyturn.db import reads
from keyturn.domain.errors import Conflict, CredentialNotFound
from keyturn.domain.ids import validate_id
from keyturn.domain.model import Secret

__all__ = ["Handed", "Readers", "audit", "fetch", "in_thread", "open_values", "readers"]

T = TypeVar("T")
READ_THREADS = 4


class Readers:
    """The threads an API process runs its secret reads' lookups on. Not an executor: a
    call handed to `loop.run_in_executor` costs two futures chained across threads (a
    concurrent one, an asyncio one, and their callbacks), and AnyIO's thread pool adds a
    capacity limiter; here a call goes on a queue with the coroutine's own future, and the
    thread settles that future on its loop. Few threads: a lookup is one short statement,
    and more threads only fight over the GIL (measured with bench/api.py's 20 clients: 4
    threads used a fifth less CPU per read than 20, on SQLite and on PostgreSQL). Threads
    start on first use, so in a forked server process, not before; they are daemons, idle on
    the queue when there is nothing to read."""

    def __init__(self, threads: int = READ_THREADS) -> None:
        self._threads = threads
        self._queue: SimpleQueue[_Call] = SimpleQueue()
        self._lock = threading.Lock()
        self._started = False

    async def run(self, call: Callable[..., T], *args: object) -> T:
        """call(*args) on one of the threads, awaited. A cancelled caller's call still runs
        (a lookup changes nothing); its answer is dropped."""
        if not self._started:
            self._start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((call, args, future, loop))
        return await future

    def _start(self) -> None:
        with self._lock:
            if self._started:
                return
            for n in range(self._threads):
                name = f"keyturn-read_{n}"
                threading.Thread(target=self._work, name=name, daemon=True).start()
            self._started = True

    def _work(self) -> None:
        while True:
            call, args, future, loop = self._queue.get()
            try:
                result = call(*args)
            except BaseException as exc:  # the caller's to raise, not this thread's
                _settle_soon(loop, _failed, future, exc)
            else:
                _settle_soon(loop, _done, future, result)


_Call = tuple[
    Callable[..., Any], tuple[object, ...], "asyncio.Future[Any]", asyncio.AbstractEventLoop
]


def _settle_soon(loop: asyncio.AbstractEventLoop, settle: Callable[..., None], *args: Any) -> None:
    with suppress(RuntimeError):  # the loop closed: nobody waits for the answer any more
        loop.call_soon_threadsafe(settle, *args)


def _done(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _failed(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def readers() -> Readers:
    """The read threads of one API (started on first use)."""
    return Readers()


async def in_thread(request: Request, call: Callable[..., T], *args: object) -> T:
    """call(*args) on the API's read threads, awaited."""
    pool: Readers = request.app.state.readers
    return await pool.run(call, *args)


@dataclass(frozen=True)
class Handed:
    """One value handed out, with the version it is."""

    version: reads.Stored
    value: Secret


def fetch(
    request: Request, token: str, credential_id: str, states: Iterable[str]
) -> tuple[Principal, reads.Held]:
    """Who asks (401/403 as every route answers them) and what they may read: the credential
    with its versions in *states*, all from one statement. Outside the token's tenant or
    scope it does not exist (404); a credential held back by an account dispute is refused
    (409)."""
    validate_id(credential_id)
    found: list[reads.Held | None] = []

    def find(checked: str) -> tokens.Caller:
        digest = tokens.token_hash(checked)
        db = keyturn_of(request).db
        with db.guard():
            row, held = reads.read_direct(db, digest, credential_id, states)
        found.append(held)
        return tokens.caller_of(row, digest)

    who = require(caller(request, token, find), "secret.read")
    held = found[0]
    if held is None or not who.sees_id(held.id, held.tenant_id):
        raise CredentialNotFound(f"no credential {credential_id!r}")
    if held.dispute:
        raise Conflict(
            f"{credential_id} is held back: its account belongs to another credential "
            "(`keyturn accounts --disputed`); give it an account of its own or delete it"
        )
    return who, held


def open_values(request: Request, found: reads.Held, states: Iterable[str]) -> dict[str, Handed]:
    """The versions in *states* that *found* has, opened: state -> what is to be handed out."""
    keyring = keyturn_of(request).vault.keyring
    return {
        state: Handed(
            stored,
            keyring.decrypt(stored.data_key_id, found.id, stored.number, stored.ciphertext),
        )
        for state in states
        if (stored := found.versions.get(state)) is not None
    }


async def audit(
    request: Request, who: Principal, found: reads.Held, out: dict[str, Handed]
) -> None:
    """One audit entry per value in *out* (its fingerprint, never the value), committed by the
    process's group writer before this returns; raises, and nothing may be sent, if not."""
    await keyturn_of(request).audit_writer.append_all_async(
        [
            Record(
                actor=who.actor,
                action="secret.read",
                credential_id=found.id,
                tenant_id=found.tenant_id,
                fingerprint=handed.version.fingerprint,
                details={"version": handed.version.number, "state": handed.version.state},
            )
            for handed in out.values()
        ]
    )
