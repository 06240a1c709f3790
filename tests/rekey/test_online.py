"""Reads and writes keep working while `keyturn rekey --data-keys` runs in another process.

Readers hold both master keys (as the rekey procedure asks): the HTTP API
(`GET /api/v1/credentials/{id}/secret`, in-process client), threads decrypting every version
(Vault.reveal), `keyturn get` in subprocesses; and a writer seals new versions the way a
rotation's create step does.
"""

from __future__ import annotations

import threading
import time

from sqlalchemy import select

from keyturn.db.models import Credential, Version
from keyturn.domain.model import Secret
from tests.rekey.conftest import Stored, populate
from tests.support.keyturn import Harness


def _reader(
    stored: Stored, ready: threading.Semaphore, done: threading.Event, report: dict[str, object]
) -> None:
    # Opened before the rekey starts, as a running server would be (a process that starts
    # after it finished is refused with the stale-key advice instead).
    app = stored.open(stored.new_key, stored.kt.master_key)
    passes = mixed = 0
    try:
        while not done.is_set():
            with app.db.read() as session:
                versions = session.execute(select(Version)).scalars().all()
            got = {(v.credential_id, v.number): app.vault.reveal(v).reveal() for v in versions}
            assert {k: got[k] for k in stored.values} == stored.values
            keys = {v.data_key_id for v in versions}
            mixed += bool(keys & stored.data_keys) and bool(keys - stored.data_keys)
            passes += 1
            if passes == 1:
                ready.release()
    except Exception as exc:  # reported to the test thread
        report["error"] = repr(exc)
    finally:
        report["passes"], report["mixed"] = passes, mixed
        app.close()


def _api_reader(
    stored: Stored, ready: threading.Semaphore, done: threading.Event, report: dict[str, object]
) -> None:
    from fastapi.testclient import TestClient

    from keyturn import auth
    from keyturn.api import create_app

    app = stored.open(stored.new_key, stored.kt.master_key)
    with app.db.write() as session:
        token = auth.create_token(session, "admin", name="rekey test").token
    client = TestClient(create_app(app))
    headers = {"Authorization": f"Bearer {token}"}
    statuses: list[int] = []
    try:
        while not done.is_set():
            for cred in ("t0/cred-0", "t1/cred-1", "t2/cred-2"):
                reply = client.get(f"/api/v1/credentials/{cred}/secret", headers=headers)
                statuses.append(reply.status_code)
                assert reply.status_code == 200, reply.text
                assert reply.json()["value"] == stored.values[(cred, 4)]
            if len(statuses) == 3:
                ready.release()
    except Exception as exc:
        report["error"] = repr(exc)
    finally:
        report["passes"], report["mixed"] = len(statuses), 0
        client.close()
        app.close()


def _writer(
    stored: Stored, ready: threading.Semaphore, done: threading.Event, written: dict[int, str]
) -> None:
    app = stored.open(stored.new_key, stored.kt.master_key)
    number = 0
    try:
        with app.db.write() as session:
            session.add(Credential(id="t0/live", tenant_id="t0", kind="api-key"))
        ready.release()
        while not done.is_set() and number < 200:
            number += 1
            value = f"live-{number}"
            with app.db.write() as session:
                ciphertext, key_id = app.vault.seal(session, "t0", "t0/live", number, Secret(value))
                session.add(
                    Version(
                        credential_id="t0/live",
                        number=number,
                        state="retired",
                        ciphertext=ciphertext,
                        data_key_id=key_id,
                        fingerprint=app.vault.fingerprint(Secret(value)),
                    )
                )
            written[number] = value
            time.sleep(0.005)
    finally:
        app.close()


def test_reads_and_writes_during_a_rekey(kt: Harness) -> None:
    stored = populate(kt, 2000)
    done = threading.Event()
    reports: list[dict[str, object]] = [{}, {}]
    written: dict[int, str] = {}
    ready = threading.Semaphore(0)
    threads = [threading.Thread(target=_reader, args=(stored, ready, done, r)) for r in reports]
    threads.append(threading.Thread(target=_writer, args=(stored, ready, done, written)))
    api_report: dict[str, object] = {}
    threads.append(threading.Thread(target=_api_reader, args=(stored, ready, done, api_report)))
    for thread in threads:
        thread.start()
    for _ in threads:
        assert ready.acquire(timeout=120), reports
    # One version per transaction: the re-encryption lasts long enough (some seconds) for
    # whole reader passes to fall inside it.
    rekey = kt.popen(
        "rekey", "--data-keys", "--no-backup", "--batch-size", "1", env=stored.rekey_env
    )
    gets = []
    while rekey.poll() is None:
        gets.append(kt.spawn("get", "t1/cred-1", env=stored.rekey_env))
    _, err = rekey.communicate()
    done.set()
    for thread in threads:
        thread.join(timeout=60)
    assert rekey.returncode == 0, err
    for report in [*reports, api_report]:
        assert "error" not in report, report
        assert int(report["passes"]) > 0  # type: ignore[call-overload]
    # The API answered while the rekey ran, not only before it.
    assert int(api_report["passes"]) > 3, api_report  # type: ignore[call-overload]
    assert sum(int(r["mixed"]) for r in reports) > 0, f"no read overlapped the rekey: {reports}"  # type: ignore[call-overload]
    expected = stored.values[("t1/cred-1", 4)]
    for got in gets:
        # A `get` that starts after the rekey finished is refused with the stale-key advice.
        assert (got.code == 0 and got.out.strip() == expected) or (
            "remove KEYTURN_OLD_MASTER_KEY" in got.err
        ), got.err
    assert any(g.code == 0 for g in gets)
    stored.values.update({("t0/live", n): v for n, v in written.items()})
    stored.check_all_under_new_key(fresh_data_keys=True)
