"""One account, one credential: the database constraint, what apply does with it, and what
migration 0005 does with a database where two credentials already share an account."""

from __future__ import annotations

import json
import logging

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from keyturn.db import migrate
from keyturn.db.models import Account, Credential
from tests.support.keyturn import Harness

FILE = """
[targets.mail]
type = "passwd-file"
path = "mail.passwd"
{grant}

[[credentials]]
id = "globex/admin"
tenant = "globex"
target = "mail"
username = "admin@globex.example"
initial_secret = "env:PW"
"""
ALTERNATING = """
[[credentials]]
id = "acme/db"
tenant = "acme"
target = "mail"
strategy = "alternating"
usernames = {users}
"""


def _apply(kt: Harness, body: str, name: str = "keyturn.toml") -> tuple[int, str]:
    kt.write(name, body)
    result = kt.cli("apply", name, env={"PW": "globex-Initial-777"})
    return result.code, result.err


def _owners(kt: Harness) -> set[tuple[str, str]]:
    with kt.app.db.read() as session:
        return {(a.username, a.credential_id) for a in session.query(Account)}


def test_the_database_refuses_a_second_owner(kt: Harness) -> None:
    assert _apply(kt, FILE.format(grant=""))[0] == 0
    with kt.app.db.write() as session, pytest.raises(IntegrityError):
        session.add(
            Account(
                target="mail",
                account="admin@globex.example",
                username="admin@globex.example",
                credential_id="globex/admin",
                tenant_id="acme",
            )
        )
        session.flush()


def test_alternating_owns_both_logins_and_releases_what_it_drops(kt: Harness) -> None:
    base = FILE.format(grant="")
    assert _apply(kt, base + ALTERNATING.format(users='["app", "app_clone"]'))[0] == 0
    assert _owners(kt) >= {("app", "acme/db"), ("app_clone", "acme/db")}
    # A second credential cannot take either of them...
    clash = ALTERNATING.format(users='["app_clone", "other"]').replace("acme/db", "acme/db2")
    code, err = _apply(kt, base + ALTERNATING.format(users='["app", "app_clone"]') + clash)
    assert code == 1 and "'app_clone' on target 'mail' belongs to acme/db" in err
    # ...until acme/db lets go of it.
    assert _apply(kt, base + ALTERNATING.format(users='["app", "app_new"]'))[0] == 0
    assert _apply(kt, base + ALTERNATING.format(users='["app", "app_new"]') + clash)[0] == 0
    assert ("app_clone", "acme/db2") in _owners(kt) and ("app_clone", "acme/db") not in _owners(kt)


def test_a_grant_cannot_be_narrowed_under_a_holder(kt: Harness) -> None:
    assert _apply(kt, FILE.format(grant='tenants = ["globex"]'))[0] == 0
    code, err = _apply(kt, FILE.format(grant='tenants = ["acme"]'))
    assert code == 1 and "not granted to tenant 'globex'" in err
    narrowed = FILE.format(grant='[targets.mail.tenants]\nglobex = ["ops@globex.example"]')
    code, err = _apply(
        kt, narrowed.replace('username = "admin@globex.example"', 'username = "ops@globex.example"')
    )
    assert code == 0, err
    only_ops = FILE.format(grant='[targets.mail.tenants]\nglobex = ["ops@globex.example"]')
    code, err = _apply(kt, only_ops.replace("globex/admin", "globex/other"))
    assert code == 1 and "outside what the target grants" in err


def test_deleting_a_credential_frees_its_account(kt: Harness) -> None:
    assert _apply(kt, FILE.format(grant=""))[0] == 0
    with kt.app.db.write() as session:
        session.delete(session.get(Credential, "globex/admin"))
    assert _owners(kt) == set()


def test_the_migration_holds_back_a_later_duplicate(
    kt: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """A database from before 0005 where acme/hijack claimed globex's account (in another
    case): globex/admin, declared first, keeps it; acme/hijack is detached, reported, not
    rotated and not read, until it is given an account of its own."""
    assert _apply(kt, FILE.format(grant=""))[0] == 0
    hijack = FILE.format(grant="").replace("globex/admin", "acme/hijack")
    hijack = hijack.replace('tenant = "globex"', 'tenant = "acme"')
    own = hijack.replace("admin@globex.example", "admin@acme.example")
    hijack = hijack.replace("admin@globex.example", "Admin@Globex.example")
    assert _apply(kt, own, "own.toml")[0] == 0  # declared later than globex/admin
    db = kt.app.db
    command.downgrade(migrate.alembic_config(db), "0004")
    with db.engine.begin() as conn:  # what an older keyturn let acme write
        conn.execute(
            text(
                "UPDATE credentials SET usernames = '[\"Admin@Globex.example\"]' "
                "WHERE id = 'acme/hijack'"
            )
        )
    with caplog.at_level(logging.WARNING, logger="keyturn.migrate"):
        migrate.upgrade(db)
    assert "acme/hijack held back" in caplog.text and "globex/admin" in caplog.text
    assert _owners(kt) == {("admin@globex.example", "globex/admin")}
    listed = kt.cli("accounts", "--disputed", "--json")
    (row,) = json.loads(listed.out)
    assert row["credential"] == "acme/hijack" and "also belongs to globex/admin" in row["dispute"]
    got = kt.cli("get", "acme/hijack")
    assert got.code == 1 and "held back" in got.err and got.out == ""
    rotated = kt.cli("rotate", "acme/hijack", "--reason", "try")
    assert rotated.code == 1 and "no target" in rotated.err
    assert kt.cli("get", "globex/admin").code == 0
    # Declared again on the same account: refused; on an account of its own: released.
    code, err = _apply(kt, hijack, "hijack.toml")
    assert code == 1 and "belongs to globex/admin" in err
    assert _apply(kt, own, "own.toml")[0] == 0
    assert kt.cli("get", "acme/hijack").code == 0
    assert kt.cli("accounts", "--disputed", "--json").out.strip() == "[]"
