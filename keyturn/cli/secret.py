"""`keyturn get`: the command that prints a secret, on a short path (issue 23).

One write transaction on SQLAlchemy Core (keyturn.db.reads): the key set, the credential with
its version, the data key, and the read's audit entry chained and committed before the value
is printed; no ORM, no plugins, no Pydantic. `keyturn.runtime.read_secret` is the reference
it is read against (tests/cli/test_get_fast.py), and it still serves what the short path
leaves to it: a schema to migrate first, a rekey under way (two master keys), a database
whose key set predates schema 0005.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any, Protocol

import typer
from sqlalchemy.engine import Connection

from keyturn.app import master_keys
from keyturn.cli import output, remote
from keyturn.cli.main import actor, app, open_app, settings
from keyturn.crypto import envelope
from keyturn.crypto.keys import MasterKey
from keyturn.crypto.keyset import open_keyset
from keyturn.db import migrate, reads
from keyturn.db.engine import Database
from keyturn.domain.errors import Conflict, NotFound, UsageError, WrongMasterKey
from keyturn.domain.ids import validate_id
from keyturn.domain.inputs import clean
from keyturn.domain.model import Secret, VersionState
from keyturn.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

# As keyturn.runtime.READABLE: what consumers use, or will use next.
READABLE = (VersionState.CURRENT, VersionState.PREVIOUS, VersionState.PENDING)
KEYSET = "keyset"  # keyturn.db.vault.KEYSET: the meta row of the sealed key set


@app.command()
def get(
    ctx: typer.Context,
    credential_id: Annotated[str, typer.Argument(metavar="ID")],
    previous: Annotated[bool, typer.Option("--previous", help="The previous version")] = False,
    version: Annotated[
        int | None,
        typer.Option("--version", min=1, help="Version N (current, previous or pending)"),
    ] = None,
    json: Annotated[
        bool, typer.Option("--json", help="Value, version, state and username as JSON")
    ] = False,
) -> None:
    """Print a credential's current value (the only command that prints a secret).

    While a rotation has put its new value on the target for the same login (past `set`,
    where a `single` target already refuses the current one), that new value: the one
    that works. Every read is an audit entry (with the value's fingerprint, never the
    value)."""
    validate_id(credential_id)
    if previous and version is not None:
        raise UsageError("give --previous or --version N, not both")
    api = remote.connect(ctx)
    if api is not None:
        data = _remote_secret(api, credential_id, previous, version)
    else:
        data = _local(ctx, credential_id, previous, version)
    if data["state"] == VersionState.PENDING and version is None:
        output.warn(
            f"a rotation of {credential_id} has put version {data['version']} on the target, "
            "which may refuse the current value now: this is version "
            f"{data['version']} (pending); `keyturn show {credential_id}` says where it stands"
        )
    if json:
        output.emit_json(data)
    else:
        sys.stdout.write(str(data["value"]) + "\n")


class _Elsewhere(Exception):
    """This read is the reference path's (see the module's docstring)."""


def _local(
    ctx: typer.Context, credential_id: str, previous: bool, number: int | None
) -> dict[str, Any]:
    config = settings(ctx)
    db = Database(config.db)
    try:
        return _short(db, config, credential_id, previous, number)
    except _Elsewhere:
        pass
    finally:
        db.dispose()
    return _reference(ctx, credential_id, previous, number)


def _short(
    db: Database, config: Settings, credential_id: str, previous: bool, number: int | None
) -> dict[str, Any]:
    """The read in one Core write transaction; _Elsewhere before anything is written when
    the reference must do it. Checks come in the reference's order, with its messages."""
    # One query: a schema at HEAD is an initialised one. Anything else (no file, no table,
    # an older schema, a database that cannot be read) is the reference's to say or migrate.
    if not db.exists() or not migrate.is_current(db):
        raise _Elsewhere
    masters = master_keys(config)
    if len(masters) != 1:
        raise _Elsewhere  # none (the reference's error) or a rekey under way
    master = masters[0]
    with db.guard(), db.engine.begin() as conn:
        sealed = reads.keyset(conn, KEYSET)
        if sealed is None:
            raise _Elsewhere  # a key set from before 0005: the Vault upgrades it
        if sealed[1] != master.id:
            raise WrongMasterKey()
        keys = open_keyset(master, sealed[0])
        states = [_state(previous)] if previous else [_state(False), VersionState.PENDING.value]
        held = reads.held(conn, credential_id, states=states, number=number)
        stored = _working(conn, held, number) or _readable(held, previous, number)
        value = _reveal(conn, master, held.id, stored)
        reads.append(conn, keys, [_entry(held, stored)])
    return {
        "credential": credential_id,
        "version": stored.number,
        "state": stored.state,
        "username": stored.username,
        "value": value.reveal(),
    }


def _state(previous: bool) -> str:
    return (VersionState.PREVIOUS if previous else VersionState.CURRENT).value


def _working(conn: Connection, held: reads.Held, number: int | None) -> reads.Stored | None:
    """The pending version, when no version was asked for and a rotation has put it on the
    target (the current one may be refused there now: DESIGN.md invariant 9); else None."""
    pending = held.versions.get(VersionState.PENDING.value)
    current = held.versions.get(VersionState.CURRENT.value)
    if number is not None or pending is None or held.dispute or not _same_login(pending, current):
        return None
    return pending if reads.on_target(conn, held.id, pending.number) else None


class _Login(Protocol):
    @property
    def username(self) -> str | None: ...


def _same_login(pending: _Login, current: _Login | None) -> bool:
    """Is the pending version for the login the current one is (not `alternating`'s other
    login, whose current value keeps working until revoke)?"""
    return current is None or pending.username == current.username


def _readable(held: reads.Held, previous: bool, number: int | None) -> reads.Stored:
    """The version asked for, refused as keyturn.runtime.read_secret refuses it."""
    if held.dispute:
        # Its account belongs to another credential (keyturn.inventory.grants): the value
        # it holds may be that credential's, so it is not handed out until resolved.
        raise Conflict(
            f"{held.id} is held back: its account belongs to another credential "
            "(`keyturn accounts --disputed`); give it an account of its own or delete it"
        )
    if number is None:
        stored = held.versions.get(_state(previous))
        if stored is None:
            raise NotFound(f"{held.id} has no {_state(previous)} version")
        return stored
    if not held.versions:
        raise NotFound(f"{held.id} has no version {number}")
    (stored,) = held.versions.values()
    if stored.state not in READABLE:
        raise NotFound(
            f"version {number} of {held.id} is {stored.state}: no target accepts it "
            "any more, so keyturn does not hand it out"
        )
    return stored


def _reveal(
    conn: Connection, master: MasterKey, credential_id: str, stored: reads.Stored
) -> Secret:
    def fetch(key_id: str) -> envelope.WrappedKey:
        found = reads.wrapped_key(conn, key_id)
        if found is None:
            raise WrongMasterKey(f"data key {key_id} is missing from the database")
        return envelope.WrappedKey(key_id, found[0], found[1])

    keyring = envelope.Keyring([master], fetch)
    return keyring.decrypt(stored.data_key_id, credential_id, stored.number, stored.ciphertext)


def _entry(held: reads.Held, stored: reads.Stored) -> reads.Entry:
    """The read's audit entry, with the columns keyturn.audit.log.fields makes of it."""
    return reads.Entry(
        actor=clean(actor()),
        action="secret.read",
        outcome="ok",
        credential_id=clean(held.id),
        tenant_id=clean(held.tenant_id),
        fingerprint=stored.fingerprint,
        reason=None,
        details={"version": stored.number, "state": clean(stored.state)},
    )


def _reference(
    ctx: typer.Context, credential_id: str, previous: bool, number: int | None
) -> dict[str, Any]:
    from keyturn.runtime import read_secret

    instance = open_app(ctx)
    with instance.db.write() as session:
        if not previous and number is None:
            number = _pending_on_target(session, credential_id)
        row, value = read_secret(
            instance, session, credential_id, actor=actor(), previous=previous, number=number
        )
    return {
        "credential": credential_id,
        "version": row.number,
        "state": row.state,
        "username": row.username,
        "value": value.reveal(),
    }


def _pending_on_target(session: Session, credential_id: str) -> int | None:
    """The number of the pending version, once a rotation has put it on the target."""
    from keyturn.db import repo

    found = repo.versions_in_states(
        session, credential_id, (VersionState.PENDING, VersionState.CURRENT)
    )
    pending, current = found.get(VersionState.PENDING), found.get(VersionState.CURRENT)
    if pending is None or not _same_login(pending, current):
        return None
    if not reads.on_target(session.connection(), credential_id, pending.number):
        return None
    return pending.number


def _remote_secret(
    api: remote.Remote, credential_id: str, previous: bool, number: int | None
) -> dict[str, Any]:
    if not previous and number is None:
        # Every version the SDK reads (one request), and the one it takes when it takes one.
        from keyturn.client.http import bundle

        chosen = bundle(credential_id, api.secret(credential_id, None), None).usable
        return {
            "credential": credential_id,
            "version": chosen.version,
            "state": chosen.state,
            "username": chosen.username,
            "value": chosen.value,
            "on_target": chosen.on_target,
        }
    which = "previous" if previous else "current"
    if number is not None:  # the API reads by state: find the state of version N
        states = {v["number"]: v["state"] for v in api.versions(credential_id)}
        if states.get(number) not in ("current", "previous"):
            raise UsageError(
                f"version {number} of {credential_id} is {states.get(number, 'not there')}: "
                "over the API only the current and previous versions can be read"
            )
        which = str(states[number])
    return api.secret(credential_id, which)
