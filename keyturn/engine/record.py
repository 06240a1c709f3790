"""A rotation's persisted record, as the protocol sees it: loading it, moving its step
pointer (fenced by the lease) with an audit entry, the values in play, and the credential's
target and strategy, opened once per run."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from keyturn.app import Keyturn
from keyturn.audit import log as audit
from keyturn.db import repo
from keyturn.db.models import Credential, Rotation, TargetRow, Version, utcnow
from keyturn.domain.errors import PluginError
from keyturn.domain.model import RotationStatus, Step, Trigger, VersionState
from keyturn.domain.policy import Policy as EffectivePolicy
from keyturn.engine import lease, strategies
from keyturn.engine.strategies import RotationStrategy
from keyturn.runtime import open_target
from keyturn.targets.base import Account, Target


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


def account(version: Version) -> Account:
    return Account(version.username or "", version.key_id)


def move(
    session: Session, credential_id: str, old: VersionState, new: VersionState, **extra: Any
) -> None:
    session.execute(
        update(Version)
        .where(Version.credential_id == credential_id, Version.state == old)
        .values(state=new, **extra)
        .execution_options(synchronize_session=False)
    )


class Record:
    """One rotation's row and the plugin it drives; the steps build on it."""

    credential_id: str  # known once `run` has read the row

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
        self._strategy: RotationStrategy | None = None

    # -- plumbing --------------------------------------------------------------------------

    @property
    def target(self) -> Target:
        if self._target is None:
            with self.db.read() as session:
                cred = repo.get_credential(session, self.credential_id)
                row = session.get(TargetRow, cred.target or "")
                if row is None:
                    raise PluginError(f"{cred.id} has no target; declare one in the inventory")
            self._target = open_target(self.app, row)
            self._strategy = strategies.for_target(self._target, cred.strategy)
        return self._target

    @property
    def strategy(self) -> RotationStrategy:
        if self._strategy is None:
            self.target  # noqa: B018 (opening the target picks its strategy)
        assert self._strategy is not None
        return self._strategy

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
