"""Cron slots: each check schedule fires at slots (e.g. 02:00 UTC daily); a slot's pass runs
once, whatever the number of workers, because claiming it inserts a unique row. A slot with
no row is a missed run: the next worker to start runs it (the most recent one only)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from croniter import croniter
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from keyturn.app import Keyturn
from keyturn.db.models import Credential, SchedulerRun, utcnow
from keyturn.domain.errors import PolicyInvalid


def _check(expr: str) -> str:
    if not croniter.is_valid(expr):
        raise PolicyInvalid(f'invalid cron expression {expr!r}; e.g. "0 2 * * *"')
    return expr


def last_slot(expr: str, at: datetime) -> datetime:
    """The latest fire time at or before *at*."""
    base = (at + timedelta(seconds=1)).astimezone(UTC).replace(tzinfo=None)
    slot: datetime = croniter(_check(expr), base).get_prev(datetime)
    return slot.replace(tzinfo=UTC)


def next_slot(expr: str, after: datetime) -> datetime:
    """The first fire time strictly after *after*."""
    slot: datetime = croniter(_check(expr), after.astimezone(UTC).replace(tzinfo=None)).get_next(
        datetime
    )
    return slot.replace(tzinfo=UTC)


def first_slot_at_or_after(expr: str, at: datetime) -> datetime:
    return next_slot(expr, at - timedelta(seconds=1))


def schedules(app: Keyturn) -> list[str]:
    with app.db.read() as session:
        found = session.execute(select(Credential.schedule).distinct()).scalars().all()
    return sorted(set(found))


def open_slots(app: Keyturn, at: datetime) -> list[tuple[str, datetime]]:
    """(schedule, slot) pairs whose latest slot at *at* has not run yet."""
    out = []
    with app.db.read() as session:
        for expr in schedules(app):
            slot = last_slot(expr, at)
            done = session.execute(
                select(SchedulerRun.id).where(
                    SchedulerRun.schedule == expr, SchedulerRun.slot == slot
                )
            ).first()
            if done is None:
                out.append((expr, slot))
    return out


def claim(app: Keyturn, expr: str, slot: datetime, worker: str) -> int | None:
    """Record that *worker* runs this slot; None if another worker already does."""
    try:
        with app.db.write() as session:
            run = SchedulerRun(schedule=expr, slot=slot, worker=worker, started_at=utcnow())
            session.add(run)
            session.flush()
            return run.id
    except IntegrityError:
        return None


def finish(app: Keyturn, run_id: int, summary: dict[str, object]) -> None:
    with app.db.write() as session:
        run = session.get(SchedulerRun, run_id)
        assert run is not None
        run.finished_at, run.summary = utcnow(), summary
