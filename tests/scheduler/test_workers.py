"""Many `keyturn worker` processes over one database, one of them SIGKILLed mid-run: every
due credential is rotated exactly once and the dead worker's rotations are taken over."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from datetime import timedelta

from sqlalchemy import func, select, update

from keyturn.audit import log as audit
from keyturn.db.models import Credential, Rotation, Version, utcnow
from keyturn.domain.model import Secret
from keyturn.targets.base import Account, TargetContext
from keyturn.targets.passwd_file import PasswdFileTarget
from tests.support.keyturn import Harness

ON_POSTGRES = os.environ.get("KEYTURN_TEST_DB") == "postgres"
COUNT, WORKERS = (300, 3) if ON_POSTGRES else (40, 2)
TARGETS = 10


def inventory() -> str:
    parts = ['[policies.p]\nmax_age = "90d"\ngrace = "0s"\n']
    for t in range(TARGETS):
        parts.append(f'[targets.t{t}]\ntype = "passwd-file"\npath = "mail/t{t}.passwd"\n')
    for i in range(COUNT):
        parts.append(
            f'[[credentials]]\nid = "tenant{i % 7}/svc-{i:03d}"\npolicy = "p"\n'
            f'target = "t{i % TARGETS}"\nusername = "svc{i:03d}"\n'
            'initial_secret = "env:PW"\n'
        )
    return "\n".join(parts)


def _done(kt: Harness) -> int:
    with kt.app.db.read() as session:
        return int(
            session.scalar(
                select(func.count()).select_from(Rotation).where(Rotation.status == "done")
            )
            or 0
        )


def _wait(predicate, seconds: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_workers_share_the_work_and_survive_a_kill(kt: Harness) -> None:
    (kt.home / "mail").mkdir()
    kt.write("keyturn.toml", inventory())
    assert kt.cli("apply", "keyturn.toml", env={"PW": "initial-pw-0123456789"}).code == 0
    past = utcnow() - timedelta(days=91)
    with kt.app.db.write() as session:
        session.execute(update(Version).values(activated_at=past))
        session.execute(
            update(Credential).values(due_at=utcnow() - timedelta(hours=1), notice_at=past)
        )
    env = {"KEYTURN_POLL_SECONDS": "1", "KEYTURN_LEASE_SECONDS": "3", "KEYTURN_CONCURRENCY": "2"}
    workers = [
        kt.popen("worker", env={**env, "KEYTURN_WORKER_ID": f"w{i}"}) for i in range(WORKERS)
    ]
    try:

        def victim_busy() -> bool:
            with kt.app.db.read() as session:
                held = session.scalar(
                    select(func.count())
                    .select_from(Rotation)
                    .where(Rotation.lease_owner == "w0", Rotation.status != "done")
                )
            return bool(held) and _done(kt) >= 1

        if not _wait(victim_busy, 240):
            for proc in workers:
                proc.send_signal(signal.SIGTERM)
            errors = [proc.communicate(timeout=30)[1][-3000:] for proc in workers]
            raise AssertionError(f"worker w0 never held work ({_done(kt)} done): {errors}")
        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait(timeout=30)
        # What the dead worker left unfinished (its leases now run out).
        with kt.app.db.read() as session:
            held_by_victim = set(
                session.execute(
                    select(Rotation.id).where(
                        Rotation.lease_owner == "w0", Rotation.status != "done"
                    )
                ).scalars()
            )
        assert _wait(lambda: _done(kt) == COUNT, 240), f"only {_done(kt)} of {COUNT} done"
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in workers:
            proc.wait(timeout=30)
    assert workers[0].returncode == -signal.SIGKILL
    assert all(p.returncode == 0 for p in workers[1:]), [p.stderr.read() for p in workers[1:]]  # type: ignore[union-attr]

    with kt.app.db.read() as session:
        rotations = session.execute(select(Rotation)).scalars().all()
        versions = session.execute(select(Version)).scalars().all()
        entries = list(audit.iter_entries(session))
        assert audit.verify(session).ok
        creds = {c.id: c for c in session.execute(select(Credential)).scalars()}
        current = {
            v.credential_id: kt.app.vault.reveal(v) for v in versions if v.state == "current"
        }
    # Each credential rotated exactly once, into exactly one new value.
    assert Counter(r.credential_id for r in rotations) == Counter(dict.fromkeys(creds, 1))
    assert {r.status for r in rotations} == {"done"}
    assert Counter(v.state for v in versions) == {"current": COUNT, "retired": COUNT}
    done = [e for e in entries if e.action == "rotation.done"]
    assert Counter(e.credential_id for e in done) == Counter(dict.fromkeys(creds, 1))
    # The work was shared, and the dead worker's rotations were finished by the others.
    finishers = Counter(e.details["worker"] for e in done)
    if ON_POSTGRES:  # on SQLite one writer at a time: a single worker may well do it all
        assert len(finishers) >= 2, finishers
    taken_over = [e for e in done if e.details["rotation"] in held_by_victim]
    assert taken_over and all(e.details["worker"] != "w0" for e in taken_over)
    # Every target accepts the value keyturn holds as current.
    for cred_id, value in current.items():
        cred = creds[cred_id]
        target = PasswdFileTarget.from_settings(
            {"path": str(kt.home / "mail" / f"{cred.target}.passwd")},
            TargetContext(resolve=lambda ref: Secret("")),
        )
        assert target.test(Account(cred.usernames[0]), value), cred_id
