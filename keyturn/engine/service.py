"""What the interfaces call: start, run, resume, abort and verify rotations."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from keyturn.app import Keyturn
from keyturn.audit import log as audit
from keyturn.db import direct, repo
from keyturn.db.models import Credential, Rotation, TargetRow, Version, utcnow
from keyturn.db.reads import PAST_SET
from keyturn.domain.errors import (
    Conflict,
    KeyturnError,
    NotFound,
    RotationInProgress,
    TargetError,
    UsageError,
)
from keyturn.domain.ids import validate_id
from keyturn.domain.model import ACTIVE_STATUSES, RotationStatus, Step, Trigger, VersionState
from keyturn.engine import publish, strategies
from keyturn.engine.failure import abandon
from keyturn.engine.protocol import Outcome, Runner
from keyturn.engine.record import account
from keyturn.engine.strategies import Recovery
from keyturn.notify import outbox, texts
from keyturn.runtime import open_target

MAX_REASON = 2000


def _in_progress(rot: Rotation) -> RotationInProgress:
    return RotationInProgress(
        f"a rotation of {rot.credential_id} is already in progress (rotation {rot.id}, step "
        f"{rot.step}, {rot.status}); run `keyturn resume {rot.credential_id}` or "
        f"`keyturn abort {rot.credential_id} --reason ...`"
    )


def _reason(trigger: Trigger, reason: str) -> str:
    reason = reason.strip()
    if trigger != Trigger.SCHEDULE and not reason:
        raise UsageError("a reason is required: it goes into the audit log")
    if len(reason) > MAX_REASON:
        raise UsageError(f"the reason is longer than {MAX_REASON} characters")
    return reason


def start(
    app: Keyturn,
    credential_id: str,
    *,
    trigger: Trigger,
    actor: str,
    reason: str = "",
    lease_owner: str | None = None,
) -> int:
    """Record a new rotation; the database refuses a second active one for the credential.

    *lease_owner*: who runs it now, holding its lease from the start, so that no worker
    claims it between this commit and the run."""
    validate_id(credential_id)
    reason = _reason(trigger, reason)
    with app.db.write() as session:
        return _record(session, app, credential_id, trigger, actor, reason, lease_owner)


def _record(
    session: Session,
    app: Keyturn,
    credential_id: str,
    trigger: Trigger,
    actor: str,
    reason: str,
    lease_owner: str | None,
) -> int:
    """start()'s work inside the caller's transaction: the new rotation's id."""
    return _recorded(session, app, credential_id, trigger, actor, reason, lease_owner).rotation.id


@dataclass(frozen=True)
class _Recorded:
    """A rotation just recorded, with the rows read to record it (its runner reuses them)."""

    rotation: Rotation
    credential: Credential
    versions: dict[VersionState, Version]
    # Its policy, tenant and target rows, read with the credential (the runner holds them).
    rows: tuple[object, ...] = ()
    # The credential's last version number (None: not known), for the create step.
    last: int | None = None


def _recorded(
    session: Session,
    app: Keyturn,
    credential_id: str,
    trigger: Trigger,
    actor: str,
    reason: str,
    lease_owner: str | None,
    append: Callable[..., object] = audit.append,
) -> _Recorded:
    """_record, with the rows it read and made (its audit entry through *append*)."""
    cred, rows, active = repo.locked_credential_with(session, credential_id)
    if not cred.target:
        raise UsageError(
            f"{credential_id} has no target: keyturn cannot change it; "
            "declare `target = ...` in the inventory"
        )
    # Asked first (the INSERT stays the guard against a race): an INSERT meeting the active
    # rotation's row mid-update waits holding this credential's lock, a PostgreSQL deadlock.
    if active is not None:
        raise _in_progress(active)
    found, last = repo.versions_and_last(
        session, credential_id, (VersionState.PENDING, VersionState.CURRENT, VersionState.PREVIOUS)
    )
    current = found.get(VersionState.CURRENT)
    now = utcnow()
    values = {
        "credential_id": credential_id,
        "trigger": trigger,
        "actor": actor,
        "reason": reason,
        "strategy": cred.strategy,
        "step": Step.CREATE,
        "status": RotationStatus.RUNNING,
        "attempts": 0,
        "old_version": current.number if current else None,
        "lease_owner": lease_owner,
        "lease_expires_at": now + timedelta(seconds=app.settings.lease_seconds)
        if lease_owner
        else None,
        "started_at": now,
        "updated_at": now,
        **dict.fromkeys(("error", "new_version", "next_attempt_at", "wait_until", "finished_at")),
    }
    rot = _insert_rotation(session, app, values)
    append(
        session,
        actor=actor,
        action="rotation.start",
        reason=reason or None,
        credential_id=credential_id,
        tenant_id=cred.tenant_id,
        details={"rotation": rot.id, "trigger": trigger, "strategy": cred.strategy},
    )
    return _Recorded(rot, cred, found, rows, last)


def _insert_rotation(session: Session, app: Keyturn, values: dict[str, Any]) -> Rotation:
    """The rotation's row (keyturn.db.direct.add: one INSERT, the row joining the session
    as loaded). The database refusing a second active rotation is RotationInProgress."""
    try:
        return direct.add(session, Rotation, values)
    except IntegrityError as exc:  # another process won the race for this credential
        with app.db.read() as other:
            active = repo.active_rotation(other, values["credential_id"])
        if active is not None:
            raise _in_progress(active) from exc
        raise RotationInProgress() from exc


def rotate(
    app: Keyturn, credential_id: str, *, trigger: Trigger, actor: str, reason: str = ""
) -> Outcome:
    """Start a rotation and run it now (its lease held from the start: no worker takes it
    in between)."""
    validate_id(credential_id)
    reason = _reason(trigger, reason)
    runner = Runner(app, 0, fresh=True)

    def begin(session: Session) -> int:
        made = _recorded(
            session, app, credential_id, trigger, actor, reason, runner.owner, runner.defer
        )
        runner.seed(made.rotation, made.credential, made.versions, made.rows, made.last)
        return made.rotation.id

    return runner.run(begin=begin)


def run(app: Keyturn, rotation_id: int) -> Outcome:
    """Run a rotation started by a request to `keyturn serve` (the API, the dashboard).

    Its lease holder is a name of its own, not the process's worker id: `serve
    --with-worker` runs a worker in the same process, and a worker that claimed the rotation
    first must not find the request's runner passing as itself (a lease is re-entrant for
    its owner), or both would run the same steps at once. The loser gets
    RotationInProgress and the worker carries on. (The CLI keeps the worker id: a `keyturn
    resume` with the same KEYTURN_WORKER_ID takes a crashed run's lease back at once.)"""
    return Runner(app, rotation_id, owner=f"{app.worker_id}/{secrets.token_hex(4)}").run()


def active_rotations(app: Keyturn, credential_id: str | None = None) -> Sequence[Rotation]:
    with app.db.read() as session:
        query = select(Rotation).where(Rotation.status.in_(ACTIVE_STATUSES))
        if credential_id:
            repo.get_credential(session, credential_id)
            query = query.where(Rotation.credential_id == credential_id)
        return session.execute(query.order_by(Rotation.id)).scalars().all()


def resume(
    app: Keyturn, credential_id: str | None = None, *, force: bool = False
) -> list[Outcome | KeyturnError]:
    """Run every active rotation (of one credential, or all) whose turn it is."""
    results: list[Outcome | KeyturnError] = []
    for rot in active_rotations(app, credential_id):
        try:
            results.append(Runner(app, rot.id, force=force).run())
        except Conflict as exc:
            results.append(exc)
    return results


def abort(app: Keyturn, credential_id: str, *, actor: str, reason: str) -> int:
    """Stop a rotation. Before promotion the target must be proven (or made) to accept the
    current value again, and the pending value is marked failed; after promotion the previous
    value stays accepted (nothing is revoked) until the next rotation revokes it before it
    changes the target (`Record._revoke_leftover`)."""
    if not reason.strip():
        raise UsageError("a reason is required: it goes into the audit log")
    active = active_rotations(app, credential_id)
    if not active:
        raise NotFound(f"{credential_id} has no rotation in progress")
    rot = active[0]
    if (
        rot.lease_owner
        and rot.lease_expires_at
        and rot.lease_expires_at > utcnow()
        and rot.lease_owner != app.worker_id
    ):
        raise RotationInProgress(
            f"rotation {rot.id} is being run by {rot.lease_owner}; abort it when its lease expires"
        )
    promoted = Step(rot.step) in (Step.WAIT, Step.REVOKE, Step.DONE)
    issued: dict[str, str] = {}
    if not promoted and rot.new_version is not None:
        try:
            issued = _restore_current(app, credential_id)
        except TargetError as exc:  # stopping now would hand out a value the target refuses
            raise type(exc)(
                f"{credential_id}: cannot abort until the target takes the current value back "
                f"({exc.message}); fix that and abort again, or `keyturn resume` to finish"
            ) from exc
        # Stores that took the pending value get the current one back (it is what works).
        issued.update(publish.restore(app, credential_id, actor))
    now = utcnow()
    with app.db.write() as session:
        cred = repo.get_credential(session, credential_id)
        pending = repo.version_in_state(session, credential_id, VersionState.PENDING)
        if pending is not None and not promoted:
            pending.state, pending.retired_at = VersionState.FAILED, now
        session.execute(
            update(Rotation)
            .where(Rotation.id == rot.id)
            .values(
                status=RotationStatus.ABORTED,
                finished_at=now,
                lease_owner=None,
                lease_expires_at=None,
                error=f"aborted by {actor}",
            )
        )
        audit.append(
            session,
            actor=actor,
            action="rotation.abort",
            reason=reason.strip(),
            credential_id=credential_id,
            tenant_id=cred.tenant_id,
            details={"rotation": rot.id, "step": rot.step, "promoted": promoted, **issued},
        )
    return rot.id


def _restore_current(app: Keyturn, credential_id: str) -> dict[str, str]:
    """Before an abort: the target must accept the current value again (the one
    restore-current routine, `RotationStrategy.recover`), and a secret it issued for the
    pending version is revoked. Says which issued key was revoked, or left and why."""
    with app.db.read() as session:
        cred = repo.get_credential(session, credential_id)
        current = repo.version_in_state(session, credential_id, VersionState.CURRENT)
        pending = repo.version_in_state(session, credential_id, VersionState.PENDING)
        row = session.get(TargetRow, cred.target or "")
    if pending is None or row is None:
        return {}
    with open_target(app, row) as target:
        strategy = strategies.for_target(target, cred.strategy)
        new = app.vault.reveal(pending)
        if current is not None:
            cur = app.vault.reveal(current)
            recovered = strategy.recover(
                account(current), cur, account(pending), new, keep_new=False
            )
            if recovered != Recovery.CURRENT:
                raise Conflict(
                    f"{credential_id}: the target no longer accepts the current value "
                    "and could not be restored; run `keyturn resume` instead"
                )
        return abandon(strategy, pending, new)


@dataclass(frozen=True)
class VerifyResult:
    credential_id: str
    status: str  # in-sync | out-of-sync | unreachable | no-value | store-drift
    detail: str = ""
    stores: tuple[publish.StoreStatus, ...] = ()


def verify(
    app: Keyturn, credential_id: str | None = None, actor: str = "cli"
) -> list[VerifyResult]:
    """Log in with each current value: is the target still in sync with keyturn?"""
    with app.db.read() as session:
        if credential_id:
            creds = [repo.get_credential(session, credential_id)]
        else:
            creds = list(
                session.execute(
                    select(Credential).where(Credential.target.is_not(None)).order_by(Credential.id)
                ).scalars()
            )
    return [_verify_one(app, cred, actor) for cred in creds]


def _test_target(
    app: Keyturn, cred: Credential, row: TargetRow, current: Version
) -> tuple[str, str]:
    detail = ""
    try:
        with open_target(app, row) as target:
            ok = target.test(account(current), app.vault.reveal(current))
            # A target may also report drift it can see (postgres: objects outside the owner
            # role of an alternating pair).
            findings = getattr(target, "findings", None)
            if ok and callable(findings):
                logins = list(cred.usernames) or [current.username or ""]
                found = findings(logins, account(current), app.vault.reveal(current))
                detail = "; ".join(found)
        return ("in-sync" if ok else "out-of-sync"), detail
    except TargetError as exc:
        return "unreachable", exc.message


def _refused(cred: Credential, current: Version, rot: Rotation | None) -> str:
    """Why the target refuses the current value, and what to do about it."""
    said = f"the target refuses version {current.number}, the current value"
    if rot is not None and rot.new_version is not None and rot.step in PAST_SET:
        return (
            f"{said}: rotation {rot.id} has put version {rot.new_version} on it (it is at "
            f"{rot.step}, {rot.status}); `keyturn resume {cred.id}` finishes it"
        )
    if rot is not None and rot.new_version is not None and rot.step == Step.SET:
        return (
            f"{said}: rotation {rot.id} may have put version {rot.new_version} on it (its set "
            f"failed); `keyturn resume {cred.id}` tries again"
        )
    return (
        f"{said}: was it changed outside keyturn? `keyturn rotate {cred.id} --reason ...` "
        "gives it a value keyturn holds"
    )


def _verify_one(app: Keyturn, cred: Credential, actor: str) -> VerifyResult:
    with app.db.read() as session:
        current = repo.version_in_state(session, cred.id, VersionState.CURRENT)
        row = session.get(TargetRow, cred.target or "")
        rot = repo.active_rotation(session, cred.id)
    if current is None or (row is None and not cred.stores):
        return VerifyResult(cred.id, "no-value", "no current value or no target")
    status, detail = _test_target(app, cred, row, current) if row else ("in-sync", "")
    if status == "out-of-sync" and not detail:
        detail = _refused(cred, current, rot)
    stores = tuple(publish.check(app, cred)) if cred.stores else ()
    status, detail = publish.combine(status, detail, stores)
    now = utcnow()
    with app.db.write() as session:
        fresh = repo.get_credential(session, cred.id)
        fresh.sync_status, fresh.verified_at = status, now
        audit.append(
            session,
            actor=actor,
            action="credential.verify",
            outcome="ok" if status == "in-sync" else "error",
            credential_id=cred.id,
            tenant_id=cred.tenant_id,
            fingerprint=current.fingerprint,
            details={"status": status, "version": current.number}
            | ({"findings": detail} if detail else {}),
        )
        if status == "out-of-sync":
            message = texts.out_of_sync(cred.id, cred.tenant_id, current.number, now)
            outbox.enqueue(session, **message.fields())
        elif status == "store-drift":
            message = texts.store_drift(cred.id, cred.tenant_id, current.number, detail, now)
            outbox.enqueue(session, **message.fields())
    return VerifyResult(cred.id, status, detail, stores)


__all__ = ["TargetError", "abort", "resume", "rotate", "run", "start", "verify"]


def report_consumer(
    app: Keyturn, credential_id: str, name: str, version: int, *, actor: str | None = None
) -> None:
    """A consumer says which version it uses; the wait step revokes once all have moved.

    *actor* names who reported (e.g. an API token); by default the consumer itself.
    `keyturn.engine.consumers.report` takes the consumer's identity and fallbacks too."""
    from keyturn.engine import consumers

    consumers.report(app, credential_id, name, version, actor=actor)
