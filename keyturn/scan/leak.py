"""``--rotate-leaked``: a live value found in a file is a leak; rotate it now, revoke at once.

Per credential whose pending, current or previous value was found:

1. one ``credential.leak`` audit entry: which versions, where (file, line, column, commit,
   encoding), and the rotation it starts; never the value;
2. a rotation in progress is settled first: one waiting for its grace period (the previous
   value still accepted) has its wait cut short and runs its revoke now; one not yet
   promoted (its pending value possibly the leaked one) is aborted, which puts the target
   back on the current value;
3. if the current or pending value leaked (or a previous one outside any rotation), a
   ``leak`` rotation runs: a fresh value is set, tested, published and promoted, and the
   old one revoked at once, with no grace period, whoever still uses it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import update

from keyturn.app import Keyturn
from keyturn.audit import log as audit
from keyturn.db import repo
from keyturn.db.models import Rotation, utcnow
from keyturn.domain.errors import KeyturnError
from keyturn.domain.model import RotationStatus, Step, Trigger
from keyturn.engine import service
from keyturn.engine.protocol import Outcome, Runner
from keyturn.scan.model import Finding

MAX_LOCATIONS = 20
PROMOTED = (Step.WAIT, Step.REVOKE, Step.DONE)


@dataclass(frozen=True)
class LeakResult:
    credential_id: str
    versions: tuple[int, ...]
    actions: tuple[str, ...]
    outcome: Outcome | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and (
            self.outcome is None or self.outcome.status == RotationStatus.DONE
        )


def _locations(found: Sequence[Finding]) -> list[dict[str, Any]]:
    return [
        {
            "path": f.where.path,
            "line": f.where.line,
            "column": f.where.column,
            "commit": f.where.commit,
            "encoding": f.encoding,
            "version": f.credential.version if f.credential else None,
        }
        for f in found[:MAX_LOCATIONS]
    ]


def leaked(findings: Sequence[Finding]) -> dict[str, list[Finding]]:
    """Findings of live values, by credential."""
    out: dict[str, list[Finding]] = defaultdict(list)
    for finding in findings:
        if finding.credential is not None and finding.credential.live:
            out[finding.credential.credential_id].append(finding)
    return dict(out)


def rotate_leaked(app: Keyturn, findings: Sequence[Finding], actor: str) -> list[LeakResult]:
    results = []
    for credential_id, found in leaked(findings).items():
        try:
            results.append(_handle(app, credential_id, found, actor))
        except KeyturnError as exc:
            versions = tuple(sorted({f.credential.version for f in found if f.credential}))
            results.append(LeakResult(credential_id, versions, (), error=exc.message))
    return results


def _states_now(app: Keyturn, credential_id: str, numbers: set[int]) -> set[str]:
    """The states the found versions are in now (the index was read when the scan began)."""
    with app.db.read() as session:
        return {v.state for v in repo.versions(session, credential_id) if v.number in numbers}


def _handle(app: Keyturn, credential_id: str, found: list[Finding], actor: str) -> LeakResult:
    numbers = {f.credential.version for f in found if f.credential}
    where = found[0].where
    more = f" and {len(found) - 1} more place(s)" if len(found) > 1 else ""
    reason = f"leaked: found by keyturn scan in {where}{more}"
    actions: list[str] = []
    _record(app, credential_id, found, actor, reason)
    _settle_active(app, credential_id, actor, reason, actions)
    states = _states_now(app, credential_id, numbers)
    outcome = None
    if states & {"current", "pending", "previous"}:
        outcome = service.rotate(
            app, credential_id, trigger=Trigger.LEAK, actor=actor, reason=reason
        )
        actions.append(f"leak rotation {outcome.rotation_id}")
    return LeakResult(credential_id, tuple(sorted(numbers)), tuple(actions), outcome)


def _record(
    app: Keyturn, credential_id: str, found: list[Finding], actor: str, reason: str
) -> None:
    numbers = sorted({f.credential.version for f in found if f.credential})
    with app.db.write() as session:
        cred = repo.get_credential(session, credential_id)
        first = repo.version_number(session, credential_id, numbers[0])
        audit.append(
            session,
            actor=actor,
            action="credential.leak",
            outcome="warning",
            credential_id=credential_id,
            tenant_id=cred.tenant_id,
            fingerprint=first.fingerprint if first else None,
            reason=reason,
            details={
                "versions": sorted(
                    {(f.credential.version, f.credential.state) for f in found if f.credential}
                ),
                "found": len(found),
                "locations": _locations(found),
            },
        )


def _settle_active(
    app: Keyturn, credential_id: str, actor: str, reason: str, actions: list[str]
) -> None:
    active = service.active_rotations(app, credential_id)
    if not active:
        return
    rot = active[0]
    if Step(rot.step) in PROMOTED:
        now = utcnow()
        with app.db.write() as session:
            session.execute(
                update(Rotation)
                .where(Rotation.id == rot.id)
                .values(wait_until=now, next_attempt_at=now)
            )
        Runner(app, rot.id, force=True).run()
        actions.append(f"rotation {rot.id}: grace cut short, previous value revoked")
    else:
        service.abort(app, credential_id, actor=actor, reason=reason)
        actions.append(f"rotation {rot.id} aborted (its pending value is not used)")
