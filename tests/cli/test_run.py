"""`keyturn run`: values in the child's environment or 0600 files, never on a command line;
after a rotation the child sees the new value (signal or restart); signals are forwarded and
the exit code passes through. `keyturn run` here works on keyturn's database (no KEYTURN_URL):
the rotations run in this process, as a worker would."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from keyturn.db import repo
from keyturn.domain.model import Trigger, VersionState
from keyturn.engine import service
from keyturn.engine.protocol import Runner
from tests.client.conftest import until
from tests.engine.conftest import INITIAL, Setup, _flaky_plugin, stop_at  # noqa: F401 (test-flaky)
from tests.support.keyturn import Harness

CRED = "acme/smtp-admin"
# The child: on start and on SIGHUP, append what it was given ($SECRET, or the file) to a log.
CHILD = """
import os, signal, sys, time
log, source = sys.argv[1], sys.argv[2]
def note(*_):
    if source == "env":
        value = os.environ["SECRET"]
    else:
        value = open(source).read()
    with open(log, "a") as out:
        out.write(value + "\\n")
signal.signal(signal.SIGHUP, note)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(42))
note()
while True:
    time.sleep(0.05)
"""


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _cmdlines() -> str:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            found.append((proc / "cmdline").read_bytes().decode(errors="replace"))
        except OSError:
            continue
    return "\n".join(found)


def _current(kt: Harness) -> str:
    with kt.app.db.read() as session:
        version = repo.version_in_state(session, CRED, VersionState.CURRENT)
        assert version is not None
        return kt.app.vault.reveal(version).reveal()


def _rotate(kt: Harness) -> str:
    service.rotate(kt.app, CRED, trigger=Trigger.MANUAL, actor="test", reason="drill")
    return _current(kt)


def _run(kt: Harness, *args: str) -> subprocess.Popen[str]:
    return kt.popen("run", "--consumer", "mailer", *args)


def _hup_child(kt: Harness) -> tuple[subprocess.Popen[str], Path, Path]:
    """`keyturn run` of a child that logs the file it is given at start and on SIGHUP."""
    Setup(kt, "single")
    log, secret = kt.home / "child.log", kt.home / "run" / "smtp"
    secret.parent.mkdir()
    child = [sys.executable, "-c", CHILD, str(log), str(secret)]
    proc = _run(kt, "--file", f"{secret}={CRED}", "--on-rotate", "signal:HUP", "--", *child)
    return proc, log, secret


def test_signal_hup_rewrites_the_file_and_the_child_rereads_it(kt: Harness) -> None:
    proc, log, secret = _hup_child(kt)
    try:
        assert until(lambda: _lines(log) == [INITIAL]), proc.stderr
        assert secret.stat().st_mode & 0o777 == 0o600
        for _ in range(2):
            new = _rotate(kt)
            assert until(lambda new=new: _lines(log)[-1:] == [new])  # type: ignore[misc]
            assert new not in _cmdlines()
        assert INITIAL not in _cmdlines()
        with kt.app.db.read() as session:
            (consumer,) = repo.consumers(session, CRED)
        assert (consumer.name, consumer.version) == ("mailer", 3)
    finally:
        proc.send_signal(signal.SIGTERM)  # forwarded: the child exits 42
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 42, err
    assert not secret.exists()  # the value went with the child: nothing keeps it current


def test_the_child_gets_next_once_a_single_rotation_put_it_on_the_target(kt: Harness) -> None:
    """Invariant 9 for `keyturn run`: from `set` on, a `single` target refuses the current
    value, so the child gets the new one then (file rewritten, signalled), reported as in
    use; the promotion of that same version changes nothing more."""
    proc, log, _file = _hup_child(kt)
    try:
        assert until(lambda: _lines(log) == [INITIAL]), proc.stderr
        rotation_id = stop_at(kt, "test:before")
        with kt.app.db.read() as session:
            pending = repo.version_in_state(session, CRED, VersionState.PENDING)
            assert pending is not None
            new = kt.app.vault.reveal(pending).reveal()
        assert until(lambda: _lines(log) == [INITIAL, new])
        assert until(lambda: _consumer_version(kt) == pending.number)
        assert Runner(kt.app, rotation_id).run().status == "done"
        assert _current(kt) == new
        time.sleep(2)  # several looks of `keyturn run` at the promoted versions
        assert _lines(log) == [INITIAL, new]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def _consumer_version(kt: Harness) -> int | None:
    with kt.app.db.read() as session:
        found = repo.consumers(session, CRED)
        return found[0].version if found else None


def test_restart_gives_the_child_the_new_environment(kt: Harness) -> None:
    Setup(kt, "single")
    log = kt.home / "child.log"
    child = [sys.executable, "-c", CHILD, str(log), "env"]
    proc = _run(kt, "--env", f"SECRET={CRED}", "--on-rotate", "restart", "--", *child)
    try:
        assert until(lambda: _lines(log) == [INITIAL])
        assert INITIAL not in _cmdlines()
        new = _rotate(kt)
        assert until(lambda: _lines(log) == [INITIAL, new])
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)


def test_exit_code_passes_through_and_bad_usage_is_one_line(kt: Harness) -> None:
    Setup(kt, "single")
    code = "import os, sys; sys.exit(7 if os.environ['SECRET'] else 1)"
    env = ("--env", f"SECRET={CRED}")
    done = kt.spawn("run", "--consumer", "job", *env, "--", sys.executable, "-c", code)
    assert done.code == 7, done.err
    for args, says in (
        (("--env", "SECRET", "--", "true"), "--env"),
        ((*env, "--", str(kt.home / "no-such-program")), "cannot run"),
        (("--file", f"{kt.home / 'nowhere' / 'f'}={CRED}", "--", "true"), "does not exist"),
        (("--env", "SECRET=acme/nope", "--", "true"), "no credential 'acme/nope'"),
    ):
        bad = kt.spawn("run", "--consumer", "job", *args)
        assert bad.code != 0 and bad.err.startswith("error:"), (args, bad)
        assert len(bad.err.splitlines()) == 1 and says in bad.err, (args, bad.err)
    assert not (kt.home / "nowhere").exists()


def test_the_child_gets_none_of_keyturns_secrets(kt: Harness) -> None:
    """Only KEYTURN_TOKEN was kept from the child: without KEYTURN_URL, `keyturn run` opens
    the database with KEYTURN_MASTER_KEY in its environment, and the child inherited it (and
    KEYTURN_OLD_MASTER_KEY during a rekey, a PostgreSQL password in KEYTURN_DB)."""
    Setup(kt, "single")
    log = kt.home / "child-env.json"
    dump = (
        "import json, os, sys; "
        "json.dump({k: v for k, v in os.environ.items() if k.startswith('KEYTURN')}, "
        "open(sys.argv[1], 'w'))"
    )
    done = kt.spawn(
        "run", "--consumer", "job", "--env", f"SECRET={CRED}", "--",
        sys.executable, "-c", dump, str(log),
        env={"KEYTURN_TOKEN": "kt_not-for-the-child"},  # the harness sets the master key
    )  # fmt: skip
    assert done.code == 0, done.err
    seen = json.loads(log.read_text())
    assert not {"KEYTURN_MASTER_KEY", "KEYTURN_OLD_MASTER_KEY", "KEYTURN_TOKEN"} & set(seen)
    assert kt.master_key not in log.read_text()
    if kt.env["KEYTURN_DB"].startswith("sqlite"):
        assert seen.get("KEYTURN_DB") == kt.env["KEYTURN_DB"]  # a path, no password


def test_a_database_password_stays_out_of_the_childs_environment() -> None:
    from keyturn.cli.run import withheld

    assert withheld("KEYTURN_DB", "postgresql+psycopg://keyturn:s3cret@db/keyturn")
    assert not withheld("KEYTURN_DB", "postgresql+psycopg://keyturn@db/keyturn")
    assert not withheld("KEYTURN_DB", "sqlite:////var/lib/keyturn/keyturn.db")
    assert not withheld("KEYTURN_URL", "http://127.0.0.1:8080")
