"""`keyturn rekey` as a user runs it: re-wrap, fresh data keys, wrong and stale keys, backups."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from sqlalchemy import select

from keyturn.db.models import DataKey, Version
from keyturn.domain.model import Secret
from tests.rekey.conftest import Stored, dump, populate
from tests.support.keyturn import Harness

on_postgres = os.environ.get("KEYTURN_TEST_DB") == "postgres"


def _ciphertexts(kt: Harness) -> dict[int, bytes]:
    with kt.app.db.read() as session:
        return dict(session.execute(select(Version.id, Version.ciphertext)).all())


def test_rewrap_keeps_ciphertexts_and_fingerprints(kt: Harness, stored: Stored) -> None:
    before = _ciphertexts(kt)
    fp_before = kt.app.vault.fingerprint(Secret("same value"))
    result = kt.cli("rekey", "--json", env=stored.rekey_env)
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    assert summary["data_keys_rewrapped"] == len(stored.data_keys)
    assert summary["keys_rewrapped"] is True
    assert summary["versions_resealed"] == 0
    stored.check_all_under_new_key(fresh_data_keys=False)
    assert _ciphertexts(kt) == before  # the fast path touches data keys only
    app = stored.open(stored.new_key)
    try:
        assert app.vault.fingerprint(Secret("same value")) == fp_before
    finally:
        app.close()


def test_data_keys_reencrypts_every_version(kt: Harness, stored: Stored) -> None:
    before = _ciphertexts(kt)
    result = kt.cli("rekey", "--data-keys", "--json", env=stored.rekey_env)
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    assert summary["versions_resealed"] == len(stored.values)
    assert summary["fresh_data_keys"] == 3
    stored.check_all_under_new_key(fresh_data_keys=True)
    after = _ciphertexts(kt)
    assert all(after[i] != before[i] for i in before)


def test_progress_bar_and_advice_to_remove_the_old_key(kt: Harness, stored: Stored) -> None:
    result = kt.cli("rekey", "--data-keys", env=stored.rekey_env)
    assert result.code == 0, result.err
    assert "re-encrypting versions" in result.err
    assert "remove KEYTURN_OLD_MASTER_KEY" in result.out
    assert f"{len(stored.values)} version(s) re-encrypted" in result.out


def test_the_advice_names_the_file_variable_that_held_the_old_key(
    kt: Harness, stored: Stored
) -> None:
    old = kt.home / "old.key"
    old.write_text(kt.master_key)
    old.chmod(0o600)
    env = {"KEYTURN_MASTER_KEY": stored.new_key, "KEYTURN_OLD_MASTER_KEY_FILE": str(old)}
    result = kt.cli("rekey", env=env)
    assert result.code == 0, result.err
    assert "now remove KEYTURN_OLD_MASTER_KEY_FILE (" in result.out


def test_wrong_old_key_fails_before_anything_is_written(kt: Harness, stored: Stored) -> None:
    before = dump(kt)
    wrong = Stored(kt).new_key
    result = kt.cli(
        "rekey",
        "--data-keys",
        env={"KEYTURN_MASTER_KEY": stored.new_key, "KEYTURN_OLD_MASTER_KEY": wrong},
    )
    assert result.code == 1
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert "KEYTURN_OLD_MASTER_KEY" in lines[0] and "nothing was changed" in lines[0]
    assert wrong not in result.err
    assert dump(kt) == before
    assert not list(kt.home.glob("*.bak")) and not list(kt.home.glob("*.dump"))


def test_stale_old_key_is_refused_after_the_rekey(kt: Harness, stored: Stored) -> None:
    assert kt.cli("rekey", env=stored.rekey_env).code == 0
    stale = kt.cli("list", env=stored.rekey_env)
    assert stale.code != 0
    assert "remove KEYTURN_OLD_MASTER_KEY" in stale.err
    again = kt.cli("rekey", env=stored.rekey_env)
    assert again.code != 0 and "remove KEYTURN_OLD_MASTER_KEY" in again.err
    # Only the old key: the database's keys are wrapped by a key that is not configured.
    old_only = kt.cli("list", env={"KEYTURN_MASTER_KEY": kt.master_key})
    assert old_only.code == 1 and "does not match" in old_only.err
    new_only = kt.cli("get", "t0/cred-0", env={"KEYTURN_MASTER_KEY": stored.new_key})
    assert new_only.code == 0, new_only.err
    assert new_only.out.strip() == stored.values[("t0/cred-0", 4)]


def test_data_keys_alone_needs_no_old_key(kt: Harness, stored: Stored) -> None:
    result = kt.cli("rekey", "--data-keys", "--json", env={"KEYTURN_MASTER_KEY": kt.master_key})
    assert result.code == 0, result.err
    stored.new_key = kt.master_key
    stored.check_all_under_new_key(fresh_data_keys=True)


def test_nothing_to_do_without_an_old_key(kt: Harness, stored: Stored) -> None:
    result = kt.cli("rekey", "--no-backup")
    assert result.code == 0, result.err
    assert "nothing to do" in result.out


@pytest.mark.skipif(on_postgres, reason="the SQLite backup API")
def test_sqlite_backup_next_to_the_database(kt: Harness, stored: Stored) -> None:
    result = kt.cli("rekey", "--json", env=stored.rekey_env)
    summary = json.loads(result.out)
    backup = Path(summary["backup"])
    assert backup.parent == kt.home and backup.name.startswith("keyturn.db.before-rekey-")
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    # The copy is the database as it was: still readable with the old key only.
    old = Stored(kt)
    old.kt = Harness(kt.home, f"sqlite:///{backup}")
    app = old.open(kt.master_key)
    try:
        with app.db.read() as session:
            assert {r for r in session.execute(select(DataKey.master_key_id)).scalars()} == {
                app.vault.master.id
            }
    finally:
        app.close()


@pytest.mark.skipif(not on_postgres, reason="pg_dump")
def test_postgres_backup_with_pg_dump(kt: Harness, stored: Stored, tmp_path: Path) -> None:
    out = tmp_path / "backups"
    out.mkdir()
    result = kt.cli("rekey", "--json", "--backup-dir", str(out), env=stored.rekey_env)
    assert result.code == 0, result.err
    (dump_file,) = out.glob("*.dump")
    assert stat.S_IMODE(dump_file.stat().st_mode) == 0o600
    assert dump_file.stat().st_size > 0


@pytest.mark.skipif(not on_postgres, reason="pg_dump")
def test_postgres_without_pg_dump_says_what_to_do(
    kt: Harness, stored: Stored, tmp_path: Path
) -> None:
    before = dump(kt)
    result = kt.cli("rekey", env={**stored.rekey_env, "PATH": str(tmp_path)})
    assert result.code == 1
    assert "pg_dump is not on PATH" in result.err and "--no-backup" in result.err
    assert dump(kt) == before
    result = kt.cli("rekey", "--no-backup", env={**stored.rekey_env, "PATH": str(tmp_path)})
    assert result.code == 0, result.err


def test_new_tenants_during_rekey_use_the_new_key(kt: Harness) -> None:
    stored = populate(kt, 8, tenants=1)
    assert kt.cli("rekey", "--data-keys", env=stored.rekey_env).code == 0
    app = stored.open(stored.new_key)
    try:
        with app.db.write() as session:
            app.vault.tenant_key(session, "later")
        with app.db.read() as session:
            masters = set(session.execute(select(DataKey.master_key_id)).scalars())
        assert masters == {app.vault.master.id}
    finally:
        app.close()
