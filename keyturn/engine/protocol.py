"""The rotation protocol: create -> set -> test -> publish -> finish -> wait -> revoke -> done.

Each step is a method that does its outside work (idempotently: the plugins first ask "is it
already so?") and then commits the next step in one fenced transaction together with its
audit entry. A crash anywhere leaves the pointer at a step whose replay is harmless, and the
pending value is always in the database before any target or store hears of it.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from keyturn.app import Keyturn
from keyturn.audit import log as audit
from keyturn.crypto.secrets import generate_password
from keyturn.db import repo
from keyturn.db.models import (
    Credential,
    Rotation,
    TargetRow,
    Version,
    utcnow,
)
from keyturn.domain.errors import (
    ConfigInvalid,
    KeyturnError,
    PluginError,
    ReferenceUnresolved,
    RotationInProgress,
    TargetError,
    TargetRateLimited,
)
from keyturn.domain.model import (
    ACTIVE_STATUSES,
    RotationStatus,
    Secret,
    Step,
    Strategy,
    Trigger,
    VersionState,
)
from keyturn.domain.policy import Policy as EffectivePolicy
from keyturn.engine import lease
from keyturn.engine.faults import checkpoint
from keyturn.notify import outbox
from keyturn.runtime import open_target
from keyturn.targets.base import Account, Target

log = logging.getLogger("keyturn.engine")

MAX_BACKOFF = timedelta(hours=6)
# What a step may raise that is recorded on the rotation (error, attempts, backoff) instead of
# escaping the loop: a plugin's settings the target turns out not to support (mysql `dual` on
# MariaDB) or a reference the worker cannot resolve (admin_password = "env:..." unset) would
# otherwise leave the rotation `running` with no error and a pending value.
STEP_FAILURES = (PluginError, ConfigInvalid, ReferenceUnresolved)
# How often a waiting rotation looks again at its consumers.
WAIT_POLL = timedelta(minutes=1)
ALERT_AFTER = 3
_random = secrets.SystemRandom()


@dataclass(frozen=True)
class Outcome:
    rotation_id: int
    credential_id: str
    status: str
    step: str
    new_version: int | None
    error: str | None
    next_attempt_at: datetime | None
    wait_until: datetime | None


def backoff(base_seconds: int, attempts: int) -> timedelta:
    """Exponential, with +-50% jitter so that failing rotations do not retry in step."""
    delay = base_seconds * 2 ** max(attempts - 1, 0) * _random.uniform(0.5, 1.5)
    return min(timedelta(seconds=delay), MAX_BACKOFF)


def validity_columns(target: Target, value: Secret) -> dict[str, datetime | None]:
    """A value's own validity (certificates), for the expiry-driven schedule."""
    valid_from, expires_at = type(target).validity(value) or (None, None)
    return {"valid_from": valid_from, "expires_at": expires_at}


def account(version: Version) -> Account:
    return Account(version.username or "", version.key_id)


class Runner:
    """Runs one rotation under a lease until it is done, waiting, retrying or failed."""

    def __init__(
        self, app: Keyturn, rotation_id: int, *, force: bool = False, owner: str | None = None
    ) -> None:
        """*owner* names the lease holder (default: the process's worker id)."""
        self.app = app
        self.db = app.db
        self.id = rotation_id
        self.owner = owner or app.worker_id
        self.force = force
        self._target: Target | None = None

    # -- plumbing --------------------------------------------------------------------------

    @property
    def target(self) -> Target:
        if self._target is None:
            with self.db.read() as session:
                cred = repo.get_credential(session, self.credential_id)
                row = session.get(TargetRow, cred.target or "")
                if row is None:
                    raise PluginError(f"{cred.id} has no target; declare one in the inventory")
            self._target = open_target(self.app, row, cred.strategy)
        return self._target

    def _load(self, session: Session) -> tuple[Rotation, Credential]:
        rot = session.get(Rotation, self.id)
        assert rot is not None
        return rot, repo.get_credential(session, rot.credential_id)

    def _advance(self, session: Session, step: Step, **values: Any) -> None:
        """Move the pointer, fenced by our lease; everything else in *session* commits with it."""
        values.setdefault("status", RotationStatus.RUNNING)
        session.flush()
        result = session.execute(
            update(Rotation)
            .where(Rotation.id == self.id, Rotation.lease_owner == self.owner)
            .values(step=step, updated_at=utcnow(), **values)
            .execution_options(synchronize_session=False)
        )
        if not result.rowcount:  # type: ignore[attr-defined]
            raise lease.LeaseLost()
        session.expire_all()

    def _audit(
        self,
        session: Session,
        action: str,
        cred: Credential,
        rot: Rotation,
        outcome: str = "ok",
        fingerprint: str | None = None,
        **details: Any,
    ) -> None:
        audit.append(
            session,
            actor=rot.actor if rot.trigger != Trigger.SCHEDULE else "scheduler",
            action=action,
            outcome=outcome,
            credential_id=cred.id,
            tenant_id=cred.tenant_id,
            fingerprint=fingerprint,
            reason=rot.reason or None,
            details={"rotation": rot.id, "trigger": rot.trigger, "worker": self.owner, **details},
        )

    def _step_done(
        self, step: Step, action: str, version: Version, outcome: str = "ok", **details: Any
    ) -> None:
        """Commit the pointer to *step* with the audit entry of the step just done."""
        with self.db.write() as session:
            rot, cred = self._load(session)
            self._advance(session, step)
            self._audit(
                session,
                action,
                cred,
                rot,
                outcome=outcome,
                fingerprint=version.fingerprint,
                version=version.number,
                **details,
            )

    def _policy(self, session: Session, cred: Credential) -> EffectivePolicy:
        return repo.policy_for(session, cred, type(self.target).password_rules)

    def _values(self, session: Session) -> tuple[Version | None, Version | None]:
        return (
            repo.version_in_state(session, self.credential_id, VersionState.PENDING),
            repo.version_in_state(session, self.credential_id, VersionState.CURRENT),
        )

    # -- the loop --------------------------------------------------------------------------

    def run(self) -> Outcome:
        ttl = timedelta(seconds=self.app.settings.lease_seconds)
        with self.db.read() as session:
            rot = session.get(Rotation, self.id)
            if rot is None:
                raise RotationInProgress(f"no rotation {self.id}")
            self.credential_id = rot.credential_id
            if rot.status in ACTIVE_STATUSES and not self._due(rot):
                return self.outcome()
        if not lease.claim(self.db, self.id, self.owner, ttl):
            with self.db.read() as session:
                rot = session.get(Rotation, self.id)
                assert rot is not None
                if rot.status not in ACTIVE_STATUSES:
                    return self.outcome()
                raise RotationInProgress(
                    f"rotation {self.id} of {rot.credential_id} is being run by "
                    f"{rot.lease_owner} (lease until {rot.lease_expires_at:%H:%M:%SZ})"
                )
        heartbeat = lease.Heartbeat(self.db, self.id, self.owner, ttl)
        heartbeat.start()
        try:
            self._loop(heartbeat)
        finally:
            heartbeat.stop()
            lease.release(self.db, self.id, self.owner)
            if self._target is not None:
                self._target.close()
        return self.outcome()

    def _due(self, rot: Rotation) -> bool:
        if self.force or rot.status == RotationStatus.RUNNING:
            return True
        if rot.status == RotationStatus.WAITING:
            return True  # the wait step decides
        return rot.next_attempt_at is None or rot.next_attempt_at <= utcnow()

    def _loop(self, heartbeat: lease.Heartbeat) -> None:
        steps = {
            Step.CREATE: self._create,
            Step.SET: self._set,
            Step.TEST: self._test,
            Step.PUBLISH: self._publish,
            Step.FINISH: self._finish,
            Step.WAIT: self._wait,
            Step.REVOKE: self._revoke,
        }
        while True:
            with self.db.read() as session:
                rot = session.get(Rotation, self.id)
                assert rot is not None
                step, status = Step(rot.step), RotationStatus(rot.status)
            if status not in ACTIVE_STATUSES or step == Step.DONE:
                return
            if heartbeat.lost.is_set():
                raise lease.LeaseLost()
            checkpoint(f"{step}:before")
            try:
                keep_going = steps[step]()
            except lease.LeaseLost:
                raise
            except STEP_FAILURES as exc:
                self._fail(step, exc)
                return
            except KeyturnError:
                raise  # keyturn's own database is unavailable: the lease runs out, resume later
            except Exception as exc:  # a bug in a plugin: a failure like any other, backed off
                log.error(
                    "rotation %s of %s: unexpected %s at %s",
                    self.id,
                    self.credential_id,
                    exc.__class__.__name__,
                    step,
                    exc_info=log.isEnabledFor(logging.DEBUG),
                )
                self._fail(
                    step,
                    PluginError(
                        f"the target plugin failed unexpectedly ({exc.__class__.__name__}); "
                        "see the worker's log with -v"
                    ),
                )
                return
            if not keep_going:
                return
            checkpoint(f"{step}:after")

    # -- steps -----------------------------------------------------------------------------

    def _create(self) -> bool:
        target = self.target
        with self.db.write() as session:
            rot, cred = self._load(session)
            pending, current = self._values(session)
            if pending is not None:
                # A value stored by this rotation (or by an abandoned one, which may already
                # be on the target): reuse it, never generate a second one.
                self._advance(
                    session,
                    Step.SET,
                    new_version=pending.number,
                    old_version=current.number if current else None,
                )
                self._audit(
                    session,
                    "rotation.create",
                    cred,
                    rot,
                    fingerprint=pending.fingerprint,
                    version=pending.number,
                    reused=True,
                )
                return True
            login = self._next_login(cred, current)
            number = repo.last_version_number(session, cred.id) + 1
            if target.issues_secrets:
                value, key_id = self._issue(session, cred, rot, login)
            else:
                # A target whose secrets are not passwords (e.g. encryption keys) makes them.
                make = getattr(target, "generate", None) or generate_password
                value, key_id = make(self._policy(session, cred).password), None
            ciphertext, data_key = self.app.vault.seal(
                session, cred.tenant_id, cred.id, number, value
            )
            fp = self.app.vault.fingerprint(value)
            session.add(
                Version(
                    credential_id=cred.id,
                    number=number,
                    state=VersionState.PENDING,
                    username=login,
                    key_id=key_id,
                    ciphertext=ciphertext,
                    data_key_id=data_key,
                    fingerprint=fp,
                    **validity_columns(target, value),
                )
            )
            session.flush()
            self._advance(
                session,
                Step.SET,
                new_version=number,
                old_version=current.number if current else None,
            )
            self._audit(
                session,
                "rotation.create",
                cred,
                rot,
                fingerprint=fp,
                version=number,
                username=login,
            )
            checkpoint("create:effect")
        return True

    def _next_login(self, cred: Credential, current: Version | None) -> str:
        logins = list(cred.usernames) or [""]
        if cred.strategy == Strategy.ALTERNATING and current is not None:
            return str(logins[1] if current.username == logins[0] else logins[0])
        return str(logins[0])

    def _issue(
        self, session: Session, cred: Credential, rot: Rotation, login: str
    ) -> tuple[Secret, str]:
        """Providers that make the secret: remove orphans of a crashed run, then create."""
        known = {
            v.key_id
            for v in repo.versions(session, cred.id)
            if v.state in (VersionState.CURRENT, VersionState.PREVIOUS)
        }
        for key_id in self.target.list_active(Account(login)):
            if key_id not in known:
                self.target.revoke(Account(login, key_id), Secret(""))
                self._audit(session, "rotation.orphan-removed", cred, rot, key_id=key_id)
        issued = self.target.create(Account(login))
        checkpoint("create:issued")
        return issued.value, issued.key_id

    def _set(self) -> bool:
        with self.db.read() as session:
            pending, current = self._values(session)
            assert pending is not None, "set without a pending version"
            new = self.app.vault.reveal(pending)
            old = self.app.vault.reveal(current) if current else None
            acct = account(pending)
        if not self.target.issues_secrets:
            self.target.set(acct, new, old)
        checkpoint("set:effect")
        self._step_done(Step.TEST, "rotation.set", pending, username=acct.username)
        return True

    def _test(self) -> bool:
        with self.db.read() as session:
            pending, current = self._values(session)
            assert pending is not None
            new = self.app.vault.reveal(pending)
            cred = repo.get_credential(session, self.credential_id)
            old = self.app.vault.reveal(current) if current else None
        if not self.target.test(account(pending), new):
            raise _Refused(
                f"{cred.id}: the target refused the new value for "
                f"{pending.username or 'its account'}"
            )
        old_rejected = None
        if (
            cred.strategy == Strategy.SINGLE
            and current is not None
            and old is not None
            and current.username == pending.username
            and not self.target.issues_secrets
        ):
            # seed 004: make sure the old value is really refused.
            old_rejected = not self.target.test(account(current), old)
        checkpoint("test:effect")
        self._step_done(
            Step.PUBLISH,
            "rotation.test",
            pending,
            outcome="ok" if old_rejected is not False else "warning",
            new_accepted=True,
            old_rejected=old_rejected,
        )
        return True

    def _publish(self) -> bool:
        """Every store of the credential gets the pending value (keyturn.engine.publish)."""
        from keyturn.engine import publish

        return publish.run(self)

    def _finish(self) -> bool:
        """Promote in one transaction: previous->retired, current->previous, pending->current."""
        now = utcnow()
        with self.db.write() as session:
            rot, cred = self._load(session)
            pending, current = self._values(session)
            assert pending is not None
            ids = {"credential_id": cred.id}
            for old_state, new_state, extra in (
                (VersionState.PREVIOUS, VersionState.RETIRED, {"retired_at": now}),
                (VersionState.CURRENT, VersionState.PREVIOUS, {}),
                (VersionState.PENDING, VersionState.CURRENT, {"activated_at": now}),
            ):
                session.execute(
                    update(Version)
                    .where(
                        Version.credential_id == ids["credential_id"], Version.state == old_state
                    )
                    .values(state=new_state, **extra)
                    .execution_options(synchronize_session=False)
                )
            checkpoint("finish:effect")
            immediate = (
                rot.trigger in (Trigger.EMERGENCY, Trigger.LEAK) or cred.strategy == Strategy.SINGLE
            )
            grace = timedelta(0) if immediate else self._policy(session, cred).grace
            cred.sync_status, cred.verified_at = "in-sync", now
            session.flush()
            session.expire_all()  # the promotion above bypassed the identity map
            repo.refresh_due(session, cred)
            self._advance(session, Step.WAIT, wait_until=now + grace)
            self._audit(
                session,
                "rotation.promote",
                cred,
                rot,
                fingerprint=pending.fingerprint,
                version=pending.number,
                previous=current.number if current else None,
            )
            outbox.enqueue(
                session,
                kind="rotated",
                dedupe_key=f"rotated:{cred.id}:{pending.number}",
                subject=f"[keyturn] {cred.id} rotated",
                body=(
                    f"{cred.id} (tenant {cred.tenant_id}) was rotated to version "
                    f"{pending.number} ({rot.trigger}, by {rot.actor}). "
                    f"Fingerprint {pending.fingerprint}."
                ),
                credential_id=cred.id,
                tenant_id=cred.tenant_id,
                data={"version": pending.number, "trigger": rot.trigger},
            )
        return True

    def _wait(self) -> bool:
        now = utcnow()
        with self.db.write() as session:
            rot, cred = self._load(session)
            previous = repo.version_in_state(session, cred.id, VersionState.PREVIOUS)
            consumers = repo.consumers(session, cred.id)
            lagging = [
                c.name for c in consumers if c.version is None or c.version < (rot.new_version or 0)
            ]
            grace_over = rot.wait_until is None or now >= rot.wait_until
            if previous is not None and not grace_over and (lagging or not consumers):
                first = rot.status != RotationStatus.WAITING
                assert rot.wait_until is not None
                self._advance(
                    session,
                    Step.WAIT,
                    status=RotationStatus.WAITING,
                    next_attempt_at=min(rot.wait_until, now + WAIT_POLL),
                )
                if first:
                    self._audit(
                        session,
                        "rotation.wait",
                        cred,
                        rot,
                        waiting_for=lagging,
                        until=rot.wait_until.isoformat() if rot.wait_until else None,
                    )
                return False
            if previous is not None and lagging:
                outbox.enqueue(
                    session,
                    kind="consumers-lagging",
                    dedupe_key=f"lagging:{cred.id}:{rot.new_version}",
                    subject=f"[keyturn] {cred.id}: consumers did not move before revoke",
                    body=(
                        f"The grace period of {cred.id} ended; these consumers had not "
                        f"reported version {rot.new_version}: {', '.join(lagging)}."
                    ),
                    credential_id=cred.id,
                    tenant_id=cred.tenant_id,
                    data={"lagging": lagging},
                )
            self._advance(session, Step.REVOKE)
            self._audit(
                session,
                "rotation.wait-over",
                cred,
                rot,
                outcome="warning" if lagging and previous is not None else "ok",
                lagging=lagging if previous is not None else [],
            )
        return True

    def _revoke(self) -> bool:
        with self.db.read() as session:
            cred = repo.get_credential(session, self.credential_id)
            previous = repo.version_in_state(session, cred.id, VersionState.PREVIOUS)
            old = self.app.vault.reveal(previous) if previous else None
        rejected = None
        if previous is not None and old is not None:
            if cred.strategy != Strategy.SINGLE or self.target.issues_secrets:
                self.target.revoke(account(previous), old)
            rejected = not self.target.test(account(previous), old)
            if not rejected:
                raise _Refused(f"{cred.id}: the old value is still accepted after revoke")
        checkpoint("revoke:effect")
        now = utcnow()
        with self.db.write() as session:
            rot, cred = self._load(session)
            session.execute(
                update(Version)
                .where(Version.credential_id == cred.id, Version.state == VersionState.PREVIOUS)
                .values(state=VersionState.RETIRED, retired_at=now)
                .execution_options(synchronize_session=False)
            )
            self._advance(
                session, Step.DONE, status=RotationStatus.DONE, finished_at=now, error=None
            )
            self._audit(
                session,
                "rotation.revoke",
                cred,
                rot,
                fingerprint=previous.fingerprint if previous else None,
                version=previous.number if previous else None,
                old_rejected=rejected,
            )
            self._audit(session, "rotation.done", cred, rot, version=rot.new_version)
        return True

    # -- failures --------------------------------------------------------------------------

    def _recover(self) -> str:
        """After a failed set/test: which value does the target accept now?

        "current" (the old value still works: the pending one may be abandoned), "pending"
        (the new value took effect after all), or "unknown" (the target cannot be reached, or
        accepts neither and could not be restored: keep everything and retry later).
        """
        with self.db.read() as session:
            pending, current = self._values(session)
            cur = self.app.vault.reveal(current) if current else None
            new = self.app.vault.reveal(pending) if pending else None
        if current is None or cur is None or pending is None or new is None:
            return "unknown"
        try:
            if self.target.test(account(current), cur):
                return "current"
            if self.target.test(account(pending), new):
                return "pending"
            # Neither works (e.g. set took effect but the new value will not log in): put the
            # old value back, so that consumers keep working.
            self.target.set(account(current), cur, new)
            return "current" if self.target.test(account(current), cur) else "unknown"
        except Exception:  # a target error or a plugin bug: either way we cannot tell:
            return "unknown"

    def _revoke_abandoned(self) -> dict[str, str]:
        """An issuing target still accepts the pending secret about to be abandoned (an app
        token MailU issued): revoke it now, not at the next rotation's reconciliation."""
        if not self.target.issues_secrets:
            return {}
        with self.db.read() as session:
            pending, _ = self._values(session)
            value = self.app.vault.reveal(pending) if pending else None
        if pending is None or pending.key_id is None or value is None:
            return {}
        try:
            self.target.revoke(account(pending), value)
        except Exception as exc:  # the next create removes it as an orphan
            why = exc.message if isinstance(exc, KeyturnError) else type(exc).__name__
            return {"key_left": pending.key_id, "key_left_because": why}
        return {"revoked_key": pending.key_id}

    def _fail(self, step: Step, exc: KeyturnError) -> None:
        error = f"{step}: {exc.message}"
        log.warning(
            "rotation %s of %s failed at %s: %s", self.id, self.credential_id, step, exc.message
        )
        state = self._recover() if step in (Step.SET, Step.TEST) else "unknown"
        revoked = self._revoke_abandoned() if state == "current" else {}
        now = utcnow()
        with self.db.write() as session:
            rot, cred = self._load(session)
            pending, _ = self._values(session)
            attempts = rot.attempts + 1
            resume_at = step
            if step in (Step.SET, Step.TEST):
                resume_at = Step.TEST if state == "pending" else Step.SET
            values: dict[str, Any] = {"attempts": attempts, "error": error}
            if state == "current" and pending is not None:
                # Proven safe: the target still accepts the current value.
                pending.state = VersionState.FAILED
                pending.retired_at = now
                session.flush()
                resume_at = Step.CREATE
                values["new_version"] = None
            gave_up = attempts >= self.app.settings.max_attempts
            if gave_up:
                values.update(
                    status=RotationStatus.FAILED,
                    finished_at=now,
                    lease_owner=None,
                    lease_expires_at=None,
                    next_attempt_at=None,
                )
            else:
                delay = backoff(self.app.settings.retry_base_seconds, attempts)
                if isinstance(exc, TargetRateLimited):  # the target said how long to wait
                    delay = max(delay, exc.retry_after)
                values.update(status=RotationStatus.RETRYING, next_attempt_at=now + delay)
            self._advance(session, resume_at, **values)
            self._audit(
                session,
                "rotation.failed" if gave_up else "rotation.retry",
                cred,
                rot,
                outcome="error",
                step=str(step),
                attempt=attempts,
                error=exc.message,
                abandoned_version=pending.number if state == "current" and pending else None,
                **revoked,
                next_attempt_at=values.get("next_attempt_at").isoformat()  # type: ignore[union-attr]
                if values.get("next_attempt_at")
                else None,
            )
            if gave_up or attempts >= ALERT_AFTER:
                next_at = values.get("next_attempt_at")
                outbox.enqueue(
                    session,
                    kind="rotation-failed",
                    dedupe_key=f"failed:{rot.id}:{attempts}",
                    subject=f"[keyturn] rotation of {cred.id} failed ({attempts} attempts)",
                    body=(
                        f"Rotation {rot.id} of {cred.id} failed at step {step}: "
                        f"{exc.message}. "
                        + (
                            "keyturn gave up; the current value still works where the target "
                            "was reachable. Run `keyturn rotate` again once fixed."
                            if gave_up
                            else f"Next attempt at {next_at:%Y-%m-%d %H:%M UTC}."
                        )
                    ),
                    credential_id=cred.id,
                    tenant_id=cred.tenant_id,
                    data={"rotation": rot.id, "attempts": attempts, "step": str(step)},
                )

    def outcome(self) -> Outcome:
        with self.db.read() as session:
            rot = session.get(Rotation, self.id)
            assert rot is not None
            return Outcome(
                rot.id,
                rot.credential_id,
                rot.status,
                rot.step,
                rot.new_version,
                rot.error,
                rot.next_attempt_at,
                rot.wait_until,
            )


class _Refused(TargetError):
    """The target refused a value."""

    code = "target_rejected"
