"""Leases on rotations: who runs one, until when. A dead worker's lease expires and another
worker takes the rotation over; a live worker renews its lease from a heartbeat thread.

Every write the engine makes to a rotation is fenced by the lease (`WHERE lease_owner = me`),
so a worker that lost its lease (paused too long, then woke up) cannot move the pointer.
"""

from __future__ import annotations

import os
import threading
import time
from datetime import timedelta

from sqlalchemy import or_, update
from sqlalchemy.orm import Session

from keyturn.db.engine import Database
from keyturn.db.models import Rotation, utcnow
from keyturn.domain.errors import Conflict, KeyturnError
from keyturn.domain.model import ACTIVE_STATUSES


class LeaseLost(Conflict):
    """This worker lost its lease on the rotation; another worker has taken it over."""


def claim(db: Database, rotation_id: int, owner: str, ttl: timedelta) -> bool:
    with db.write() as session:
        return claim_in(session, rotation_id, owner, ttl)


def claim_in(session: Session, rotation_id: int, owner: str, ttl: timedelta) -> bool:
    """Take the lease inside the caller's transaction: free, expired, or already ours."""
    now = utcnow()
    result = session.execute(
        update(Rotation)
        .where(
            Rotation.id == rotation_id,
            Rotation.status.in_(ACTIVE_STATUSES),
            or_(
                Rotation.lease_owner.is_(None),
                Rotation.lease_expires_at < now,
                Rotation.lease_owner == owner,
            ),
        )
        .values(lease_owner=owner, lease_expires_at=now + ttl)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def renew(db: Database, rotation_id: int, owner: str, ttl: timedelta) -> bool:
    with db.write() as session:
        result = session.execute(
            update(Rotation)
            .where(Rotation.id == rotation_id, Rotation.lease_owner == owner)
            .values(lease_expires_at=utcnow() + ttl)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


def release(db: Database, rotation_id: int, owner: str) -> None:
    with db.write() as session:
        release_in(session, rotation_id, owner)


def release_in(session: Session, rotation_id: int, owner: str) -> None:
    session.execute(
        update(Rotation)
        .where(Rotation.id == rotation_id, Rotation.lease_owner == owner)
        .values(lease_owner=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )


class Heartbeat:
    """A lease held by a running rotation, renewed every third of its length (at least every
    half second) until stopped; `lost` is set when a renewal finds the lease taken over.

    One renewer thread serves every lease of the process: a rotation starts no thread."""

    def __init__(self, db: Database, rotation_id: int, owner: str, ttl: timedelta) -> None:
        self.db, self.rotation_id, self.owner, self.ttl = db, rotation_id, owner, ttl
        self.interval = max(ttl.total_seconds() / 3, 0.5)
        self.lost = threading.Event()
        self.due = 0.0

    def start(self) -> None:
        _RENEWER.add(self)

    def stop(self) -> None:
        _RENEWER.remove(self)

    def beat(self) -> bool:
        """Renew once; False when the lease is gone (someone else holds it now)."""
        try:
            if not renew(self.db, self.rotation_id, self.owner, self.ttl):
                self.lost.set()
                return False
        except KeyturnError:
            pass  # the database is briefly unavailable: the fence protects us
        return True


class _Renewer:
    """The process's lease renewer: one daemon thread, started with the first lease."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        """Empty, with no thread: at start, and in a forked child (whose copy of the lock may
        have been held by the parent's renewer at the fork)."""
        self._held: set[Heartbeat] = set()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def add(self, beat: Heartbeat) -> None:
        with self._changed:
            beat.due = time.monotonic() + beat.interval
            self._held.add(beat)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, daemon=True, name="leases")
                self._thread.start()
            self._changed.notify()

    def remove(self, beat: Heartbeat) -> None:
        with self._changed:
            self._held.discard(beat)

    def _run(self) -> None:
        while True:
            with self._changed:
                now = time.monotonic()
                due = [b for b in self._held if b.due <= now]
                if not due:
                    soonest = min((b.due for b in self._held), default=now + 60)
                    self._changed.wait(soonest - now)
                    continue
                for beat in due:
                    beat.due = now + beat.interval
            for beat in due:  # outside the lock: a renewal waits on the database
                if beat in self._held and not beat.beat():
                    self.remove(beat)


_RENEWER = _Renewer()
os.register_at_fork(after_in_child=_RENEWER._reset)
