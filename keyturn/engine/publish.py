"""The publish step, and the store side of `keyturn verify`.

At `publish` the pending value (committed before any target heard of it) goes to every store
of the credential, with the previous value where the strategy keeps one. Each store gets the
*mark* keyturn recorded after its last write there (`store_marks`), its check-and-set token;
the new mark is committed as soon as the store took the value, so a replay after a crash
finds its own write and changes nothing.

A store that is down or refuses does not fail the rotation: it waits at `publish`
(status `retrying`, exponential backoff, never giving up: the target has the new value, and
the old one stays accepted until `revoke`, which comes after). After `ALERT_AFTER` failed
attempts an alert goes out. A store holding a value keyturn did not write (drift) is never
overwritten: the conflict is recorded on the store's mark, in the audit log and in an alert,
and the rotation waits until someone looks (`keyturn verify --repair ID`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from keyturn.app import Keyturn
from keyturn.audit import log as audit
from keyturn.db import repo
from keyturn.db.models import Credential, StoreMark, StoreRow, Version, utcnow
from keyturn.domain.errors import ConfigInvalid, PluginError, PublishFailed, ReferenceUnresolved
from keyturn.domain.model import RotationStatus, Step, VersionState
from keyturn.engine.faults import checkpoint
from keyturn.notify import outbox
from keyturn.runtime import open_store
from keyturn.stores.base import Held, Numbered, PublishView, Store, StoreConflict

if TYPE_CHECKING:
    from keyturn.engine.protocol import Runner

log = logging.getLogger("keyturn.engine")

ALERT_AFTER = 3
# What a store may raise that keeps the rotation waiting at publish (retried, never given up).
STORE_FAILURES = (PublishFailed, PluginError, ConfigInvalid, ReferenceUnresolved)


@dataclass(frozen=True)
class StoreStatus:
    """One store of a credential as `verify` found it."""

    store: str
    status: str  # in-sync | drift | unreachable | missing | unpublished
    version: int | None = None
    detail: str = ""


def numbered(app: Keyturn, version: Version | None) -> Numbered | None:
    if version is None:
        return None
    return Numbered(version.number, app.vault.reveal(version), version.fingerprint)


def _stores(session: Session, cred: Credential) -> list[StoreRow]:
    rows = [session.get(StoreRow, name) for name in cred.stores]
    return [row for row in rows if row is not None]


def _mark(session: Session, store: str, credential_id: str) -> StoreMark:
    found = session.get(StoreMark, (store, credential_id))
    if found is None:
        found = StoreMark(store=store, credential_id=credential_id, status="in-sync")
        session.add(found)
    return found


def _open(app: Keyturn, row: StoreRow) -> Store:
    store = open_store(app, row)
    store.context.name = row.name
    return store


def run(runner: Runner) -> bool:
    """The protocol's publish step: True when every store holds the pending value."""
    app = runner.app
    pending, current = runner._in_play()
    if runner._chaining and not runner._stores:  # as the run read the credential at its start
        checkpoint("publish:effect")
        runner._step_done(Step.FINISH, "rotation.publish", pending, stores=[])
        return True
    with runner._read() as session:  # the chain's session when there is no store to call
        cred = repo.get_credential(session, runner.credential_id)
        rows = _stores(session, cred)
        marks = {r.name: m.mark for r in rows if (m := session.get(StoreMark, (r.name, cred.id)))}
    if rows:
        runner._commit()  # nothing keyturn holds open while a store is called
    view = PublishView(
        cred.id,
        cred.tenant_id,
        Numbered(pending.number, pending.secret, pending.fingerprint),
        previous=Numbered(current.number, current.secret, current.fingerprint) if current else None,
    )
    for row in rows:
        try:
            with _open(app, row) as store:
                new_mark = store.publish(view, marks.get(row.name))
        except STORE_FAILURES as exc:
            _wait(runner, row.name, view, exc)
            return False
        checkpoint("publish:stored")  # the store has it; keyturn has not recorded its mark
        _record(app, row.name, cred.id, pending.number, new_mark)
    checkpoint("publish:effect")
    runner._step_done(Step.FINISH, "rotation.publish", pending, stores=[r.name for r in rows])
    return True


def _record(app: Keyturn, store: str, credential_id: str, number: int, mark: str | None) -> None:
    with app.db.write() as session:
        row = _mark(session, store, credential_id)
        row.version, row.mark, row.status, row.detail = number, mark, "in-sync", None
        row.checked_at = utcnow()


def _wait(runner: Runner, store: str, view: PublishView, exc: Exception) -> None:
    """Keep the rotation at publish with backoff; record why; alert after ALERT_AFTER."""
    from keyturn.engine.failure import backoff

    message = exc.message if isinstance(exc, PluginError | ConfigInvalid) else str(exc)
    conflict = isinstance(exc, StoreConflict)
    log.warning("rotation %s of %s waits at publish: %s", runner.id, view.credential_id, message)
    now = utcnow()
    with runner._write() as session:
        rot, cred = runner._load(session)
        attempts = rot.attempts + 1
        next_at = now + backoff(runner.app.settings.retry_base_seconds, attempts)
        if conflict:
            mark = _mark(session, store, cred.id)
            mark.status, mark.detail, mark.checked_at = "drift", message, now
            cred.sync_status = "store-drift"
        runner._advance(
            session,
            Step.PUBLISH,
            status=RotationStatus.RETRYING,
            attempts=attempts,
            error=f"publish: {message}",
            next_attempt_at=next_at,
        )
        runner._audit(
            session,
            "rotation.retry",
            cred,
            rot,
            outcome="error",
            fingerprint=view.current.fingerprint,
            step=str(Step.PUBLISH),
            store=store,
            conflict=conflict,
            attempt=attempts,
            error=message,
            version=view.current.number,
            next_attempt_at=next_at.isoformat(),
        )
        if conflict or attempts >= ALERT_AFTER:
            _alert(session, cred, rot.id, store, message, attempts, conflict)


def _alert(
    session: Session,
    cred: Credential,
    rotation: int,
    store: str,
    message: str,
    attempts: int,
    conflict: bool,
) -> None:
    what = "holds a value keyturn did not write" if conflict else "cannot be written"
    outbox.enqueue(
        session,
        kind="out-of-sync" if conflict else "rotation-failed",
        dedupe_key=f"publish:{rotation}:{store}:{'drift' if conflict else attempts}",
        subject=f"[keyturn] {cred.id}: store {store} {what}",
        body=(
            f"Rotation {rotation} of {cred.id} waits at publish ({attempts} attempts): "
            f"{message}. The target accepts the new value; the old one stays accepted until "
            "every store has the new one."
        ),
        credential_id=cred.id,
        tenant_id=cred.tenant_id,
        data={"rotation": rotation, "store": store, "attempts": attempts, "conflict": conflict},
    )


# -- verify ------------------------------------------------------------------------------


def check(app: Keyturn, cred: Credential) -> list[StoreStatus]:
    """Does each store of *cred* hold its current version? Recorded on the store marks."""
    with app.db.read() as session:
        rows = _stores(session, cred)
        current = repo.version_in_state(session, cred.id, VersionState.CURRENT)
        pending = repo.version_in_state(session, cred.id, VersionState.PENDING)
        marks = {r.name: session.get(StoreMark, (r.name, cred.id)) for r in rows}
        known = [v for v in (current, pending) if v is not None]
        values = {v.number: app.vault.reveal(v).reveal() for v in known}
    found: list[StoreStatus] = []
    for row in rows:
        mark = marks[row.name]
        try:
            with _open(app, row) as store:
                held = store.held(cred.id, cred.tenant_id)
            if held is None and mark is None:
                # keyturn never published there (declared since the last rotation).
                found.append(StoreStatus(row.name, "unpublished", detail="not published yet"))
                continue
            found.append(_compare(row.name, held, known, values, mark.mark if mark else None))
        except STORE_FAILURES as exc:
            found.append(StoreStatus(row.name, "unreachable", detail=exc.message))
    with app.db.write() as session:
        for status in found:
            mark = _mark(session, status.store, cred.id)
            mark.status, mark.checked_at = status.status, utcnow()
            mark.detail = status.detail or None
    return found


def combine(status: str, detail: str, stores: tuple[StoreStatus, ...]) -> tuple[str, str]:
    """The credential's sync status from its target's and its stores': a target in sync
    with a store that is not is "store-drift"; a store down is "unreachable"."""
    bad = [s for s in stores if s.status not in ("in-sync", "unpublished")]
    if status != "in-sync" or not bad:
        return status, detail
    worst = "store-drift" if any(s.status != "unreachable" for s in bad) else "unreachable"
    return worst, "; ".join(f"{s.store}: {s.status} ({s.detail})" for s in bad)


def _compare(
    store: str, held: Held | None, known: list[Version], values: dict[int, str], mark: str | None
) -> StoreStatus:
    if held is None:
        return StoreStatus(store, "missing", detail="the store holds nothing for it")
    number = held.version
    if held.value is not None:
        number = next((n for n, v in values.items() if v == held.value.reveal()), None)
        if number is None:
            return StoreStatus(store, "drift", detail="the store holds a value keyturn did not")
    version = next((v for v in known if v.number == number), None)
    if version is None:
        return StoreStatus(store, "drift", number, f"the store holds version {number}")
    if held.fingerprint and held.fingerprint != version.fingerprint:
        return StoreStatus(store, "drift", number, "its fingerprint differs from keyturn's")
    if mark is not None and held.mark is not None and held.mark != mark:
        return StoreStatus(
            store, "drift", number, f"written behind keyturn's back (now {held.mark}, not {mark})"
        )
    return StoreStatus(store, "in-sync", number)


def repair(app: Keyturn, credential_id: str, actor: str) -> list[StoreStatus]:
    """Publish the current value over what each out-of-sync store holds (an operator's
    decision, after `verify` reported drift), and to stores never published to yet;
    recorded in the audit log."""
    with app.db.read() as session:
        cred = repo.get_credential(session, credential_id)
    statuses = check(app, cred)
    with app.db.read() as session:
        cred = repo.get_credential(session, credential_id)
        view = PublishView(
            cred.id,
            cred.tenant_id,
            numbered(app, repo.version_in_state(session, cred.id, VersionState.CURRENT)),  # type: ignore[arg-type]
            previous=numbered(app, repo.version_in_state(session, cred.id, VersionState.PREVIOUS)),
        )
        rows = {r.name: r for r in _stores(session, cred)}
    out = []
    for status in statuses:
        if status.status not in ("drift", "missing", "unpublished"):
            out.append(status)
            continue
        out.append(_repair_one(app, rows[status.store], cred, view, actor))
    return out


def _repair_one(
    app: Keyturn, row: StoreRow, cred: Credential, view: PublishView, actor: str
) -> StoreStatus:
    try:
        with _open(app, row) as store:
            held = store.held(cred.id, cred.tenant_id)
            mark = store.publish(view, held.mark if held else None)
    except STORE_FAILURES as exc:
        return StoreStatus(row.name, "unreachable", detail=exc.message)
    _record(app, row.name, cred.id, view.current.number, mark)
    with app.db.write() as session:
        audit.append(
            session,
            actor=actor,
            action="store.repair",
            credential_id=cred.id,
            tenant_id=cred.tenant_id,
            fingerprint=view.current.fingerprint,
            details={"store": row.name, "version": view.current.number},
        )
    return StoreStatus(row.name, "in-sync", view.current.number, "republished")


def restore(app: Keyturn, credential_id: str, actor: str) -> dict[str, str]:
    """An aborted rotation: every store that holds the pending value (about to be
    abandoned) gets the current one back, check-and-set from what it holds now. Returns what
    could not be restored (for the abort's audit entry); `verify` shows it as drift."""
    with app.db.read() as session:
        cred = repo.get_credential(session, credential_id)
        current = repo.version_in_state(session, cred.id, VersionState.CURRENT)
        pending = numbered(app, repo.version_in_state(session, cred.id, VersionState.PENDING))
        if current is None or pending is None:
            return {}
        view = PublishView(
            cred.id,
            cred.tenant_id,
            numbered(app, current),  # type: ignore[arg-type]
            previous=numbered(app, repo.version_in_state(session, cred.id, VersionState.PREVIOUS)),
        )
        rows = _stores(session, cred)
    left = {}
    for row in rows:
        try:
            with _open(app, row) as store:
                held = store.held(cred.id, cred.tenant_id)
                if held is None or not _is(held, pending):
                    continue
                new_mark = store.publish(view, held.mark)
        except STORE_FAILURES as exc:
            left[f"store_left:{row.name}"] = exc.message
            continue
        _record(app, row.name, cred.id, current.number, new_mark)
    return left


def _is(held: Held, version: Numbered) -> bool:
    if held.value is not None:
        return held.value.reveal() == version.value.reveal()
    return held.version == version.number and held.fingerprint in (None, version.fingerprint)


def marks(session: Session, credential_id: str) -> list[dict[str, Any]]:
    """The stores of a credential as `show` and the API report them."""
    cred = repo.get_credential(session, credential_id)
    out = []
    for name in cred.stores:
        mark = session.get(StoreMark, (name, credential_id))
        out.append(
            {
                "store": name,
                "version": mark.version if mark else None,
                "status": mark.status if mark else "unpublished",
                "detail": mark.detail if mark else None,
                "checked_at": mark.checked_at.isoformat() if mark and mark.checked_at else None,
            }
        )
    return out
