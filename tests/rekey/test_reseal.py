"""The re-encryption of versions (`rekey --data-keys`): worker processes, the slot-spliced
UPDATE, and the per-row check that leaves a row alone when it changed after it was read."""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from keyturn.crypto import envelope
from keyturn.crypto.envelope import Keyring
from keyturn.crypto.keys import load_key
from keyturn.db.models import AuditEntry, Credential, DataKey, Tenant, Version
from keyturn.db.vault import Vault
from keyturn.domain.errors import CryptoError, StoreUnavailable
from keyturn.domain.model import Secret
from keyturn.rekey import preflight, reseal
from keyturn.rekey.job import Rekey, Writer
from tests.rekey.conftest import Stored, dump, populate
from tests.support.keyturn import Harness


def _add(stored: Stored, tenant: str, cred_id: str, values: list[str]) -> None:
    app = stored.kt.app
    with app.db.write() as session:
        app.vault.tenant_key(session, tenant)
        session.add(Credential(id=cred_id, tenant_id=tenant, kind="api-key"))
        for number, value in enumerate(values, 1):
            ciphertext, key_id = app.vault.seal(session, tenant, cred_id, number, Secret(value))
            session.add(
                Version(
                    credential_id=cred_id,
                    number=number,
                    state="current" if number == len(values) else "retired",
                    ciphertext=ciphertext,
                    data_key_id=key_id,
                    fingerprint=app.vault.fingerprint(Secret(value)),
                )
            )
            stored.values[(cred_id, number)] = value
            stored.data_keys.add(key_id)


def _open(keyring: Keyring, key_id: str, version: Version) -> str:
    """The version's value, opened with the data key its row names."""
    sealed = version.ciphertext
    aad = envelope.value_aad(version.credential_id, version.number)
    return AESGCM(keyring.data_key(key_id)).decrypt(sealed[:12], sealed[12:], aad).decode()


def _rekey(kt: Harness, stored: Stored, *args: str) -> dict[str, object]:
    result = kt.cli("rekey", "--data-keys", "--no-backup", "--json", *args, env=stored.rekey_env)
    assert result.code == 0, result.err
    summary: dict[str, object] = json.loads(result.out)
    return summary


@pytest.mark.parametrize("workers", ["0", "2"])
def test_every_version_is_resealed_in_process_and_by_workers(kt: Harness, workers: str) -> None:
    stored = populate(kt, 240, tenants=4)
    summary = _rekey(kt, stored, "--workers", workers, "--batch-size", "25")
    assert summary["versions_resealed"] == 240
    stored.check_all_under_new_key(fresh_data_keys=True)


@pytest.mark.parametrize("workers", ["0", "2"])
def test_values_of_every_length_and_sparse_ids(kt: Harness, workers: str) -> None:
    """Short, long and over-WIDE values share batches; deleted credentials leave id gaps."""
    stored = populate(kt, 40, tenants=2)
    lengths = [1, 7, 64, 300, reseal.WIDE - 40, reseal.WIDE + 1, 5000, 33]
    _add(stored, "t0", "t0/mixed", [secrets.token_hex(n)[:n] for n in lengths])
    _add(stored, "t1", "t1/gone", ["a", "b", "c"])
    _add(stored, "t1", "t1/after", [secrets.token_hex(20) for _ in range(30)])
    app = kt.app
    with app.db.write() as session:
        session.execute(delete(Version).where(Version.credential_id == "t1/gone"))
        session.execute(delete(Credential).where(Credential.id == "t1/gone"))
    for number in (1, 2, 3):
        del stored.values[("t1/gone", number)]
    summary = _rekey(kt, stored, "--workers", workers, "--batch-size", "16")
    assert summary["versions_resealed"] == len(stored.values)
    stored.check_all_under_new_key(fresh_data_keys=True)


def _left_under(kt: Harness, retired: list[str]) -> bool:
    with kt.app.db.read() as session:
        used = set(session.execute(select(Version.data_key_id)).scalars())
    return not used.isdisjoint(retired)


def _job(stored: Stored, batch_size: int) -> tuple[Rekey, preflight.State]:
    """A rekey job set up to the versions phase, to drive its batches by hand."""
    kt = stored.kt
    new = load_key(stored.new_key, None, "KEYTURN_MASTER_KEY")
    old = load_key(kt.master_key, None, "KEYTURN_OLD_MASTER_KEY")
    assert new is not None and old is not None
    db = kt.app.db
    with db.read() as session:
        plan = preflight.plan(session, new, old, True)
    vault = Vault(db, [new, old])
    job = Rekey(db, plan, vault.keyring, batch_size=batch_size, workers=0)
    state = job._begin()
    job._rewrap()
    job._fresh_keys(state)
    return job, state


def test_a_row_replaced_after_it_was_read_is_left_alone_then_swept(kt: Harness) -> None:
    """Invariant: the splice UPDATE writes a re-sealed value only over the very value it was
    made from. Here the newest version is deleted and another inserted with the same id (SQLite
    reuses the highest rowid) between the read and the write: its slot does not fit it, so it
    stays as it is, readable, and the job's sweep re-seals it."""
    stored = populate(kt, 12, tenants=1)
    job, state = _job(stored, batch_size=100)
    keys = job._keys(sorted(state.retire))
    sql = reseal.statements(job.db.is_sqlite, keys.padded)
    app = kt.app
    with app.db.read() as session:
        last = session.execute(select(Version).order_by(Version.id.desc()).limit(1)).scalar_one()
        lo = session.scalar(select(Version.id).order_by(Version.id).limit(1))
    assert lo is not None
    connection = reseal.connect(reseal.source(job.db))
    batch = reseal.Resealer(keys).batch(lo, lo + 99, *reseal.read(connection, sql, lo, lo + 99))
    connection.close()
    assert batch.count == 12

    old_key = last.data_key_id
    with app.db.write() as session:
        session.execute(delete(Version).where(Version.id == last.id))
        # Sealed under the retired key, as by a rotation that began before the tenant switched.
        nonce = os.urandom(12)
        aad = envelope.value_aad(last.credential_id, last.number)
        cipher = AESGCM(app.vault.keyring.data_key(old_key))
        ciphertext = nonce + cipher.encrypt(nonce, b"replaced meanwhile", aad)
        session.add(
            Version(
                id=last.id,
                credential_id=last.credential_id,
                number=last.number,
                state=last.state,
                ciphertext=ciphertext,
                data_key_id=old_key,
                fingerprint=last.fingerprint,
            )
        )
    with Writer(job.db, sql, keys.key_width) as writer:
        assert writer.write(batch, 1) == 11
    with app.db.read() as session:
        row = session.get(Version, last.id)
        assert row is not None and row.data_key_id == old_key
        assert app.vault.reveal(row).reveal() == "replaced meanwhile"
    stored.values[(last.credential_id, last.number)] = "replaced meanwhile"

    assert _left_under(kt, state.retire)
    job._reseal(state)  # the sweep
    assert not _left_under(kt, state.retire)
    job._finish()
    stored.check_all_under_new_key(fresh_data_keys=True)


def _fresh_key(session: Session, tenant_id: str) -> tuple[Tenant, DataKey]:
    """A tenant and its active data key (after the job's tenants phase: its fresh one)."""
    tenant = session.get(Tenant, tenant_id)
    assert tenant is not None
    key = session.get(DataKey, tenant.data_key_id)
    assert key is not None
    return tenant, key


def _versions(kt: Harness) -> list[tuple[object, ...]]:
    return [row for row in dump(kt) if row[0] == "versions"]


def test_fresh_key_ids_of_different_lengths_are_padded_and_trimmed(kt: Harness) -> None:
    stored = populate(kt, 30, tenants=3)
    job, state = _job(stored, batch_size=7)
    app = kt.app
    # Give one tenant a fresh key whose id is longer than the others' (the same material,
    # wrapped under the new master key as the job stores its fresh keys).
    with app.db.write() as session:
        tenant, fresh = _fresh_key(session, "t1")
        longer = fresh.id + "-longer"
        material = job.keyring.data_key(fresh.id)
        wrapped = envelope.wrap(job.new, longer, material)
        session.add(
            DataKey(id=longer, tenant_id="t1", master_key_id=job.new.id, wrapped=wrapped.wrapped)
        )
        tenant.data_key_id = longer
    keys = job._keys(sorted(state.retire))
    assert keys.padded
    job._reseal(state)
    with app.db.read() as session:
        used = set(session.execute(select(Version.data_key_id)).scalars())
    assert longer in used
    assert all(key == key.strip() for key in used)
    with app.db.read() as session:
        for version in session.execute(select(Version)).scalars():
            value = _open(job.keyring, version.data_key_id, version)
            assert value == stored.values[(version.credential_id, version.number)]


def test_a_tampered_version_stops_the_job_naming_it(kt: Harness) -> None:
    stored = populate(kt, 20, tenants=1)
    app = kt.app
    with app.db.write() as session:
        version = session.execute(select(Version).order_by(Version.id).limit(1)).scalar_one()
        version.ciphertext = version.ciphertext[:-1] + bytes([version.ciphertext[-1] ^ 1])
        vid = version.id
    for workers in ("0", "2"):
        result = kt.cli(
            "rekey",
            "--data-keys",
            "--no-backup",
            "--json",
            "--workers",
            workers,
            env=stored.rekey_env,
        )
        assert result.code == 1
        assert f"version {vid} does not decrypt" in result.err
        assert len(result.err.strip().splitlines()) == 1


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker.encode() in environ:
            found.append(int(entry.name))
    return found


@pytest.mark.slow
@pytest.mark.parametrize("point", ["rekey:versions:2:commit", "rekey:versions:5:after"])
def test_workers_go_when_the_rekey_is_killed(kt: Harness, point: str) -> None:
    stored = populate(kt, 200, tenants=2)
    marker = f"KEYTURN_TEST_RUN={secrets.token_hex(8)}"
    name, value = marker.split("=")
    crashed = kt.spawn(
        "rekey",
        "--data-keys",
        "--no-backup",
        "--workers",
        "2",
        "--batch-size",
        "10",
        env={**stored.rekey_env, "KEYTURN_TEST_CRASH_AT": point, name: value},
    )
    assert crashed.code == -signal.SIGKILL, crashed.err
    deadline = time.monotonic() + 20
    while _processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_with(marker) == []
    _rekey(kt, stored, "--workers", "2", "--batch-size", "10")
    stored.check_all_under_new_key(fresh_data_keys=True)


def test_workers_do_not_run_the_callers_main_module(kt: Harness, tmp_path: Path) -> None:
    """A spawned worker would first re-run its parent's main module (here a caller's script,
    or the whole CLI): the job hides it while the workers start."""
    stored = populate(kt, 60, tenants=2)
    runs = tmp_path / "runs"
    script = tmp_path / "caller.py"
    script.write_text(
        "from pathlib import Path\n"
        f"with Path({str(runs)!r}).open('a') as log:\n"
        "    log.write('run\\n')\n"
        "from keyturn.rekey.service import Options, rekey\n"
        "from keyturn.settings import Settings\n"
        "if __name__ == '__main__':\n"
        f"    settings = Settings(db={kt.db_url!r}, master_key={stored.new_key!r},\n"
        f"                        old_master_key={kt.master_key!r})\n"
        "    rekey(settings, Options(data_keys=True, backup=False, batch_size=10, workers=2))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYTURN_")}
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert runs.read_text() == "run\n"
    stored.check_all_under_new_key(fresh_data_keys=True)


@pytest.mark.parametrize("workers", ["0", "2"])
def test_no_value_or_key_in_clear_anywhere_the_rekey_wrote(kt: Harness, workers: str) -> None:
    """Invariants 5 and 7 through a re-encryption: no stored value, master key or data key
    material appears in the command's output, the audit log, or (SQLite) any byte of the
    database file, its WAL or the backup taken first."""
    stored = populate(kt, 120, tenants=3)
    result = kt.cli(
        "rekey", "--data-keys", "--workers", workers, "--batch-size", "16", env=stored.rekey_env
    )
    assert result.code == 0, result.err
    app = stored.open(stored.new_key)
    try:
        with app.db.read() as session:
            audit_rows = [repr(tuple(row)) for row in session.execute(select(AuditEntry.__table__))]
            key_ids = list(session.execute(select(DataKey.id)).scalars())
        materials = [app.vault.keyring.data_key(key_id) for key_id in key_ids]
    finally:
        app.close()
    masters = [load_key(k, None, "KEYTURN_MASTER_KEY") for k in (stored.new_key, kt.master_key)]
    texts = [v.encode() for v in stored.values.values()]
    needles = [*texts, stored.new_key.encode(), kt.master_key.encode()]
    needles += [m.material for m in masters if m is not None] + materials
    written = [result.out.encode(), result.err.encode(), "\n".join(audit_rows).encode()]
    if not kt.db_url.startswith("postgresql"):
        db = Path(kt.db_url.removeprefix("sqlite:///"))
        files = [db, db.with_name(db.name + "-wal"), *kt.home.glob("*.before-rekey-*.bak")]
        written += [f.read_bytes() for f in files if f.exists()]
        assert len(files) == 3 and all(f.exists() for f in files)
    leaks = [i for i, needle in enumerate(needles) if any(needle in blob for blob in written)]
    assert leaks == []


def _ids(kt: Harness) -> tuple[int, int]:
    with kt.app.db.read() as session:
        ids = list(session.execute(select(Version.id)).scalars())
    return min(ids), max(ids)


def _rows(columns: reseal.Columns) -> list[tuple[object, ...]]:
    return list(zip(*dataclasses.astuple(columns), strict=True))


def test_the_column_read_agrees_with_the_row_read(kt: Harness) -> None:
    """One aggregate row per range, cut apart in Python, gives the same versions as reading
    them row by row: mixed lengths, id gaps, values over WIDE (read apart), empty ranges."""
    stored = populate(kt, 30, tenants=2)
    lengths = [1, 40, reseal.WIDE - 28, reseal.WIDE - 27, 3000, 12]
    _add(stored, "t0", "t0/mixed", [secrets.token_hex(n)[:n] for n in lengths])
    _add(stored, "t1", "t1/gone", ["x", "y"])
    _add(stored, "t1", "t1/after", ["z" * 20] * 5)
    with kt.app.db.write() as session:
        session.execute(delete(Version).where(Version.credential_id == "t1/gone"))
    lo, hi = _ids(kt)
    sql = reseal.statements(kt.app.db.is_sqlite, padded=False)
    connection = reseal.connect(reseal.source(kt.app.db))
    try:
        for start, end in [(lo, hi), (lo, lo + 6), (lo + 7, hi + 50), (hi + 1, hi + 9)]:
            narrow, wide = reseal.read(connection, sql, start, end)
            rows = reseal.query(connection, sql.read_rows, lo=start, hi=end, above=-1, upto=2**62)
            expected = reseal.Columns.of_rows(rows)
            assert sorted(_rows(narrow) + _rows(wide)) == sorted(_rows(expected))
            assert all(len(body) + 12 <= reseal.WIDE for body in narrow.bodies)
            assert all(len(body) + 12 > reseal.WIDE for body in wide.bodies)
    finally:
        connection.close()


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_separator_inside_a_credential_id_is_read_row_by_row(kt: Harness, workers: str) -> None:
    """keyturn refuses such ids, but a row that holds one must still be re-sealed: its
    range's columns do not line up, so that range is read again a row at a time."""
    stored = populate(kt, 12, tenants=1)
    app = kt.app
    with app.db.write() as session:
        session.add(Credential(id="t0/odd,id", tenant_id="t0", kind="api-key"))
        ciphertext, key_id = app.vault.seal(session, "t0", "t0/odd,id", 1, Secret("odd value"))
        session.add(
            Version(
                credential_id="t0/odd,id",
                number=1,
                state="current",
                ciphertext=ciphertext,
                data_key_id=key_id,
                fingerprint=app.vault.fingerprint(Secret("odd value")),
            )
        )
    stored.values[("t0/odd,id", 1)] = "odd value"
    lo, hi = _ids(kt)
    sql = reseal.statements(app.db.is_sqlite, padded=False)
    connection = reseal.connect(reseal.source(app.db))
    try:
        (row,) = reseal.query(connection, sql.read, lo=lo, hi=hi)
        assert reseal.Columns.of_aggregate(row, lo, hi) is None
    finally:
        connection.close()
    summary = _rekey(kt, stored, "--workers", workers)
    assert summary["versions_resealed"] == 13
    stored.check_all_under_new_key(fresh_data_keys=True)


@pytest.mark.parametrize(("keep", "workers"), [(0, "0"), (11, "0"), (27, "0"), (11, "2")])
def test_a_truncated_value_stops_the_job_naming_it(kt: Harness, keep: int, workers: str) -> None:
    """A stored value too short to hold a nonce and a tag is reported like any value that
    does not decrypt: its id, one line, exit 1, no version changed."""
    stored = populate(kt, 20, tenants=1)
    with kt.app.db.write() as session:
        version = session.execute(select(Version).order_by(Version.id).offset(5)).scalars().first()
        assert version is not None
        version.ciphertext = version.ciphertext[:keep]
        vid = version.id
    before = _versions(kt)
    result = kt.cli(
        "rekey", "--data-keys", "--no-backup", "--json", "--workers", workers, env=stored.rekey_env
    )
    assert result.code == 1
    assert f"version {vid} does not decrypt" in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert _versions(kt) == before


def test_a_fresh_key_that_does_not_open_as_stored_stops_before_any_write(kt: Harness) -> None:
    """Values are verified under the fresh key as it is stored (opened with the new master
    key alone), not only as this process holds it: a stored key that does not match stops the
    job before a single version is written."""
    stored = populate(kt, 30, tenants=2)
    job, state = _job(stored, batch_size=10)
    app = kt.app
    with app.db.write() as session:
        _, fresh = _fresh_key(session, "t1")
        fresh.wrapped = fresh.wrapped[:-1] + bytes([fresh.wrapped[-1] ^ 1])
        fresh_id = fresh.id
    before = _versions(kt)
    with pytest.raises(CryptoError, match=f"data key {fresh_id} as stored does not open"):
        job._reseal(state)
    assert _versions(kt) == before


def test_a_version_replaced_behind_the_pass_is_found_by_the_sweep(
    kt: Harness, tmp_path: Path
) -> None:
    """The pass skips its closing sweep only when every batch changed all the rows it read
    and no other connection wrote meanwhile. Here, while the rekey is held after its first
    batch, a version of that batch is replaced under the same id by one sealed under its
    retired key (as by a rotation that began before its tenant switched keys): every batch
    still matches what it read, but the database changed, so the sweep runs and re-seals it."""
    stored = populate(kt, 40, tenants=1)
    args = ("rekey", "--data-keys", "--no-backup", "--json", "--workers", "0", "--batch-size")
    with kt.held("rekey:versions:1:after", tmp_path, *args, "10", env=stored.rekey_env) as rekey:
        app = kt.app
        old_key = sorted(stored.data_keys)[0]
        with app.db.write() as session:
            first = session.execute(select(Version).order_by(Version.id).limit(1)).scalar_one()
            assert first.data_key_id != old_key  # the first batch re-sealed it
            replaced = Version(
                id=first.id,
                credential_id=first.credential_id,
                number=first.number,
                state=first.state,
                ciphertext=b"",
                data_key_id=old_key,
                fingerprint=first.fingerprint,
            )
            nonce = os.urandom(12)
            aad = envelope.value_aad(first.credential_id, first.number)
            cipher = AESGCM(app.vault.keyring.data_key(old_key))
            replaced.ciphertext = nonce + cipher.encrypt(nonce, b"replaced behind", aad)
            session.delete(first)
            session.flush()
            session.add(replaced)
        stored.values[(replaced.credential_id, replaced.number)] = "replaced behind"
    _, err = rekey.communicate(timeout=120)
    assert rekey.returncode == 0, err
    stored.check_all_under_new_key(fresh_data_keys=True)


def _add_raw(kt: Harness, tenant: str, key_id: str, sealed: bytes, vid: int | None = None) -> int:
    """A version row written as it is, outside keyturn's own checks."""
    with kt.app.db.write() as session:
        cred = session.execute(select(Credential).where(Credential.tenant_id == tenant)).scalar()
        assert cred is not None
        row = Version(
            id=vid,
            credential_id=cred.id,
            number=1000 + abs(vid or 0),
            state="retired",
            ciphertext=sealed,
            data_key_id=key_id,
            fingerprint="hmac-sha256:raw",
        )
        session.add(row)
        session.flush()
        return row.id


def test_a_truncated_value_under_a_key_not_being_retired_is_left_alone(kt: Harness) -> None:
    """Only versions under retired keys are opened: a broken one under a fresh key (written
    after the switch) is none of the job's business and must not stop it."""
    stored = populate(kt, 20, tenants=1)
    job, state = _job(stored, batch_size=100)
    with kt.app.db.read() as session:
        _, fresh = _fresh_key(session, "t0")
    vid = _add_raw(kt, "t0", fresh.id, b"tiny")
    job._reseal(state)
    with kt.app.db.write() as session:
        row = session.get(Version, vid)
        assert row is not None and row.ciphertext == b"tiny" and row.data_key_id == fresh.id
        session.delete(row)
    job._finish()
    stored.check_all_under_new_key(fresh_data_keys=True)


def test_a_version_with_a_negative_id_is_resealed(kt: Harness) -> None:
    """The pass starts at the lowest id there is, as the sweep scans: no row below it."""
    stored = populate(kt, 10, tenants=1)
    app = kt.app
    old_key = sorted(stored.data_keys)[0]
    with app.db.read() as session:
        cred = session.execute(select(Credential)).scalars().first()
        assert cred is not None
    nonce = os.urandom(12)
    aad = envelope.value_aad(cred.id, 1005)
    cipher = AESGCM(app.vault.keyring.data_key(old_key))
    _add_raw(kt, "t0", old_key, nonce + cipher.encrypt(nonce, b"below zero", aad), vid=-5)
    stored.values[(cred.id, 1005)] = "below zero"
    summary = _rekey(kt, stored, "--workers", "0")
    assert summary["versions_resealed"] == 11
    stored.check_all_under_new_key(fresh_data_keys=True)


def test_a_version_under_a_retired_key_the_job_cannot_open_is_not_passed_over(
    kt: Harness,
) -> None:
    """A version under a retired key id that no data key row holds cannot be re-sealed; the
    job does not report success over it: the sweep sees it every round and says so."""
    stored = populate(kt, 10, tenants=1)
    job, state = _job(stored, batch_size=100)
    state.retire.append("dk-ghost")
    _add_raw(kt, "t0", "dk-ghost", os.urandom(60))
    with pytest.raises(StoreUnavailable, match="kept appearing"):
        job._reseal(state)


def _count_scans(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The closing sweep's scans, as they happen (the job inline)."""
    scans: list[tuple[int, int]] = []
    scan = reseal.keys_used

    def counted(connection: Any, sql: reseal.Statements, lo: int, hi: int) -> set[str]:
        scans.append((lo, hi))
        return scan(connection, sql, lo, hi)

    monkeypatch.setattr(reseal, "keys_used", counted)
    return scans


def test_a_quiet_pass_skips_the_sweep_on_sqlite(
    kt: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nobody else wrote during the pass (PRAGMA data_version): no closing scan. PostgreSQL
    has no such counter and always scans."""
    scans = _count_scans(monkeypatch)
    stored = populate(kt, 30, tenants=2)
    job, state = _job(stored, batch_size=10)
    job._reseal(state)
    assert len(scans) == (0 if kt.app.db.is_sqlite else 1)
    job._finish()
    stored.check_all_under_new_key(fresh_data_keys=True)


def test_a_write_by_another_connection_during_the_pass_brings_the_sweep(
    kt: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    scans = _count_scans(monkeypatch)
    stored = populate(kt, 30, tenants=2)
    job, state = _job(stored, batch_size=10)
    write = Writer.write

    def write_then_another(writer: Writer, batch: reseal.Batch, batch_no: int) -> int:
        if batch_no == 1:  # an API process would write an audit entry, say
            with kt.app.db.write() as session:
                session.add(Tenant(id="t-meanwhile", data_key_id="dk-meanwhile"))
        return write(writer, batch, batch_no)

    monkeypatch.setattr(Writer, "write", write_then_another)
    job._reseal(state)
    assert len(scans) == 1
    job._finish()
    stored.check_all_under_new_key(fresh_data_keys=True)
