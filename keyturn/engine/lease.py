"""Leases on rotations: who runs one, until when. A dead worker's lease expires and another
worker takes the rotation over; a live worker renews its lease from a heartbeat thread.

Every write the engine makes to a rotation is fenced by the lease (`WHERE lease_owner = me`),
so a worker that lost its lease (paused too long, then woke up) cannot move the pointer.
"""

from __future__ import annotations

import threading
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


class Heartbeat(threading.Thread):
    """Renews a lease every third of its length until stopped; notes when it is lost."""

    def __init__(self, db: Database, rotation_id: int, owner: str, ttl: timedelta) -> None:
        super().__init__(daemon=True, name=f"lease-{rotation_id}")
        self.db, self.rotation_id, self.owner, self.ttl = db, rotation_id, owner, ttl
        self.lost = threading.Event()
        self._stop_event = threading.Event()

    def run(self) -> None:
        interval = max(self.ttl.total_seconds() / 3, 0.5)
        while not self._stop_event.wait(interval):
            try:
                if not renew(self.db, self.rotation_id, self.owner, self.ttl):
                    self.lost.set()
                    return
            except KeyturnError:
                continue  # the database is briefly unavailable: the fence protects us

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)
