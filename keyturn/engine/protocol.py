"""The rotation protocol: create -> set -> test -> publish -> finish -> wait -> revoke -> done.

Each step does its outside work (idempotently: plugins first ask "is it already so?"), then
moves the pointer, fenced by the lease, with its audit entry (local steps share a commit:
keyturn.engine.record). A crash leaves the pointer at a step whose replay is harmless, and the
pending value is always in the database before any target or store hears of it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from keyturn.db import repo, rotation
from keyturn.db.models import Credential, Rotation, Version, utcnow
from keyturn.domain.errors import (
    ConfigInvalid,
    KeyturnError,
    PluginError,
    ReferenceUnresolved,
    RotationInProgress,
    TargetError,
)
from keyturn.domain.model import ACTIVE_STATUSES, RotationStatus, Step, Trigger, VersionState
from keyturn.engine import lease
from keyturn.engine.failure import Failures
from keyturn.engine.faults import checkpoint
from keyturn.engine.record import Outcome, Value, account, move
from keyturn.engine.strategies import Single
from keyturn.notify import outbox, texts
from keyturn.targets.base import Account

__all__ = ["Outcome", "Runner", "account"]

log = logging.getLogger("keyturn.engine")

# What a step may raise that is recorded on the rotation (error, attempts, backoff) instead of
# escaping the loop: a plugin's settings the target turns out not to support (mysql `dual` on
# MariaDB) or a reference the worker cannot resolve (admin_password = "env:..." unset) would
# otherwise leave the rotation `running` with no error and a pending value.
STEP_FAILURES = (PluginError, ConfigInvalid, ReferenceUnresolved)
# How often a waiting rotation looks again at its consumers.
WAIT_POLL = timedelta(minutes=1)


class Runner(Failures):
    """Runs one rotation under a lease until it is done, waiting, retrying or failed."""

    # -- the loop --------------------------------------------------------------------------

    def run(self, begin: Callable[[Session], int] | None = None) -> Outcome:
        """Run the rotation until it is done, waiting, retrying or failed. *begin* records
        a new rotation in the first transaction (its id; the lease taken with it)."""
        ttl = timedelta(seconds=self.app.settings.lease_seconds)
        if not self.fresh:  # is it this rotation's turn? (a read: no write lock to find out)
            with self.db.read() as session:
                rot = session.get(Rotation, self.id)
                if rot is None:
                    raise RotationInProgress(f"no rotation {self.id}")
                if rot.status in ACTIVE_STATUSES and not self._due(rot):
                    return self.outcome()
        self._chaining = True
        try:
            with self._write() as session:  # the claim opens the chain: it commits with create
                if begin is not None:
                    self.id, claimed = begin(session), True  # recorded with our lease
                else:
                    claimed = lease.claim_in(session, self.id, self.owner, ttl)
                if claimed:
                    rot, cred = self._load(session)
                    self.credential_id = rot.credential_id
                    self.step, self.status = Step(rot.step), RotationStatus(rot.status)
                    self._committed = (self.step, self.status)
                    self._stores = tuple(cred.stores)
                    self._open_target()  # its row read in this transaction, not one more
            if begin is not None:
                # A rotation asked for is recorded before anything else happens: a crash
                # from here on leaves one that `resume` finishes.
                self._commit()
        except BaseException:
            self._rollback()
            raise
        if not claimed:
            self._rollback()
            self._not_claimed()
            return self.outcome()
        heartbeat = lease.Heartbeat(self.db, self.id, self.owner, ttl)
        heartbeat.start()
        try:
            self._loop(heartbeat)
            self._release()  # with the last steps
            with rotation.turn(self.db.engine):  # the audit entries go in: until the commit
                with self._write() as session:
                    self._flush_pointer(session)
                    outcome = self._outcome(session)
                self._commit()
        except BaseException:
            self._rollback()
            lease.release(self.db, self.id, self.owner)
            raise
        finally:
            heartbeat.stop()
            if self._target is not None:
                self._target.close()
        return outcome

    def _outside(self, step: Step) -> bool:
        """Does *step* talk to a target or a store? The chain commits before it does."""
        if step == Step.CREATE:
            return type(self.target).issues_secrets  # the target issues the new value
        if step == Step.PUBLISH:
            return bool(self._stores)
        if step == Step.REVOKE:
            return not self._refused_at_test
        return step in (Step.SET, Step.TEST)

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
        while self.status in ACTIVE_STATUSES and self.step != Step.DONE:
            step = self.step
            if heartbeat.lost.is_set():
                raise lease.LeaseLost()
            if self._outside(step):
                self._commit()
            checkpoint(f"{step}:before")
            try:
                keep_going = steps[step]()
            except lease.LeaseLost:
                raise
            except STEP_FAILURES as exc:
                self._failed(step, exc)
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
                self._failed(
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
        strategy = self.strategy
        with self._write() as session:
            rot, cred = self._load(session)
            pending, current = self._values(session)
            if pending is not None:
                # A value stored by this rotation (or by an abandoned one, which may already
                # be on the target): reuse it, never generate a second one.
                self._created(session, rot, cred, pending, current, reused=True)
                return True
            if type(self.target).issues_secrets:  # before it makes a key beside the others
                self._revoke_leftover()
            login = strategy.next_login(list(cred.usernames), current.username if current else None)
            known = (
                {  # the keys an issuing target may hold for us (others are orphans)
                    v.key_id
                    for v in repo.versions(session, cred.id)
                    if v.state in (VersionState.CURRENT, VersionState.PREVIOUS)
                }
                if type(self.target).issues_secrets
                else set()
            )
            value, key_id = strategy.new_value(
                Account(login),
                self._policy(session, cred).password,
                known,
                lambda key: self._audit(session, "rotation.orphan-removed", cred, rot, key_id=key),
            )
            pending = self.app.vault.new_version(
                session,
                cred,
                value,
                state=VersionState.PENDING,
                username=login,
                key_id=key_id,
                validity=type(self.target).validity(value),
                last=self._last_number(),
            )
            self._created(session, rot, cred, pending, current, username=login)
            checkpoint("create:effect")
        return True

    def _created(
        self,
        session: Session,
        rot: Rotation,
        cred: Credential,
        pending: Version,
        current: Version | None,
        **details: Any,
    ) -> None:
        self._advance(
            session,
            Step.SET,
            new_version=pending.number,
            old_version=current.number if current else None,
        )
        self._play = (
            Value.of(self.app, pending),
            Value.of(self.app, current) if current else None,
        )
        self._audit(
            session,
            "rotation.create",
            cred,
            rot,
            fingerprint=pending.fingerprint,
            version=pending.number,
            **details,
        )

    def _set(self) -> bool:
        pending, current = self._in_play()
        self._revoke_leftover()
        self.strategy.set(pending.account, pending.secret, current.secret if current else None)
        checkpoint("set:effect")
        user = pending.username or ""  # not held: the step tells consumers `next` is on it
        self._step_done(Step.TEST, "rotation.set", pending, hold=False, username=user)
        return True

    def _test(self) -> bool:
        pending, current = self._in_play()
        old = None  # seed 004: the old value must be refused (test_pair may try both at once)
        if self.strategy.old_refused_at_test and current and current.username == pending.username:
            old = (current.account, current.secret)
        accepted, old_accepted = self.target.test_pair((pending.account, pending.secret), old)
        if not accepted:
            raise _Refused(
                f"{self.credential_id}: the target refused the new value for "
                f"{pending.username or 'its account'}"
            )
        old_rejected = None if old_accepted is None else not old_accepted
        if old_rejected is not None:
            # Under `single` that is all revoke would check (nothing is left to disable):
            # this run's revoke does not log in with the old value a second time.
            self._refused_at_test = old_rejected and isinstance(self.strategy, Single)
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
        with self._write() as session:
            rot, cred = self._load(session)
            pending, current = self._in_play()  # read in this transaction when not known
            for old_state, new_state, extra in (
                (VersionState.PREVIOUS, VersionState.RETIRED, {"retired_at": now}),
                (VersionState.CURRENT, VersionState.PREVIOUS, {}),
                (VersionState.PENDING, VersionState.CURRENT, {"activated_at": now}),
            ):
                move(session, cred.id, old_state, new_state, **extra)
            checkpoint("finish:effect")
            for loaded in list(session.identity_map.values()):
                if isinstance(loaded, Version):  # the promotion above bypassed them
                    session.expire(loaded)
            self._previous = (current,)
            immediate = self.strategy.immediate or rot.trigger in (Trigger.EMERGENCY, Trigger.LEAK)
            policy = self._policy(session, cred)
            grace = timedelta(0) if immediate else policy.grace
            self._promoted(session, cred, policy, pending, now)
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
            message = texts.rotated(
                cred.id, cred.tenant_id, pending.number, rot.trigger, rot.actor, pending.fingerprint
            )
            outbox.enqueue(session, **message.fields(), recipients=self._recipients(policy))
        return True

    def _wait(self) -> bool:
        now = utcnow()
        with self._write() as session:
            rot, cred = self._load(session)
            previous = self._previous_of(session)
            consumers, new = repo.consumer_versions(session, cred.id), rot.new_version or 0
            lagging = [name for name, version in consumers if version is None or version < new]
            grace_over = rot.wait_until is None or now >= rot.wait_until
            if previous is not None and not grace_over and (lagging or not consumers):
                self._keep_waiting(session, rot, cred, lagging, now)
                return False
            if previous is not None and lagging:
                message = texts.consumers_lagging(cred.id, cred.tenant_id, rot.new_version, lagging)
                outbox.enqueue(session, **message.fields())
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

    def _keep_waiting(
        self, session: Session, rot: Rotation, cred: Credential, lagging: list[str], now: datetime
    ) -> None:
        first = rot.status != RotationStatus.WAITING
        assert rot.wait_until is not None
        until = rot.wait_until
        self._advance(
            session,
            Step.WAIT,
            status=RotationStatus.WAITING,
            next_attempt_at=min(until, now + WAIT_POLL),
        )
        if first:
            self._audit(
                session, "rotation.wait", cred, rot, waiting_for=lagging, until=until.isoformat()
            )

    def _revoke(self) -> bool:
        with self._read() as session:
            previous = self._previous_of(session)
            old = previous.secret if previous else None
        rejected = None
        proven = self._refused_at_test  # `single`: this run's test saw the old value refused
        if previous is not None and old is not None and not proven:
            self.strategy.revoke(account(previous), old)
            rejected = not self.target.test(account(previous), old)
            if not rejected:
                raise _Refused(
                    f"{self.credential_id}: the old value is still accepted after revoke"
                )
        checkpoint("revoke:effect")
        now = utcnow()
        with self._write() as session:
            rot, cred = self._load(session)
            move(session, cred.id, VersionState.PREVIOUS, VersionState.RETIRED, retired_at=now)
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
                old_rejected=True if proven and previous is not None else rejected,
                **({"proven_at": "test"} if proven and previous is not None else {}),
            )
            self._audit(session, "rotation.done", cred, rot, version=rot.new_version)
        return True


class _Refused(TargetError):
    """The target refused a value."""

    code = "target_rejected"
