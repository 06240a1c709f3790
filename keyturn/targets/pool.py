"""Idle admin connections kept between a target's verbs and between rotations (issue 23).

Opening a connection to a database target is a TCP handshake, often TLS, and a SCRAM
exchange: several round trips and a few milliseconds of CPU each time. A rotation's `set`,
`revoke` and `ensure` all act through the same admin login, and a worker rotates many
credentials of the same target, so the admin connection is taken from here and given back
when the verb is done. Verification logins (`test`) never come from here: proving that a
value works is making a fresh login with it.

Connections are keyed by everything that chose them, the password included (as a digest, so
an admin password that rotated opens new ones); a connection that failed is closed rather
than given back, and idle ones are closed after `IDLE_SECONDS`. The pool is per process: a
forked worker starts with none of its parent's connections.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["IDLE_SECONDS", "IdlePool", "digest"]

Conn = TypeVar("Conn")
# Closed when unused this long: below the idle timeouts of servers and proxies.
IDLE_SECONDS = 60.0
# Idle connections kept per key (a worker's concurrent rotations on one target).
PER_KEY = 4


def digest(secret: str) -> str:
    """The part of a pool key that stands for a password (never the password itself)."""
    return hashlib.sha256(b"keyturn:pool\n" + secret.encode()).hexdigest()


class IdlePool(Generic[Conn]):
    """Idle connections by key; `take` one or None, `give` it back when done with it."""

    def __init__(self, close: Callable[[Conn], None], usable: Callable[[Conn], bool]) -> None:
        self._close = close
        self._usable = usable
        self._idle: dict[Hashable, list[tuple[float, Conn]]] = {}
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def take(self, key: Hashable) -> Conn | None:
        """An idle connection for *key* that still looks usable, or None (open one)."""
        stale: list[Conn] = []
        found = None
        now = time.monotonic()
        with self._lock:
            self._after_fork()
            idle = self._idle.get(key, [])
            while idle and found is None:
                since, conn = idle.pop()
                if now - since < IDLE_SECONDS and self._usable(conn):
                    found = conn
                else:
                    stale.append(conn)
        for conn in stale:
            self._close(conn)
        return found

    def give(self, key: Hashable, conn: Conn) -> None:
        """Keep *conn* for the next `take` of *key* (or close it if enough are kept)."""
        if not self._usable(conn):
            self._close(conn)
            return
        now = time.monotonic()
        with self._lock:
            self._after_fork()
            expired = self._expired(now)
            idle = self._idle.setdefault(key, [])
            kept = len(idle) < PER_KEY
            if kept:
                idle.append((now, conn))
        for old in expired if kept else [*expired, conn]:
            self._close(old)

    def _expired(self, now: float) -> list[Conn]:
        """Take out the connections idle too long, under every key (a target that went
        away leaves none behind); the caller closes them outside the lock."""
        out = []
        for key in list(self._idle):
            fresh = [(t, c) for t, c in self._idle[key] if now - t < IDLE_SECONDS]
            out += [c for t, c in self._idle[key] if now - t >= IDLE_SECONDS]
            if fresh:
                self._idle[key] = fresh
            else:
                del self._idle[key]
        return out

    def clear(self) -> None:
        """Close every idle connection."""
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for _, conn in conns:
                self._close(conn)

    def _after_fork(self) -> None:
        # A child must not use (nor close) the sockets it inherited from its parent.
        if os.getpid() != self._pid:
            self._idle, self._pid = {}, os.getpid()
