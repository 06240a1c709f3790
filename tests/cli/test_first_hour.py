"""Issue 13's defects, each as a newcomer met it, through the CLI."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from keyturn import plugins
from keyturn.db.models import AuditEntry, Credential, Rotation, utcnow
from tests.support.flaky import FlakyTarget
from tests.support.keyturn import Harness

SMTP = """
[policies.smtp]
max_age = "180d"
grace = "0s"

[targets.mail]
type = "{type}"
path = "{path}"
{extra}

[[credentials]]
id = "acme/smtp-admin"
tenant = "acme"
kind = "smtp"
policy = "smtp"
target = "mail"
username = "admin@acme.example"
initial_secret = "env:PW"
"""
PW = "first-Password-4711-abc"


def smtp(
    kt: Harness, path: str = "mail.passwd", type_: str = "passwd-file", extra: str = ""
) -> None:
    kt.write("keyturn.toml", SMTP.format(type=type_, path=path, extra=extra))
    result = kt.cli("apply", "keyturn.toml", env={"PW": PW})
    assert result.code == 0, result.err


def audit_count(kt: Harness) -> int:
    with kt.app.db.read() as session:
        return int(session.scalar(select(func.count()).select_from(AuditEntry)) or 0)


# -- run-due --at is a preview ---------------------------------------------------------------


def test_run_due_at_previews_and_changes_nothing(kt: Harness) -> None:
    """`run-due --at` used to run the pass: a preview rotated a real credential."""
    smtp(kt)
    at = (utcnow() + timedelta(days=200)).strftime("%Y-%m-%dT02:00Z")
    before_file, before_audit = (kt.home / "mail.passwd").read_text(), audit_count(kt)
    shown = kt.cli("run-due", "--at", at, "--json")
    assert shown.code == 0, shown.err
    data = json.loads(shown.out)
    assert data["preview"] is True and data["would_rotate"] == ["acme/smtp-admin"]
    text = kt.cli("run-due", "--at", at)
    assert "nothing was changed" in text.out and "would rotate  acme/smtp-admin" in text.out
    assert (kt.home / "mail.passwd").read_text() == before_file
    assert audit_count(kt) == before_audit
    with kt.app.db.read() as session:
        assert session.scalar(select(func.count()).select_from(Rotation)) == 0
    done = json.loads(kt.cli("run-due", "--at", at, "--execute", "--json").out)
    assert done["preview"] is False and done["rotated"] == ["acme/smtp-admin"]
    assert (kt.home / "mail.passwd").read_text() != before_file


def test_run_due_says_what_it_did_in_one_line(kt: Harness) -> None:
    smtp(kt)
    at = (utcnow() + timedelta(days=200)).strftime("%Y-%m-%dT02:00Z")
    result = kt.cli("run-due", "--at", at, "--execute")
    assert result.code == 0, result.err
    assert result.out.strip().splitlines()[-1] == (
        "rotated acme/smtp-admin; 0 notification(s) sent, 0 to retry"
    )


# -- apply: no dead end ------------------------------------------------------------------------


PG_TARGET = """
[targets.app-db]
type = "postgres"
host = "{host}"
port = {port}
admin_user = "{user}"
admin_password = "keyturn:infra/pg-admin"

[[credentials]]
id = "acme/app-db"
kind = "postgres"
target = "app-db"
username = "{role}"
initial_secret = "env:PW"
"""
PG_ADMIN = """
[[credentials]]
id = "infra/pg-admin"
kind = "postgres"
initial_secret = "env:PG_ADMIN"
"""


def test_apply_again_provisions_what_it_could_not(kt: Harness) -> None:
    """docs/targets/postgres.md referenced keyturn:infra/pg-admin without declaring it: the
    value was stored but not provisioned, the second apply said "no changes" and never
    provisioned it, and `rotate` sent the user back to apply. On the real scram cluster."""
    import psycopg

    from tests.servers import PgServer

    pg = PgServer.from_env()
    role = f"kte_{secrets.token_hex(4)}_app"
    text = PG_TARGET.format(host=pg.host, port=pg.port, user=pg.user, role=role)
    env = {"PW": PW, "PG_ADMIN": pg.password}
    kt.write("keyturn.toml", text)
    dsn = f"host={pg.host} port={pg.port} user={pg.user} password={pg.password} dbname=postgres"
    try:
        first = kt.cli("apply", "keyturn.toml", env=env)
        assert first.code == 1 and "stored, but not provisioned" in first.err
        assert "infra/pg-admin" in first.err and "run `keyturn apply` again" in first.err
        assert json.loads(kt.cli("list", "--json").out)[0]["sync"] == "unprovisioned"
        kt.write("keyturn.toml", text + PG_ADMIN)
        second = kt.cli("apply", "keyturn.toml", env=env)
        assert second.code == 0, second.err
        assert "provision credential acme/app-db (retry)" in second.out
        assert "provisioned acme/app-db on its target" in second.out
        with psycopg.connect(
            dsn.replace(f"user={pg.user} password={pg.password}", f"user={role} password={PW}")
        ):
            pass  # the login exists, with the stored value
        third = kt.cli("apply", "keyturn.toml", env=env)
        assert third.code == 0 and third.out.strip().endswith("no changes")
        assert kt.cli("rotate", "acme/app-db", "--reason", "after the fix").code == 0
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP ROLE IF EXISTS {role}")


@pytest.mark.parametrize(
    ("type_", "extra"),
    [
        ("postgres", 'host = "127.0.0.1"\nadmin_user = "kt_admin"'),
        ("mysql", 'host = "127.0.0.1"\nadmin_user = "kt_admin"'),
        ("redis", 'host = "127.0.0.1"\nadmin_user = "kt_admin"'),
    ],
)
def test_admin_user_without_admin_password_is_refused(kt: Harness, type_: str, extra: str) -> None:
    """It used to be silently ignored: keyturn then logged in as each account."""
    kt.write("t.toml", f'[targets.db]\ntype = "{type_}"\n{extra}\n')
    result = kt.cli("apply", "t.toml")
    assert result.code == 1 and len(result.err.strip().splitlines()) == 1
    assert "target 'db'" in result.err and "without admin_password" in result.err
    with kt.app.db.read() as session:
        assert session.scalar(select(func.count()).select_from(Credential)) == 0


# -- delete ------------------------------------------------------------------------------------


def test_delete_forgets_the_credential_and_says_the_target_is_untouched(kt: Harness) -> None:
    smtp(kt)
    line = (kt.home / "mail.passwd").read_text()
    assert kt.cli("delete", "acme/smtp-admin").code == 2  # --reason is required
    result = kt.cli("delete", "acme/smtp-admin", "--reason", "service retired")
    assert result.code == 0, result.err
    assert "target 'mail' was not touched" in result.out and "'admin@acme.example'" in result.out
    assert (kt.home / "mail.passwd").read_text() == line
    assert kt.cli("get", "acme/smtp-admin").err.strip() == "error: no credential 'acme/smtp-admin'"
    with kt.app.db.read() as session:
        entry = session.execute(
            select(AuditEntry).where(AuditEntry.action == "credential.delete")
        ).scalar_one()
    assert entry.reason == "service retired" and entry.actor.startswith("cli:")
    assert kt.cli("audit", "verify").code == 0


@pytest.mark.state_db
def test_delete_is_refused_during_a_rotation(kt: Harness) -> None:
    plugins.register("target", FlakyTarget)
    try:
        (kt.home / "control.json").write_text('{"set": "down"}')
        smtp(kt, type_="test-flaky", extra='control = "control.json"')
        assert kt.cli("rotate", "acme/smtp-admin", "--reason", "x").code == 1
        refused = kt.cli("delete", "acme/smtp-admin", "--reason", "x")
        assert refused.code == 1 and "abort" in refused.err
    finally:
        plugins.unregister("target", "test-flaky")


# -- show, actor -------------------------------------------------------------------------------


@pytest.fixture
def flaky(kt: Harness) -> Iterator[Harness]:
    plugins.register("target", FlakyTarget)
    (kt.home / "control.json").write_text('{"set": "down"}')
    smtp(kt, type_="test-flaky", extra='control = "control.json"')
    yield kt
    plugins.unregister("target", "test-flaky")


def test_show_lists_every_step_with_attempts_errors_actor_and_reason(flaky: Harness) -> None:
    kt = flaky
    env = {"USER": "", "LOGNAME": ""}  # getpass falls back to the passwd entry
    assert kt.cli("rotate", "acme/smtp-admin", "--reason", "quarterly", env=env).code == 1
    (kt.home / "control.json").write_text("{}")
    assert kt.cli("resume", "acme/smtp-admin", "--now").code == 0
    data = json.loads(kt.cli("show", "acme/smtp-admin", "--json").out)
    (rot,) = data["rotations"]
    assert rot["status"] == "done" and rot["attempts"] == 1 and rot["reason"] == "quarterly"
    assert rot["actor"].startswith("cli:") and "unknown" not in rot["actor"]
    steps = [s["step"] for s in rot["steps"]]
    assert steps[0] == "start" and steps[-1] == "done" and "retry" in steps
    retry = next(s for s in rot["steps"] if s["step"] == "retry")
    assert retry["outcome"] == "error" and "attempt 1" in retry["detail"]
    assert "target is down" in retry["detail"]
    text = kt.cli("show", "acme/smtp-admin").out
    assert "quarterly" in text and "target is down" in text and "revoke" in text


# -- get, tokens, version ----------------------------------------------------------------------


def test_get_json_and_by_version(kt: Harness) -> None:
    smtp(kt)
    assert kt.cli("rotate", "acme/smtp-admin", "--reason", "x").code == 0
    got = json.loads(kt.cli("get", "acme/smtp-admin", "--json").out)
    assert got["version"] == 2 and got["state"] == "current"
    assert got["username"] == "admin@acme.example" and len(got["value"]) == 32
    assert kt.cli("get", "acme/smtp-admin", "--version", "2").out.strip() == got["value"]
    old = kt.cli("get", "acme/smtp-admin", "--version", "1")
    assert old.code == 1 and "retired" in old.err and PW not in old.err + old.out
    assert kt.cli("get", "acme/smtp-admin", "--version", "9").code == 1


def test_token_list_and_revoke(kt: Harness) -> None:
    made = json.loads(kt.cli("token", "create", "--role", "auditor", "--name", "ci", "--json").out)
    listed = json.loads(kt.cli("token", "list", "--json").out)
    row = next(r for r in listed if r["id"] == made["id"])
    assert row["name"] == "ci" and row["status"] == "active" and "token" not in row
    assert made["token"] not in kt.cli("token", "list").out
    assert kt.cli("token", "revoke", made["id"]).out.strip() == f"revoked {made['id']}"
    listed = json.loads(kt.cli("token", "list", "--json").out)
    assert next(r for r in listed if r["id"] == made["id"])["status"] == "revoked"
    assert "already revoked" in kt.cli("token", "revoke", made["id"]).out
    assert kt.cli("token", "revoke", "tok_nope").code == 1


def test_version_and_completion(kt: Harness) -> None:
    from keyturn import __version__

    assert kt.cli("--version").out.strip() == f"keyturn {__version__}"
    assert "--install-completion" in kt.cli("--help").out


# -- database failures -------------------------------------------------------------------------


def test_list_in_an_empty_folder_leaves_no_database_behind(tmp_path: Path) -> None:
    kt = Harness(tmp_path, "sqlite:///keyturn.db")
    result = kt.cli("list")
    assert result.code == 1 and "run `keyturn init`" in result.err
    assert list(tmp_path.iterdir()) == []


def test_trust_postgres_is_named_as_not_checking_passwords(kt: Harness) -> None:
    """A rotation against `trust` used to fail at revoke with no hint; now the test step says
    why, before promotion, and so does doctor. The trust cluster is the suite's state
    server (127.0.0.1:5432, user postgres)."""
    import psycopg

    role = f"kte_trust_{secrets.token_hex(4)}"
    dsn = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
    kt.write(
        "pg.toml",
        f"""
[targets.trusting]
type = "postgres"
host = "127.0.0.1"
port = 5432

[[credentials]]
id = "acme/app-db"
kind = "postgres"
target = "trusting"
username = "{role}"
initial_secret = "env:PW"
""",
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'whatever-it-is'")
    try:
        kt.cli("apply", "pg.toml", env={"PW": PW})
        rotated = kt.cli("rotate", "acme/app-db", "--reason", "try")
        assert rotated.code == 1 and "does not check passwords" in rotated.err
        assert "revoke" not in rotated.err  # it fails before promotion, not at revoke
        doctor = kt.cli("doctor")
        assert doctor.code == 1, doctor.out
        assert any(
            "target trusting" in ln and "does not check passwords" in ln
            for ln in doctor.out.splitlines()
        ), doctor.out
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP ROLE IF EXISTS {role}")


def test_worker_says_what_each_tick_rotated(kt: Harness) -> None:
    """`worker` used to run silently; each tick that did something now prints one line."""
    import signal

    from sqlalchemy import update

    from keyturn.db import repo
    from keyturn.db.models import Version

    smtp(kt)
    with kt.app.db.write() as session:  # the value is 200 days old: the missed 02:00 pass is due
        session.execute(update(Version).values(activated_at=utcnow() - timedelta(days=200)))
        session.flush()
        repo.refresh_due(session, repo.get_credential(session, "acme/smtp-admin"))
    proc = kt.popen("worker", env={"KEYTURN_POLL_SECONDS": "1"})
    try:
        assert proc.stderr is not None
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if "rotated acme/smtp-admin" in line:
                break
        assert any("running; Ctrl-C to stop" in ln for ln in lines)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "keyturn worker stopped" in rest


def test_doctor_with_a_wrong_key_names_the_key(kt: Harness) -> None:
    """The database opens; the key does not match it: doctor says `master key`, not
    `database`."""
    from tests.support.keyturn import new_master_key

    doctor = kt.cli("doctor", env={"KEYTURN_MASTER_KEY": new_master_key()})
    assert doctor.code == 1, doctor.out
    failed = [ln for ln in doctor.out.splitlines() if ln.startswith("fail")]
    assert len(failed) == 1 and "master key" in failed[0], doctor.out
    assert "database" not in failed[0].split("master key")[0], doctor.out


def test_a_passwd_file_in_a_missing_folder_is_refused_not_made(kt: Harness) -> None:
    """A mistyped `path` made the folders and a new file, and the rotation 'succeeded' on a
    file the mail server never reads."""
    kt.write(
        "keyturn.toml",
        '[targets.mail]\ntype = "passwd-file"\npath = "no-such-dir/users.passwd"\n'
        '[[credentials]]\nid = "acme/smtp"\ntarget = "mail"\nusername = "a@acme.example"\n',
    )
    assert kt.cli("apply", "keyturn.toml").code == 0
    result = kt.cli("rotate", "acme/smtp", "--reason", "t")
    assert result.code == 1, result
    assert "the folder" in result.err and "no-such-dir does not exist" in result.err, result.err
    assert not (kt.home / "no-such-dir").exists()


def test_doctor_says_once_that_a_target_is_down(kt: Harness) -> None:
    """A target that cannot be reached is one failure, not one more for each credential on
    it (each would fail the same way)."""
    from tests.servers import unused_port

    port = unused_port()
    creds = "".join(
        f'[[credentials]]\nid = "acme/db{i}"\nkind = "postgres"\ntarget = "pg"\n'
        f'username = "app{i}"\ninitial_secret = "env:PW"\n'
        for i in (1, 2)
    )
    kt.write(
        "down.toml",
        f'[targets.pg]\ntype = "postgres"\nhost = "127.0.0.1"\nport = {port}\n'
        'dbname = "postgres"\nadmin_user = "postgres"\nadmin_password = "env:PW"\n' + creds,
    )
    kt.cli("apply", "down.toml", env={"PW": "some-Password-0042"})
    doctor = kt.cli("doctor", env={"PW": "some-Password-0042"})
    assert doctor.code == 1, doctor.out
    failed = [ln for ln in doctor.out.splitlines() if ln.startswith("fail") and "target pg" in ln]
    assert len(failed) == 1 and "its credentials are not checked" in failed[0], doctor.out
