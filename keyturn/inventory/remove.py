"""Forgetting a credential (`keyturn delete`): its versions go, its target is left alone.

keyturn never logs in to the target to remove the account: the account may still be in use,
and deleting a login is not something to do as a side effect. The caller is told which
login was left, because nobody but keyturn knew its password.
"""

from __future__ import annotations

from dataclasses import dataclass

from keyturn.app import Keyturn
from keyturn.audit import log as audit
from keyturn.db import repo
from keyturn.domain.errors import RotationInProgress, UsageError
from keyturn.domain.ids import validate_id

MAX_REASON = 2000


@dataclass(frozen=True)
class Deleted:
    credential_id: str
    versions: int
    target: str | None
    usernames: tuple[str, ...]
    stores: tuple[str, ...]

    def describe(self) -> str:
        text = f"deleted {self.credential_id} and its {self.versions} version(s)"
        if self.target:
            logins = ", ".join(repr(u) for u in self.usernames) or "its account"
            text += (
                f"; the target {self.target!r} was not touched: {logins} still exists there "
                "with its last password, which keyturn no longer holds (change or remove it "
                "on the target)"
            )
        if self.stores:
            text += f"; copies published to {', '.join(self.stores)} were left as they are"
        return text


def delete(app: Keyturn, credential_id: str, *, actor: str, reason: str) -> Deleted:
    """Remove the credential, its versions, consumers and rotations; the audit log keeps
    its history. Refused while a rotation is in progress (abort it first)."""
    validate_id(credential_id)
    reason = reason.strip()
    if not reason:
        raise UsageError("a reason is required: it goes into the audit log")
    if len(reason) > MAX_REASON:
        raise UsageError(f"the reason is longer than {MAX_REASON} characters")
    with app.db.write() as session:
        cred = repo.get_credential(session, credential_id, lock=True)
        if repo.active_rotation(session, credential_id) is not None:
            raise RotationInProgress(
                f"{credential_id} is being rotated; `keyturn abort {credential_id} --reason "
                "...` first"
            )
        done = Deleted(
            credential_id,
            len(repo.versions(session, credential_id)),
            cred.target,
            tuple(str(u) for u in cred.usernames or []),
            tuple(str(s) for s in cred.stores or []),
        )
        tenant = cred.tenant_id
        session.delete(cred)
        audit.append(
            session,
            actor=actor,
            action="credential.delete",
            reason=reason,
            credential_id=credential_id,
            tenant_id=tenant,
            details={"versions": done.versions, "target": done.target},
        )
    return done
