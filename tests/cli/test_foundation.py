"""Issue 2's acceptance, through the CLI as a user runs it."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess

import pytest
from sqlalchemy import func, select

from keyturn.db.models import AuditEntry, Credential
from tests.support.keyturn import Harness

SEED_FILE = """
[policies.smtp]
max_age = "180d"
notice = "7d"

[[credentials]]
id = "acme/smtp-admin"
tenant = "acme"
kind = "smtp"
owner = "platform-team"
policy = "smtp"
initial_secret = "env:ACME_SMTP_PASSWORD"
"""
SECRET = "Qx7-very-distinct-smtp-password-4242"

sqlite_only = pytest.mark.skipif(
    os.environ.get("KEYTURN_TEST_DB") == "postgres", reason="inspects the SQLite file"
)


def _apply_seed(kt: Harness) -> None:
    kt.write("keyturn.toml", SEED_FILE)
    result = kt.cli("apply", "keyturn.toml", env={"ACME_SMTP_PASSWORD": SECRET})
    assert result.code == 0, result.err


def test_seed_file_applies_and_get_prints_the_value(kt: Harness) -> None:
    _apply_seed(kt)
    got = kt.cli("get", "acme/smtp-admin")
    assert got.code == 0 and got.out == SECRET + "\n"
    listed = json.loads(kt.cli("list", "--json").out)
    assert listed[0]["id"] == "acme/smtp-admin" and listed[0]["max_age_days"] == 180
    assert listed[0]["tenant"] == "acme" and listed[0]["due"] == "ok"


@pytest.mark.state_db
def test_apply_is_idempotent_and_dry_run_writes_nothing(kt: Harness) -> None:
    kt.write("keyturn.toml", SEED_FILE)
    env = {"ACME_SMTP_PASSWORD": SECRET}
    dry = kt.cli("apply", "--dry-run", "--json", "keyturn.toml", env=env)
    assert dry.code == 0 and len(json.loads(dry.out)["changes"]) == 3
    with kt.app.db.read() as session:
        assert session.scalar(select(func.count()).select_from(Credential)) == 0
    assert kt.cli("apply", "keyturn.toml", env=env).code == 0
    again = kt.cli("apply", "--json", "keyturn.toml", env=env)
    assert json.loads(again.out)["changes"] == []
    kt.write("keyturn.toml", SEED_FILE.replace("platform-team", "mail-team"))
    changed = json.loads(kt.cli("apply", "--json", "keyturn.toml", env=env).out)
    assert changed["changes"] == ["update credential acme/smtp-admin (owner)"]
    assert kt.cli("get", "acme/smtp-admin").out.strip() == SECRET  # not re-imported


@sqlite_only
def test_value_is_nowhere_in_clear_on_disk(kt: Harness) -> None:
    """No byte sequence of the secret in the database file, its WAL, or a backup of it."""
    with kt.app.db.read() as session:  # an open connection keeps the WAL from being folded
        session.execute(select(func.count()).select_from(Credential))
    _apply_seed(kt)
    assert kt.cli("get", "acme/smtp-admin").out.strip() == SECRET
    backup = kt.home / "backup.db"
    src = sqlite3.connect(kt.home / "keyturn.db")
    dst = sqlite3.connect(backup)
    src.backup(dst)
    src.close()
    dst.close()
    files = [p for p in kt.home.iterdir() if p.name.startswith(("keyturn.db", "backup.db"))]
    assert any(p.name.endswith("-wal") for p in files)
    for path in files:
        grep = subprocess.run(
            ["grep", "-a", "-c", SECRET, str(path)], capture_output=True, text=True, check=False
        )
        assert grep.stdout.strip() == "0", path
        assert SECRET.encode() not in path.read_bytes()


def test_wrong_master_key_is_one_line_and_nothing_is_harmed(kt: Harness) -> None:
    _apply_seed(kt)
    wrong = "A" * 43
    result = kt.cli("get", "acme/smtp-admin", env={"KEYTURN_MASTER_KEY": wrong})
    assert result.code == 1 and result.out == ""
    assert len(result.err.strip().splitlines()) == 1
    assert "master key does not match" in result.err and "Traceback" not in result.err
    assert kt.cli("get", "acme/smtp-admin").out.strip() == SECRET


def test_malformed_master_key_is_one_line(kt: Harness) -> None:
    result = kt.cli("list", env={"KEYTURN_MASTER_KEY": "not-a-key"})
    assert result.code == 1 and "base64url of 32 bytes" in result.err
    assert "not-a-key" not in result.err


@pytest.mark.parametrize("bad", ["../x", "a//b", "A B", "x" * 10_240])
def test_invalid_ids_are_refused_and_nothing_is_written(kt: Harness, bad: str) -> None:
    with kt.app.db.read() as session:
        before = session.scalar(select(func.count()).select_from(AuditEntry))
    for args in (["get", bad], ["show", bad], ["rotate", bad, "--reason", "x"]):
        result = kt.cli(*args)
        assert result.code == 1 and "invalid credential id" in result.err
        assert len(result.err.strip().splitlines()) == 1 and len(result.err) < 300
    kt.write("bad.toml", f'[[credentials]]\nid = "{bad}"\n')
    assert kt.cli("apply", "bad.toml").code == 1
    with kt.app.db.read() as session:
        assert session.scalar(select(func.count()).select_from(AuditEntry)) == before
        assert session.scalar(select(func.count()).select_from(Credential)) == 0


def test_unknown_credential_is_one_line(kt: Harness) -> None:
    result = kt.cli("get", "nope/missing")
    assert result.code == 1 and result.err.strip() == "error: no credential 'nope/missing'"


def test_usage_errors_exit_2(kt: Harness) -> None:
    assert kt.cli("rotate").code == 2
    assert kt.cli("no-such-command").code == 2


def test_uninitialised_database_says_what_to_do(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    kt = Harness(tmp_path, f"sqlite:///{tmp_path / 'none.db'}")
    result = kt.cli("list")
    assert result.code == 1 and "run `keyturn init`" in result.err


def test_init_creates_a_key_file_and_prints_the_admin_token_once(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    kt = Harness(tmp_path, f"sqlite:///{tmp_path / 'k.db'}")
    del kt.env["KEYTURN_MASTER_KEY"]
    first = kt.cli("init", "--json")
    data = json.loads(first.out)
    assert first.code == 0 and data["admin_token"].startswith("kt_")
    key_file = tmp_path / "k.key"
    assert key_file.exists() and (key_file.stat().st_mode & 0o777) == 0o600
    second = kt.cli("init", "--json")
    assert json.loads(second.out)["admin_token"] is None
    kt.env["KEYTURN_MASTER_KEY_FILE"] = str(key_file)
    assert kt.cli("audit", "verify").code == 0


def test_database_owner_only_and_missing_key_explained(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Under a umask that lets others read, `init` still makes the SQLite file 0600 (the
    inventory and the audit log are in it). Without the key file `init` wrote, a command
    says which setting to point at it, not to run `init` again (which would not help)."""
    monkeypatch.chdir(tmp_path)
    kt = Harness(tmp_path, f"sqlite:///{tmp_path / 'k.db'}")
    del kt.env["KEYTURN_MASTER_KEY"]
    old = os.umask(0o022)
    try:
        assert kt.cli("init").code == 0
    finally:
        os.umask(old)
    assert ((tmp_path / "k.db").stat().st_mode & 0o777) == 0o600
    (tmp_path / "k.key").rename(tmp_path / "elsewhere.key")
    result = kt.cli("list")
    assert result.code == 1 and "KEYTURN_MASTER_KEY_FILE" in result.err
    assert "k.key" in result.err and "run `keyturn init`" not in result.err
    kt.env["KEYTURN_MASTER_KEY_FILE"] = str(tmp_path / "elsewhere.key")
    assert kt.cli("list").code == 0


def test_literal_secret_is_refused_and_nothing_applied(kt: Harness) -> None:
    kt.write("lit.toml", SEED_FILE.replace('"env:ACME_SMTP_PASSWORD"', '"hunter2hunter2"'))
    result = kt.cli("apply", "lit.toml")
    assert result.code == 1
    assert 'initial_secret = "env:' in result.err and "hunter2" not in result.err
    with kt.app.db.read() as session:
        assert session.scalar(select(func.count()).select_from(Credential)) == 0


@pytest.mark.parametrize(
    "snippet",
    [
        '[targets.db]\ntype = "passwd-file"\npath = "x"\nadmin_password = "plain-text-pw"\n',
        '[[credentials]]\nid = "a/b"\nowner = "AKIAIOSFODNN7EXAMPLE"\n',
        '[[credentials]]\nid = "a/b"\ntags = { note = "Zk8qP2vR9xT4mW7nB3cL6yH1" }\n',
        '[[credentials]]\nid = "a/b"\npurpose = "the key is AKIAIOSFODNN7EXAMPLE, for now"\n',
    ],
)
def test_literal_secrets_anywhere_are_refused(kt: Harness, snippet: str) -> None:
    kt.write("lit.toml", snippet)
    result = kt.cli("apply", "lit.toml")
    assert result.code == 1 and "reference it instead" in result.err
    if "admin_password" in snippet:  # the variable named after what holds the secret
        assert 'admin_password = "env:DB_ADMIN_PASSWORD"' in result.err


@pytest.mark.parametrize(
    ("snippet", "words"),
    [
        ("[[credentials]]\nid = 'a/b'\nbogus = 1\n", "Extra inputs are not permitted"),
        ("[policies.p]\nmax_age = '180 days'\n", "policies.p.max_age: invalid max_age"),
        ("[policies.p]\nschedule = '61 * * * *'\n", "invalid cron"),
        ("[[credentials]]\nid = 'a/b'\npolicy = 'nope'\n", "no policy 'nope'"),
        ("[[credentials]]\nid = 'a/b'\ntarget = 'nope'\nusername = 'u'\n", "no target 'nope'"),
        ("[targets.t]\ntype = 'no-such-type'\n", "[targets.t]: no target type 'no-such-type'"),
        ("[stores.s]\ntype = 'no-such-type'\n", "[stores.s]: no store type 'no-such-type'"),
        ("[targets.t]\ntype = 'passwd-file'\n", "path"),
        ("this is [not toml", "not valid TOML"),
        (
            "[[credentials]]\nid = 'a/b'\ninitial_secret = 'env:UNSET_VARIABLE_X'\n",
            "UNSET_VARIABLE_X is not set",
        ),
        ("[[credentials]]\nid = 'a/b'\n[[credentials]]\nid = 'a/b'\n", "declared twice"),
    ],
)
def test_malformed_inventory_is_one_clear_line(kt: Harness, snippet: str, words: str) -> None:
    kt.write("bad.toml", snippet)
    result = kt.cli("apply", "bad.toml")
    assert result.code == 1, result.out
    assert words in result.err and len(result.err.strip().splitlines()) == 1
    with kt.app.db.read() as session:
        assert session.scalar(select(func.count()).select_from(Credential)) == 0


def test_file_references_resolve_relative_to_the_file(kt: Harness) -> None:
    (kt.home / "secrets").mkdir()
    (kt.home / "secrets" / "pw").write_text(SECRET + "\n")
    kt.write("f.toml", '[[credentials]]\nid = "acme/x"\ninitial_secret = "file:secrets/pw"\n')
    assert kt.cli("apply", "f.toml").code == 0
    assert kt.cli("get", "acme/x").out.strip() == SECRET


def test_token_create_shows_the_token_once_and_stores_a_hash(kt: Harness) -> None:
    result = kt.cli("token", "create", "--role", "consumer", "--scope", "acme/*", "--json")
    token = json.loads(result.out)["token"]
    assert token.startswith("kt_") and len(token) >= 43
    from keyturn.db.models import ApiToken

    with kt.app.db.read() as session:
        rows = session.execute(select(ApiToken)).scalars().all()
    assert all(token not in (r.hash, r.id) for r in rows)
    assert kt.cli("token", "create", "--role", "consumer").code == 1  # least privilege
    assert kt.cli("token", "create", "--role", "root").code == 1


def test_verbose_shows_a_traceback(kt: Harness) -> None:
    result = kt.cli("-v", "get", "nope/missing")
    assert result.code == 1 and "Traceback" in result.err


def test_a_plugin_settings_error_names_the_problem_not_the_settings(kt: Harness) -> None:
    """pydantic's own message repeats every setting it was given (`input_value={...}`) and a
    link; a setting may hold what should have been a reference. One line, no input."""
    sentinel = "nbSentinelValue-8f3a2c"
    kt.write(  # `url` is not a setting (`base_url` is), and the required ones are missing
        "inv.toml",
        '[targets.h]\ntype = "http-api-key"\nurl = "http://127.0.0.1:1/"\n'
        f'headers = {{Authorization = "Bearer {sentinel}"}}\n'
        f'[targets.m]\ntype = "passwd-file"\npath = "x.passwd"\nnote = "{sentinel}"\n',
    )
    result = kt.cli("apply", "inv.toml")
    assert result.code == 1 and len(result.err.splitlines()) == 1, result.err
    assert "base_url: Field required (and 4 more)" in result.err, result.err
    assert sentinel not in result.err and "pydantic" not in result.err, result.err
    assert "input_value" not in result.err, result.err


def test_a_corrupt_default_key_file_is_named_as_keyturns_default(kt: Harness) -> None:
    """No KEYTURN_MASTER_KEY_FILE was set: the error names the file keyturn looked at by
    default, not a variable the user never set."""
    env = {"KEYTURN_DB": f"sqlite:///{kt.home / 'other.db'}", "KEYTURN_MASTER_KEY": ""}
    assert kt.cli("init", env=env).code == 0
    (kt.home / "other.key").write_text("not a key\n")
    result = kt.cli("list", env=env)
    assert result.code == 1
    assert "keyturn's default: KEYTURN_MASTER_KEY_FILE is not set" in result.err, result.err
