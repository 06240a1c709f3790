"""What happens when a step fails: find out which value the target accepts, abandon the
pending value when the current one is proven to work, back off, alert after repeated failures.
"""

from __future__ import annotations

import logging
import secrets
from datetime import datetime, timedelta
from typing import Any

from keyturn.db.models import Version, utcnow
from keyturn.domain.errors import KeyturnError, TargetRateLimited
from keyturn.domain.model import RotationStatus, Secret, Step, VersionState
from keyturn.engine.record import Record, account
from keyturn.engine.strategies import Recovery, RotationStrategy
from keyturn.notify import outbox, texts

log = logging.getLogger("keyturn.engine")

MAX_BACKOFF = timedelta(hours=6)
ALERT_AFTER = 3
_random = secrets.SystemRandom()


def backoff(base_seconds: int, attempts: int) -> timedelta:
    """Exponential, with +-50% jitter so that failing rotations do not retry in step."""
    delay = base_seconds * 2 ** max(attempts - 1, 0) * _random.uniform(0.5, 1.5)
    return min(timedelta(seconds=delay), MAX_BACKOFF)


def abandon(strategy: RotationStrategy, pending: Version, value: Secret) -> dict[str, str]:
    """Tell the target a pending value is given up (an issued key is revoked); for the audit
    entry, which key was revoked, or left (for the next create to remove) and why."""
    try:
        if not strategy.abandon(account(pending), value):
            return {}
    except Exception as exc:  # the next create removes it as an orphan
        why = exc.message if isinstance(exc, KeyturnError) else type(exc).__name__
        return {"key_left": pending.key_id or "", "key_left_because": why}
    return {"revoked_key": pending.key_id or ""}


def _resume_at(step: Step, state: Recovery) -> Step:
    """Where a failed rotation resumes: a failed set/test goes back to set, unless the new
    value turned out to work (then test it again)."""
    if step not in (Step.SET, Step.TEST):
        return step
    return Step.TEST if state == Recovery.PENDING else Step.SET


class Failures(Record):
    """The failure path of a rotation run."""

    # -- failures --------------------------------------------------------------------------

    def _recover(self) -> Recovery:
        """After a failed set/test: which value does the target accept now?"""
        with self._read() as session:
            pending, current = self._values(session)
            cur = self.app.vault.reveal(current) if current else None
            new = self.app.vault.reveal(pending) if pending else None
        if current is None or cur is None or pending is None or new is None:
            return Recovery.UNKNOWN
        try:
            return self.strategy.recover(
                account(current), cur, account(pending), new, keep_new=True
            )
        except Exception:  # a target error or a plugin bug: either way we cannot tell
            return Recovery.UNKNOWN

    def _abandon(self) -> dict[str, str]:
        """A target that still accepts the pending secret about to be abandoned (an app token
        MailU issued) is told now, not at the next rotation's reconciliation."""
        with self._read() as session:
            pending, _ = self._values(session)
            if pending is None:
                return {}
            value = self.app.vault.reveal(pending)
        return abandon(self.strategy, pending, value)

    def _fail(self, step: Step, exc: KeyturnError, resume: Step | None = None) -> None:
        """Record the failure of *step* (resumed at *resume*: the last committed step, when
        the failed one was chained behind it)."""
        self._play = None  # a resumed run reads the values again
        log.warning(
            "rotation %s of %s failed at %s: %s", self.id, self.credential_id, step, exc.message
        )
        state = self._recover() if step in (Step.SET, Step.TEST) else Recovery.UNKNOWN
        revoked = self._abandon() if state == Recovery.CURRENT else {}
        now = utcnow()
        with self._write() as session:
            rot, cred = self._load(session)
            pending, _ = self._values(session)
            attempts = rot.attempts + 1
            values: dict[str, Any] = {"attempts": attempts, "error": f"{step}: {exc.message}"}
            resume_at = resume or _resume_at(step, state)
            abandoned = pending if state == Recovery.CURRENT else None
            if abandoned is not None:  # proven safe: the target still accepts the current value
                abandoned.state, abandoned.retired_at = VersionState.FAILED, now
                session.flush()
                resume_at, values["new_version"] = Step.CREATE, None
            gave_up = attempts >= self.app.settings.max_attempts
            values.update(self._retry_values(exc, attempts, now, gave_up))
            self._advance(session, resume_at, **values)
            next_at: datetime | None = values["next_attempt_at"]
            self._audit(
                session,
                "rotation.failed" if gave_up else "rotation.retry",
                cred,
                rot,
                outcome="error",
                step=str(step),
                attempt=attempts,
                error=exc.message,
                abandoned_version=abandoned.number if abandoned else None,
                **revoked,
                next_attempt_at=next_at.isoformat() if next_at else None,
            )
            if gave_up or attempts >= ALERT_AFTER:
                message = texts.rotation_failed(
                    cred.id, cred.tenant_id, rot.id, str(step), exc.message, attempts, next_at
                )
                outbox.enqueue(session, **message.fields())

    def _failed(self, step: Step, exc: KeyturnError) -> None:
        """A step failed: drop what the chain held (a local step may have half-written it),
        then record the failure at the last committed step, in a transaction of its own
        (after what outside steps before it recorded without a session: they did happen)."""
        self._rollback(keep_unsessioned=True)
        self._fail(step, exc, resume=self.step if self.step != step else None)
        self._commit()

    def _retry_values(
        self, exc: KeyturnError, attempts: int, now: datetime, gave_up: bool
    ) -> dict[str, Any]:
        if gave_up:
            return {
                "status": RotationStatus.FAILED,
                "finished_at": now,
                "lease_owner": None,
                "lease_expires_at": None,
                "next_attempt_at": None,
            }
        delay = backoff(self.app.settings.retry_base_seconds, attempts)
        if isinstance(exc, TargetRateLimited):  # the target said how long to wait
            delay = max(delay, exc.retry_after)
        return {"status": RotationStatus.RETRYING, "next_attempt_at": now + delay}
