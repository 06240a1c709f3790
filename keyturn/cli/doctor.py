"""`keyturn doctor`: is this installation healthy? One line per finding.

It checks, and says what to do about each problem:

- the database: reachable, initialised, schema current, writable;
- the master key: configured, the one that encrypted the database, its file not readable by
  others, no old key left over from a rekey;
- the audit chain: intact;
- each target: its settings and references resolve, it is reachable, each credential's
  current value logs in (and is provisioned), and the server really checks passwords: one
  login per target with a random wrong value must be refused (PostgreSQL with `trust` in
  pg_hba.conf, say, lets anything in);
- each store: reachable, and holding the current version of what is published there;
- rotations that failed or wait for a retry, notifications that could not be delivered.

Nothing is changed, except that the logins are what a target records of any login. In
remote mode (KEYTURN_URL) it checks the server and the token instead.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import typer
from sqlalchemy import func, select, text

from keyturn.app import Keyturn
from keyturn.audit import log as audit
from keyturn.cli import output, remote
from keyturn.cli.main import app, settings
from keyturn.cli.options import Json
from keyturn.db import migrate, repo
from keyturn.db.models import Credential, Notice, Rotation, StoreRow, TargetRow
from keyturn.domain.errors import KeyturnError, TargetUnreachable, WrongMasterKey
from keyturn.domain.model import ACTIVE_STATUSES, Secret, VersionState
from keyturn.engine.protocol import account
from keyturn.inventory.apply import UNPROVISIONED
from keyturn.runtime import open_store, open_target
from keyturn.settings import Settings
from keyturn.targets.base import Account, Target

OK, WARN, FAIL = "ok", "warn", "fail"


@dataclass(frozen=True)
class Finding:
    level: str  # ok | warn | fail
    subject: str
    message: str


Check = Iterator[Finding]


@app.command()
def doctor(ctx: typer.Context, json: Json = False) -> None:
    """Check the database, the master key, the audit chain, every target (reachable, in
    sync, really checking passwords) and store; one line per finding, exit 1 on a failure."""
    api = remote.connect(ctx)
    findings = list(_remote_checks(api) if api is not None else _local_checks(settings(ctx)))
    if json:
        output.emit_json([f.__dict__ for f in findings])
    else:
        width = max((len(f.subject) for f in findings), default=0)
        for f in findings:
            output.say(f"{f.level:4}  {f.subject:{width}}  {f.message}")
        fails = sum(f.level == FAIL for f in findings)
        warns = sum(f.level == WARN for f in findings)
        output.say(f"{len(findings)} check(s): {fails} failed, {warns} warning(s)")
    if any(f.level == FAIL for f in findings):
        raise typer.Exit(1)


def _local_checks(config: Settings) -> Check:
    try:
        instance = Keyturn.open(config)
    except WrongMasterKey as exc:  # the database opened; the key is what is wrong
        yield Finding(FAIL, "master key", exc.message)
        return
    except KeyturnError as exc:
        yield Finding(FAIL, "database", exc.message)
        return
    try:
        for check in (_database, _master_key, _audit, _targets, _stores, _work):
            yield from _guarded(check, instance)
    finally:
        instance.close()


def _guarded(check: Callable[[Keyturn], Check], instance: Keyturn) -> Check:
    """A check that fails part-way reports that, and the others still run."""
    try:
        yield from check(instance)
    except KeyturnError as exc:
        yield Finding(FAIL, check.__name__.strip("_"), exc.message)


def _database(instance: Keyturn) -> Check:
    db = instance.db
    kind = "SQLite" if db.is_sqlite else "PostgreSQL"
    yield Finding(OK, "database", f"{db.describe()} ({kind}, schema {migrate.HEAD})")
    if db.sqlite_path is not None:
        folder = db.sqlite_path.resolve().parent
        for path in (db.sqlite_path, folder):
            if not os.access(path, os.W_OK):
                yield Finding(FAIL, "database", f"{path} is not writable: keyturn must write it")
        return
    with db.read() as session:
        if session.execute(text("SHOW transaction_read_only")).scalar() == "on":
            yield Finding(
                FAIL, "database", "read-only (a standby?): point KEYTURN_DB at the primary"
            )


def _master_key(instance: Keyturn) -> Check:
    config = instance.settings
    key = instance.vault.master
    source = "KEYTURN_MASTER_KEY" if config.master_key else f"file {config.key_file()}"
    yield Finding(OK, "master key", f"{key.id} from {source} opens the database")
    path = config.key_file()
    if path and not config.master_key:
        mode = stat.S_IMODE(Path(path).stat().st_mode)
        if mode & 0o077:
            yield Finding(WARN, "master key", f"{path} has mode {mode:o}: `chmod 600 {path}`")
    if len(instance.vault.keyring.masters) > 1:
        yield Finding(
            WARN,
            "master key",
            "KEYTURN_OLD_MASTER_KEY is set: finish `keyturn rekey`, then remove it",
        )


def _audit(instance: Keyturn) -> Check:
    with instance.db.read() as session:
        result = audit.verify(session)
    yield Finding(OK if result.ok else FAIL, "audit log", result.describe())


def _targets(instance: Keyturn) -> Check:
    with instance.db.read() as session:
        rows = list(session.execute(select(TargetRow).order_by(TargetRow.name)).scalars())
    for row in rows:
        subject = f"target {row.name}"
        with instance.db.read() as session:
            creds = list(
                session.execute(
                    select(Credential).where(Credential.target == row.name).order_by(Credential.id)
                ).scalars()
            )
        try:
            target = open_target(instance, row)
        except KeyturnError as exc:
            yield Finding(FAIL, subject, exc.message)
            continue
        try:
            yield from _target(instance, subject, target, creds)
        finally:
            target.close()


def _target(instance: Keyturn, subject: str, target: Target, creds: list[Credential]) -> Check:
    probed = False
    for cred in creds:
        if not probed and cred.usernames:  # once per target, the account of its first login
            probed = True
            finding = _probe(subject, target, str(cred.usernames[0]))
            yield finding
            if finding.level == FAIL and finding.message.startswith(_CANNOT):
                return  # every credential's login would fail the same way: said once
        if cred.sync_status == UNPROVISIONED:
            yield Finding(
                FAIL, subject, f"{cred.id} is not provisioned there yet: run `keyturn apply`"
            )
            continue
        yield from _current(instance, subject, target, cred)
    if not creds:
        yield Finding(OK, subject, "settings valid; no credential uses it yet")


def _current(instance: Keyturn, subject: str, target: Target, cred: Credential) -> Check:
    with instance.db.read() as session:
        current = repo.version_in_state(session, cred.id, VersionState.CURRENT)
    if current is None:
        return
    try:
        accepted = target.test(account(current), instance.vault.reveal(current))
    except KeyturnError as exc:
        yield Finding(FAIL, subject, f"{cred.id}: {exc.message}")
        return
    if accepted:
        yield Finding(OK, subject, f"{cred.id}: the current value logs in")
    else:
        yield Finding(FAIL, subject, f"{cred.id}: the current value is refused (out of sync)")


_CANNOT = "its credentials are not checked"


def _probe(subject: str, target: Target, username: str) -> Finding:
    """Log in with a random wrong value: a server that lets it in checks no password."""
    wrong = Secret("kt-doctor-" + secrets.token_urlsafe(24))
    try:
        accepted = target.test(Account(username), wrong)
    except KeyturnError as exc:  # unreachable, or e.g. the postgres target naming `trust`
        if isinstance(exc, TargetUnreachable):
            return Finding(FAIL, subject, f"{_CANNOT}: {exc.message}")
        return Finding(FAIL, subject, exc.message)
    if accepted:
        return Finding(
            FAIL,
            subject,
            "the server does not check passwords: it accepted a random wrong value, so no "
            "rotation can be proven; configure it to check passwords",
        )
    return Finding(OK, subject, "the server refuses a wrong password")


def _stores(instance: Keyturn) -> Check:
    with instance.db.read() as session:
        rows = list(session.execute(select(StoreRow).order_by(StoreRow.name)).scalars())
        creds = list(session.execute(select(Credential).order_by(Credential.id)).scalars())
    for row in rows:
        subject = f"store {row.name}"
        store = open_store(instance, row)
        try:
            published = [c for c in creds if row.name in (c.stores or [])]
            for cred in published:
                with instance.db.read() as session:
                    current = repo.version_in_state(session, cred.id, VersionState.CURRENT)
                held = store.read(cred.id)
                if current is None:
                    continue
                if held is None:
                    yield Finding(WARN, subject, f"{cred.id} is not published there yet")
                elif held[0].version not in (None, current.number):
                    yield Finding(
                        WARN,
                        subject,
                        f"{cred.id}: holds version {held[0].version}, current is "
                        f"{current.number} (the next rotation republishes it)",
                    )
                else:
                    yield Finding(OK, subject, f"{cred.id}: holds the current version")
            if not published:
                yield Finding(OK, subject, "settings valid; nothing is published there yet")
        finally:
            store.close()


def _work(instance: Keyturn) -> Check:
    with instance.db.read() as session:
        stuck = list(
            session.execute(
                select(Rotation).where(
                    Rotation.status.in_(ACTIVE_STATUSES), Rotation.error.is_not(None)
                )
            ).scalars()
        )
        failed = session.scalar(
            select(func.count())
            .select_from(Notice)
            .where(Notice.attempts > 0, Notice.status == "pending")
        )
    for rot in stuck:
        yield Finding(
            WARN,
            "rotations",
            f"{rot.credential_id}: rotation {rot.id} {rot.status} at {rot.step} after "
            f"{rot.attempts} failed attempt(s): {rot.error} (`keyturn show {rot.credential_id}`)",
        )
    if failed:
        yield Finding(WARN, "notifications", f"{failed} could not be delivered yet (retrying)")
    if not stuck and not failed:
        yield Finding(OK, "rotations", "none failing; no notification waiting for a retry")


def _remote_checks(api: remote.Remote) -> Check:
    try:
        health = api.health()
    except KeyturnError as exc:
        yield Finding(FAIL, "server", exc.message)
        return
    yield Finding(OK, "server", f"{api.url} answers (keyturn {health['version']})")
    try:
        count = len(api.credentials(None, None))
    except KeyturnError as exc:
        yield Finding(FAIL, "token", exc.message)
        return
    yield Finding(OK, "token", f"accepted; it sees {count} credential(s)")
