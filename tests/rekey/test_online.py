"""Reads and writes keep working while `keyturn rekey --data-keys` runs in another process.

Readers hold both master keys (as the rekey procedure asks): the HTTP API
(`GET /api/v1/credentials/{id}/secret`, in-process client), threads decrypting every version
(Vault.reveal), `keyturn get` in subprocesses; and a writer seals new versions the way a
rotation's create step does. The rekey is held half-way through its versions (a test pause
point) until every reader has read the database whole in that state: half the versions under
the retired data keys, half under the fresh ones. No timing decides whether they overlap.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select

from keyturn.db.models import Credential, Version
from keyturn.domain.model import Secret
from tests.rekey.conftest import Stored, populate
from tests.support.keyturn import Harness, Result


def _reader(
    stored: Stored, ready: threading.Semaphore, done: threading.Event, report: dict[str, object]
) -> None:
    # Opened before the rekey starts, as a running server would be (a process that starts
    # after it finished is refused with the stale-key advice instead).
    app = stored.open(stored.new_key, stored.kt.master_key)
    report["passes"] = report["mixed"] = 0
    try:
        while not done.is_set():
            with app.db.read() as session:
                versions = session.execute(select(Version)).scalars().all()
            got = {(v.credential_id, v.number): app.vault.reveal(v).reveal() for v in versions}
            assert {k: got[k] for k in stored.values} == stored.values
            keys = {v.data_key_id for v in versions}
            mixed = bool(keys & stored.data_keys) and bool(keys - stored.data_keys)
            report["mixed"] = int(report["mixed"]) + mixed  # type: ignore[call-overload]
            report["passes"] = int(report["passes"]) + 1  # type: ignore[call-overload]
            if report["passes"] == 1:
                ready.release()
    except Exception as exc:  # reported to the test thread
        report["error"] = repr(exc)
    finally:
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
    report["passes"] = 0
    try:
        while not done.is_set():
            for cred in ("t0/cred-0", "t1/cred-1", "t2/cred-2"):
                reply = client.get(f"/api/v1/credentials/{cred}/secret", headers=headers)
                assert reply.status_code == 200, reply.text
                assert reply.json()["value"] == stored.values[(cred, 4)]
            report["passes"] = int(report["passes"]) + 1  # type: ignore[call-overload]
            if report["passes"] == 1:
                ready.release()
    except Exception as exc:
        report["error"] = repr(exc)
    finally:
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


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _rekey_held_half_way(
    kt: Harness,
    stored: Stored,
    tmp_path: Path,
    reports: list[dict[str, object]],
    api_report: dict[str, object],
) -> tuple[list[Result], subprocess.Popen[str], str]:
    """Run the rekey, hold it after 20 batches of 50 (1000 of the 2000 versions re-sealed)
    until every reader has made whole passes there, then let it finish."""
    args = ("rekey", "--data-keys", "--no-backup", "--json", "--batch-size", "50")
    gets = []
    with kt.held("rekey:versions:20:after", tmp_path, *args, env=stored.rekey_env) as rekey:
        passes = [int(r["passes"]) for r in reports]  # type: ignore[call-overload]
        api_passes = int(api_report["passes"])  # type: ignore[call-overload]
        gets.append(kt.spawn("get", "t1/cred-1", env=stored.rekey_env))
        # A pass that began after the pause read the database whole in the mixed state.
        _wait_for(
            lambda: all(
                int(r["passes"]) >= p + 2 or "error" in r  # type: ignore[call-overload]
                for r, p in zip(reports, passes, strict=True)
            ),
            "two reader passes during the pause",
        )
        _wait_for(
            lambda: int(api_report["passes"]) > api_passes or "error" in api_report,  # type: ignore[call-overload]
            "an API read during the pause",
        )
    while rekey.poll() is None:
        gets.append(kt.spawn("get", "t1/cred-1", env=stored.rekey_env))
    _, err = rekey.communicate()
    return gets, rekey, err


def test_reads_and_writes_during_a_rekey(kt: Harness, tmp_path: Path) -> None:
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
    try:
        for _ in threads:
            assert ready.acquire(timeout=120), reports
        gets, rekey, err = _rekey_held_half_way(kt, stored, tmp_path, reports, api_report)
    finally:
        done.set()
        for thread in threads:
            thread.join(timeout=60)
    assert rekey.returncode == 0, err
    for report in [*reports, api_report]:
        assert "error" not in report, report
    assert all(int(r["mixed"]) > 0 for r in reports), reports  # type: ignore[call-overload]
    expected = stored.values[("t1/cred-1", 4)]
    # The first `get` ran during the pause; one that starts after the rekey finished is
    # refused with the stale-key advice.
    assert gets[0].code == 0 and gets[0].out.strip() == expected, gets[0].err
    for got in gets:
        assert (got.code == 0 and got.out.strip() == expected) or (
            "remove KEYTURN_OLD_MASTER_KEY" in got.err
        ), got.err
    stored.values.update({("t0/live", n): v for n, v in written.items()})
    stored.check_all_under_new_key(fresh_data_keys=True)
