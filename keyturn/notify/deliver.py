"""Draining the outbox: claim due notices, send each through its channel, retry failures.

A notice is claimed by pushing its next attempt a few minutes ahead in the claiming
transaction (FOR UPDATE SKIP LOCKED on PostgreSQL), so two workers never send it at once and
a worker that dies while sending leaves it to be retried. Nothing is dropped: failures back
off up to an hour and keep being retried.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import or_, select

from keyturn.app import Keyturn
from keyturn.db.models import Channel, Notice, utcnow
from keyturn.domain.errors import KeyturnError
from keyturn.notify.channels import send
from keyturn.runtime import resolver

log = logging.getLogger("keyturn.notify")
CLAIM_FOR = timedelta(minutes=5)
MAX_DELAY = timedelta(hours=1)


@dataclass
class DrainResult:
    sent: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)


def _channel_for(channels: dict[str, Channel], recipient: str) -> Channel | None:
    if recipient.startswith("webhook:"):
        return channels.get(recipient.removeprefix("webhook:"))
    return next((c for c in channels.values() if c.type == "email"), None)


def claim(app: Keyturn, now: datetime, limit: int) -> list[int]:
    with app.db.write() as session:
        rows = (
            session.execute(
                select(Notice)
                .where(
                    Notice.status.in_(("pending", "retrying")),
                    or_(Notice.next_attempt_at.is_(None), Notice.next_attempt_at <= now),
                )
                .order_by(Notice.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            .scalars()
            .all()
        )
        for row in rows:
            row.next_attempt_at = now + CLAIM_FOR
        return [row.id for row in rows]


def drain(app: Keyturn, now: datetime | None = None, limit: int = 200) -> DrainResult:
    now = now or utcnow()
    result = DrainResult()
    with app.db.read() as session:
        channels = {c.name: c for c in session.execute(select(Channel)).scalars()}
    for notice_id in claim(app, now, limit):
        with app.db.read() as session:
            notice = session.get(Notice, notice_id)
            assert notice is not None
        channel = _channel_for(channels, notice.recipient)
        error = None
        try:
            if channel is None:
                raise KeyturnError(
                    f"no channel delivers to {notice.recipient!r}; declare one "
                    "under [channels] in the inventory"
                )
            send(channel, notice, resolver(app, channel.base_dir))
        except KeyturnError as exc:
            error = exc.message
        with app.db.write() as session:
            row = session.get(Notice, notice_id)
            assert row is not None
            row.attempts += 1
            if error is None:
                row.status, row.sent_at, row.last_error = "sent", utcnow(), None
                result.sent.append(notice_id)
            else:
                delay = min(timedelta(seconds=30 * 2 ** (row.attempts - 1)), MAX_DELAY)
                row.status, row.last_error = "retrying", error
                row.next_attempt_at = utcnow() + delay
                result.failed.append(notice_id)
                log.warning("notice %s to %s not delivered: %s", notice_id, row.recipient, error)
    return result
