"""Claiming and running rotations, many workers at once.

Claiming is one statement plus an update, as procrastinate's fetch_job: select runnable
rotations whose lease is free or expired, FOR UPDATE SKIP LOCKED (PostgreSQL; SQLite's write
transactions are exclusive anyway), and write our lease on them in the same transaction.
A worker that dies keeps its leases only until they expire; then another takes them over and
the protocol resumes at the recorded step.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update

from keyturn import plugins
from keyturn.app import Keyturn
from keyturn.db.models import Credential, Rotation, TargetRow, utcnow
from keyturn.domain.errors import Conflict, KeyturnError
from keyturn.domain.model import ACTIVE_STATUSES
from keyturn.engine.protocol import Outcome, Runner
from keyturn.notify import deliver
from keyturn.scheduler import slots
from keyturn.scheduler.checkpoints import Exporter
from keyturn.scheduler.passes import PassResult, run_pass

log = logging.getLogger("keyturn.worker")


def claim_rotations(app: Keyturn, owner: str, limit: int, now: datetime | None = None) -> list[int]:
    now = now or utcnow()
    ttl = timedelta(seconds=app.settings.lease_seconds)
    with app.db.write() as session:
        ids = (
            session.execute(
                select(Rotation.id)
                .where(
                    Rotation.status.in_(ACTIVE_STATUSES),
                    or_(Rotation.next_attempt_at.is_(None), Rotation.next_attempt_at <= now),
                    or_(Rotation.lease_owner.is_(None), Rotation.lease_expires_at < now),
                )
                .order_by(Rotation.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            .scalars()
            .all()
        )
        if ids:
            session.execute(
                update(Rotation)
                .where(Rotation.id.in_(ids))
                .values(lease_owner=owner, lease_expires_at=now + ttl)
                .execution_options(synchronize_session=False)
            )
        return list(ids)


class RateLimiter:
    """At most `rate` rotation starts per second against one target (plugin's rate_limit)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next: dict[str, float] = {}

    def wait(self, target: str, rate: float | None) -> None:
        if not rate:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next.get(target, now))
            self._next[target] = start + 1 / rate
        if start > now:
            time.sleep(start - now)


@dataclass(frozen=True)
class Lane:
    """The target a rotation runs against: its name, starts per second, rotations at once."""

    target: str
    rate: float | None
    limit: int


class Flights:
    """The rotations a worker holds: queued (claimed, waiting for room on their target) and
    in flight (running in the pool)."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.waiting: deque[tuple[int, Lane]] = deque()
        self.running: dict[Future[Outcome | KeyturnError], Lane] = {}
        self.per_target: Counter[str] = Counter()

    def room(self) -> int:
        """How many more rotations to claim: the pool's free places not already queued."""
        return max(self.concurrency - len(self.running) - len(self.waiting), 0)

    def queue(self, rotation_id: int, lane: Lane) -> None:
        self.waiting.append((rotation_id, lane))

    def ready(self) -> list[tuple[int, Lane]]:
        """The queued rotations that may start now (their target has room), in order."""
        out: list[tuple[int, Lane]] = []
        kept: deque[tuple[int, Lane]] = deque()
        started: Counter[str] = Counter()
        while self.waiting:
            rotation_id, lane = self.waiting.popleft()
            busy = self.per_target[lane.target] + started[lane.target]
            if len(self.running) + len(out) < self.concurrency and busy < lane.limit:
                out.append((rotation_id, lane))
                started[lane.target] += 1
            else:
                kept.append((rotation_id, lane))
        self.waiting = kept
        return out

    def fly(self, future: Future[Outcome | KeyturnError], lane: Lane) -> None:
        self.running[future] = lane
        self.per_target[lane.target] += 1

    def landed(self) -> list[Outcome | KeyturnError]:
        """Wait for at least one rotation in flight to end; what ended."""
        done, _ = wait(self.running, return_when=FIRST_COMPLETED)
        for future in done:
            self.per_target[self.running.pop(future).target] -= 1
        return [future.result() for future in done]


@dataclass
class TickResult:
    passes: list[PassResult] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    delivered: int = 0
    undelivered: int = 0
    checkpoint: int | None = None  # the audit entry a checkpoint was exported of


class Worker:
    def __init__(self, app: Keyturn, concurrency: int | None = None) -> None:
        self.app = app
        self.owner = app.worker_id
        self.concurrency = max(1, concurrency or app.settings.concurrency)
        self.limiter = RateLimiter()
        self.checkpoints = Exporter(app)

    def _target_of(self, rotation_id: int) -> Lane:
        """The target a rotation talks to, and what its plugin allows at once."""
        with self.app.db.read() as session:
            row = session.execute(
                select(TargetRow.name, TargetRow.type)
                .join(Credential, Credential.target == TargetRow.name)
                .join(Rotation, Rotation.credential_id == Credential.id)
                .where(Rotation.id == rotation_id)
            ).first()
        if row is None:
            return Lane("", None, self.concurrency)
        try:
            plugin = plugins.load_target(row.type)
        except KeyturnError:
            return Lane(row.name, None, self.concurrency)
        limit = min(plugin.max_in_flight or self.concurrency, self.concurrency)
        return Lane(row.name, plugin.rate_limit, limit)

    def _run_one(self, rotation_id: int, lane: Lane) -> Outcome | KeyturnError:
        self.limiter.wait(lane.target, lane.rate)
        try:
            return Runner(self.app, rotation_id).run()
        except Conflict as exc:
            return exc
        except KeyturnError as exc:
            log.warning("rotation %s: %s", rotation_id, exc.message)
            return exc
        except Exception as exc:  # a bug in a plugin: this rotation waits, the worker goes on
            # Only the class: a driver's message could hold a value. The lease runs out and
            # the rotation is resumed (by this worker or another) at its recorded step.
            log.exception(
                "rotation %s failed unexpectedly (%s)",
                rotation_id,
                exc.__class__.__name__,
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
            return KeyturnError(f"rotation {rotation_id}: unexpected {exc.__class__.__name__}")

    def run_claimed(
        self,
        result: TickResult,
        on_done: Callable[[], None] | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        """Claim and run rotations until none is runnable (or *stop* is set): up to
        `concurrency` in flight, no more on one target than its plugin's `max_in_flight`;
        a finished rotation's place is taken at once, not when its whole batch is done."""
        flights = Flights(self.concurrency)
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="rotation") as pool:
            while True:
                if not (stop and stop.is_set()) and flights.room():
                    for rotation_id in claim_rotations(self.app, self.owner, flights.room()):
                        flights.queue(rotation_id, self._target_of(rotation_id))
                for rotation_id, lane in flights.ready():
                    flights.fly(pool.submit(self._run_one, rotation_id, lane), lane)
                if not flights.running:
                    return
                for item in flights.landed():
                    if isinstance(item, Outcome):
                        result.outcomes.append(item)
                    else:
                        result.errors.append(item.message)
                    if on_done:
                        on_done()

    def tick(
        self,
        at: datetime | None = None,
        stop: threading.Event | None = None,
        on_pass: Callable[[PassResult], None] | None = None,
        on_done: Callable[[], None] | None = None,
    ) -> TickResult:
        """Open slots' passes, then every runnable rotation, then the outbox, then an audit
        checkpoint if one is due."""
        at = at or utcnow()
        result = TickResult()
        for expr, slot in slots.open_slots(self.app, at):
            run_id = slots.claim(self.app, expr, slot, self.owner)
            if run_id is None:
                continue
            done = run_pass(self.app, at, expr)
            slots.finish(self.app, run_id, done.summary())
            result.passes.append(done)
            if on_pass:
                on_pass(done)
        self.run_claimed(result, on_done, stop)
        drained = deliver.drain(self.app)
        result.delivered, result.undelivered = len(drained.sent), len(drained.failed)
        try:
            exported = self.checkpoints.run()
        except KeyturnError as exc:
            log.warning("audit checkpoint not exported: %s", exc.message)
            result.errors.append(f"audit checkpoint not exported: {exc.message}")
        else:
            result.checkpoint = exported.seq if exported else None
        return result

    def sleep_seconds(self) -> float:
        """Until the next slot of any schedule, or the poll interval, whichever is sooner."""
        now = utcnow()
        poll = float(self.app.settings.poll_seconds)
        upcoming = [slots.next_slot(expr, now) for expr in slots.schedules(self.app)]
        if upcoming:
            poll = min(poll, max((min(upcoming) - now).total_seconds(), 0.0) + 0.5)
        return poll

    def run_forever(
        self, stop: threading.Event, on_tick: Callable[[TickResult], None] | None = None
    ) -> None:
        """Tick until *stop* is set; *on_tick* hears of each tick (to say what it did)."""
        log.info("worker %s started (concurrency %d)", self.owner, self.concurrency)
        while not stop.is_set():
            try:
                result = self.tick(stop=stop)
                if on_tick is not None:
                    on_tick(result)
            except KeyturnError as exc:  # e.g. the database is briefly down: try again later
                log.warning("worker tick failed: %s", exc.message)
            except Exception as exc:  # never let one bad tick stop the schedule
                log.error(
                    "worker tick failed unexpectedly (%s)",
                    exc.__class__.__name__,
                    exc_info=log.isEnabledFor(logging.DEBUG),
                )
            stop.wait(self.sleep_seconds())
        log.info("worker %s stopped", self.owner)
