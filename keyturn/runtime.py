"""Building blocks the services share: current values, reference resolution, plugin instances."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session

from keyturn import plugins
from keyturn.app import Keyturn
from keyturn.audit import log as audit
from keyturn.db import repo
from keyturn.db.models import StoreRow, TargetRow, Version
from keyturn.domain.errors import ConfigInvalid, Conflict, NotFound, ReferenceUnresolved
from keyturn.domain.inputs import first_error
from keyturn.domain.model import Secret, VersionState
from keyturn.refs import Resolver
from keyturn.stores.base import Store, StoreContext
from keyturn.targets.base import Target, TargetContext


def _version(session: Session, credential_id: str, previous: bool) -> Version:
    state = VersionState.PREVIOUS if previous else VersionState.CURRENT
    version = repo.version_in_state(session, credential_id, state)
    if version is None:
        raise NotFound(f"{credential_id} has no {state.value} version")
    return version


def value_of(app: Keyturn, session: Session, credential_id: str, previous: bool = False) -> Secret:
    """The current (or previous) value of a credential, for keyturn's own use."""
    repo.get_credential(session, credential_id)
    return app.vault.reveal(_version(session, credential_id, previous))


# Versions whose value may be handed out: what consumers use, or will use next.
READABLE = (VersionState.CURRENT, VersionState.PREVIOUS, VersionState.PENDING)


def read_secret(
    app: Keyturn,
    session: Session,
    credential_id: str,
    *,
    actor: str,
    previous: bool = False,
    number: int | None = None,
) -> tuple[Version, Secret]:
    """A value handed to someone (CLI `get`, the API): recorded in the audit log with its
    fingerprint, never the value. *session* must be a write session. *number* picks a
    version by number; only current, previous and pending ones are readable."""
    cred = repo.get_credential(session, credential_id)
    if cred.dispute:
        # Its account belongs to another credential (keyturn.inventory.grants): the value
        # it holds may be that credential's, so it is not handed out until resolved.
        raise Conflict(
            f"{credential_id} is held back: its account belongs to another credential "
            "(`keyturn accounts --disputed`); give it an account of its own or delete it"
        )
    if number is None:
        version = _version(session, credential_id, previous)
    else:
        found = repo.version_number(session, credential_id, number)
        if found is None:
            raise NotFound(f"{credential_id} has no version {number}")
        if found.state not in READABLE:
            raise NotFound(
                f"version {number} of {credential_id} is {found.state}: no target accepts it "
                "any more, so keyturn does not hand it out"
            )
        version = found
    value = app.vault.reveal(version)
    audit.append(
        session,
        actor=actor,
        action="secret.read",
        credential_id=credential_id,
        tenant_id=cred.tenant_id,
        fingerprint=version.fingerprint,
        details={"version": version.number, "state": version.state},
    )
    return version, value


def resolver(app: Keyturn, base_dir: str | Path) -> Resolver:
    def lookup(credential_id: str) -> Secret:
        try:
            with app.db.read() as session:
                return value_of(app, session, credential_id)
        except NotFound as exc:
            raise ReferenceUnresolved(f"keyturn:{credential_id}: {exc.message}") from exc

    return Resolver(Path(base_dir), lookup)


def open_target(app: Keyturn, row: TargetRow) -> Target:
    cls = plugins.load_target(row.type)
    context = TargetContext(resolve=resolver(app, row.base_dir), base_dir=row.base_dir)
    try:
        return cls.from_settings(row.settings, context)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise ConfigInvalid(f"target {row.name!r} ({row.type}): {first_error(exc)}") from exc


def open_store(app: Keyturn, row: StoreRow) -> Store:
    cls = plugins.load_store(row.type)
    context = StoreContext(resolve=resolver(app, row.base_dir), base_dir=row.base_dir)
    try:
        return cls.from_settings(row.settings, context)
    except ValueError as exc:
        raise ConfigInvalid(f"store {row.name!r} ({row.type}): {first_error(exc)}") from exc
