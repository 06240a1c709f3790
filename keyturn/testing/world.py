"""A throwaway keyturn installation: its own folder, state database and master key, its CLI
run in-process, and a rotation run in a forked child that SIGKILLs itself at a chosen point.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from keyturn.app import Keyturn
from keyturn.settings import Settings

__all__ = ["Result", "World"]


@dataclass
class Result:
    code: int
    out: str
    err: str


class World:
    """One keyturn in *home* over *db_url* (a SQLite file in *home* by default)."""

    def __init__(self, home: Path, db_url: str | None = None) -> None:
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        self.db_url = db_url or f"sqlite:///{home / 'keyturn.db'}"
        master = base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
        self.env: dict[str, str] = {
            "KEYTURN_DB": self.db_url,
            "KEYTURN_MASTER_KEY": master,
            "KEYTURN_LEASE_SECONDS": "5",
            "KEYTURN_RETRY_BASE_SECONDS": "1",
            # One worker id for every run, so a restarted worker takes a killed one's lease.
            "KEYTURN_WORKER_ID": "kit-worker",
        }
        # Everything keyturn printed, for the no-value-in-output check.
        self.outputs: list[str] = []
        self._app: Keyturn | None = None

    def cli(self, *args: str, env: dict[str, str] | None = None) -> Result:
        """`keyturn ARGS` in this process, its environment set for the call only."""
        from keyturn.cli import main as cli_main

        merged = {**self.env, **(env or {})}
        saved = {k: os.environ.get(k) for k in merged}
        os.environ.update(merged)
        out, err, code, argv, cwd = io.StringIO(), io.StringIO(), 0, sys.argv, os.getcwd()
        sys.argv = ["keyturn", *args]
        try:
            os.chdir(self.home)
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    cli_main.main()
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        finally:
            sys.argv = argv
            os.chdir(cwd)
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        result = Result(code, out.getvalue(), err.getvalue())
        if args[:1] != ("get",):  # the one command that prints a value, on purpose
            self.outputs += [result.out, result.err]
        return result

    def ok(self, *args: str, env: dict[str, str] | None = None) -> Result:
        result = self.cli(*args, env=env)
        if result.code != 0:
            raise AssertionError(f"keyturn {' '.join(args)} failed: {result.err.strip()}")
        return result

    def killed(self, point: str, *args: str, env: dict[str, str] | None = None) -> int:
        """`keyturn ARGS` in a forked child that SIGKILLs itself on reaching *point*
        (`keyturn.engine.faults`); its exit status, negative for a signal."""
        log = self.home / f".kit-child-{os.getpid()}.log"
        self.close()  # the child opens its own connections
        pid = os.fork()
        if pid == 0:  # the child: never return into the caller
            code = 1
            try:
                fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                result = self.cli(*args, env={**(env or {}), "KEYTURN_TEST_CRASH_AT": point})
                os.write(1, (result.out + result.err).encode())
                code = result.code
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        self.outputs.append(log.read_text(errors="replace") if log.exists() else "")
        log.unlink(missing_ok=True)
        return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)

    def written(self) -> list[str]:
        """Everything keyturn wrote that a person or a log collector reads: command output,
        the audit log, the notices in the outbox and the rotations' errors."""
        from sqlalchemy import select

        from keyturn.db.models import Notice, Rotation

        texts = [*self.outputs, self.ok("audit", "export").out]
        with self.app.db.read() as session:
            for subject, body in session.execute(select(Notice.subject, Notice.body)):
                texts += [subject, body]
            texts += [e for e in session.execute(select(Rotation.error)).scalars() if e]
        return texts

    @property
    def app(self) -> Keyturn:
        if self._app is None:
            saved = os.environ.get("KEYTURN_MASTER_KEY")
            os.environ["KEYTURN_MASTER_KEY"] = self.env["KEYTURN_MASTER_KEY"]
            try:
                self._app = Keyturn.open(Settings.load({"db": self.db_url}))
            finally:
                if saved is None:
                    os.environ.pop("KEYTURN_MASTER_KEY", None)
                else:
                    os.environ["KEYTURN_MASTER_KEY"] = saved
        return self._app

    def close(self) -> None:
        if self._app is not None:
            self._app.close()
            self._app = None
