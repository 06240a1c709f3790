"""A test harness around one keyturn installation: CLI in-process or in a subprocess."""

from __future__ import annotations

import base64
import contextlib
import io
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NoReturn

import click
import typer
import typer.main

from keyturn.app import Keyturn
from keyturn.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
_build_command = typer.main.get_command


@contextlib.contextmanager
def _patched(module: object, name: str, value: object) -> Iterator[None]:
    saved = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, saved)


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()


def new_master_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")


_commands: dict[int, tuple[int, click.Command]] = {}


def _command_count(group: typer.Typer) -> int:
    subgroups = (info.typer_instance for info in group.registered_groups if info.typer_instance)
    return len(group.registered_commands) + sum(_command_count(g) + 1 for g in subgroups)


def _cached_command(group: typer.Typer) -> click.Command:
    """typer builds the click command tree on every call (about 70 ms: it inspects every
    command's signature); in-process calls build it once and again only when a command was
    registered since. A process of its own (spawn, the doc pages) builds it as users do."""
    count = _command_count(group)
    cached = _commands.get(id(group))
    if cached is None or cached[0] != count:
        cached = _commands[id(group)] = (count, _build_command(group))
    return cached[1]


def _run_forked(
    home: Path, args: tuple[str, ...], env: dict[str, str], out: IO[bytes], err: IO[bytes]
) -> NoReturn:
    """In a forked child: `keyturn ARGS` as `python -m tests.support.cli` would run it, its
    output written straight to *out* and *err* (what it printed before a SIGKILL stays);
    never returns into pytest."""
    code = 1
    try:
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), write_through=True)
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), write_through=True)
        logging.getLogger().handlers.clear()  # pytest's capturing handlers
        os.chdir(home)
        os.environ.clear()
        os.environ.update(env)
        sys.argv = ["keyturn", *args]
        from keyturn import plugins
        from keyturn.cli import main as cli_main
        from keyturn.engine import faults
        from tests.support.flaky import FlakyTarget

        faults.disarm()  # a fresh process has nothing armed in-process
        if FlakyTarget.name not in plugins.names("target"):
            plugins.register("target", FlakyTarget)  # as tests.support.cli does
        try:
            cli_main.main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _wait(pid: int, timeout: float, args: tuple[str, ...]) -> int:
    """The forked child's exit code, negative for a signal (as Popen.returncode)."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise subprocess.TimeoutExpired(["keyturn", *args], timeout)
        time.sleep(0.01)


def _read(file: IO[bytes]) -> str:
    file.seek(0)
    return file.read().decode(errors="replace")


class Harness:
    def __init__(self, home: Path, db_url: str, master_key: str | None = None) -> None:
        self.home = home
        self.db_url = db_url
        self.master_key = master_key or new_master_key()
        self.env: dict[str, str] = {
            "KEYTURN_DB": db_url,
            "KEYTURN_MASTER_KEY": self.master_key,
            "KEYTURN_LEASE_SECONDS": "5",
            "KEYTURN_RETRY_BASE_SECONDS": "1",
        }
        self._app: Keyturn | None = None

    # -- in-process ------------------------------------------------------------------------

    def cli(self, *args: str, env: dict[str, str] | None = None) -> Result:
        """Run `keyturn ARGS` in this process (fast); stdout/stderr captured."""
        from keyturn.cli import main as cli_main

        saved = {k: os.environ.get(k) for k in {**self.env, **(env or {})}}
        os.environ.update({**self.env, **(env or {})})
        out, err = io.StringIO(), io.StringIO()
        code = 0
        argv = sys.argv
        sys.argv = ["keyturn", *args]
        try:
            with (
                contextlib.redirect_stdout(out),
                contextlib.redirect_stderr(err),
                _patched(typer.main, "get_command", _cached_command),
            ):
                try:
                    cli_main.main()
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            sys.argv = argv
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        return Result(code, out.getvalue(), err.getvalue())

    # -- subprocess ------------------------------------------------------------------------

    def spawn(self, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> Result:
        """Run keyturn in a process of its own (crash tests: it may SIGKILL itself). A fork
        of this one while it runs no other thread: a fresh interpreter's imports cost about
        a second, and the crash matrices spawn hundreds. With threads running (a fork would
        copy their locks held), `python -m tests.support.cli` as `popen` does."""
        if threading.active_count() > 1:
            proc = self.popen(*args, env=env)
            out, err = proc.communicate(timeout=timeout)
            return Result(proc.returncode, out, err)
        with tempfile.TemporaryFile() as out_file, tempfile.TemporaryFile() as err_file:
            pid = os.fork()
            if pid == 0:
                _run_forked(self.home, args, self._child_env(env), out_file, err_file)
            code = _wait(pid, timeout, args)
            return Result(code, _read(out_file), _read(err_file))

    def _child_env(self, env: dict[str, str] | None) -> dict[str, str]:
        """What a child keyturn sees: the suite's environment less keyturn's own settings,
        this harness's, then *env*."""
        full_env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("KEYTURN_") or k.startswith("KEYTURN_TEST_")
        }
        full_env.update(self.env)
        full_env.update(env or {})
        full_env["PYTHONPATH"] = str(ROOT)
        return full_env

    def popen(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        full_env = self._child_env(env)
        return subprocess.Popen(
            [sys.executable, "-m", "tests.support.cli", *args],
            cwd=self.home,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    @contextlib.contextmanager
    def held(
        self, point: str, folder: Path, *args: str, env: dict[str, str]
    ) -> Iterator[subprocess.Popen[str]]:
        """Run a command until it reaches the test pause *point* (keyturn.engine.faults) and
        hold it there for the block; it carries on when the block ends, or is killed if the
        block failed."""
        pause = {"KEYTURN_TEST_PAUSE_AT": point, "KEYTURN_TEST_PAUSE_DIR": str(folder)}
        proc = self.popen(*args, env={**env, **pause})
        try:
            deadline = time.monotonic() + 120
            while not (folder / "reached").exists():
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, f"{point} not reached"
                time.sleep(0.05)
            yield proc
        except BaseException:
            proc.kill()
            proc.communicate()
            raise
        finally:
            (folder / "release").touch()

    # -- direct access ---------------------------------------------------------------------

    def init(self) -> Result:
        result = self.cli("init")
        assert result.code == 0, result.err
        return result

    @property
    def app(self) -> Keyturn:
        if self._app is None:
            saved = os.environ.get("KEYTURN_MASTER_KEY")
            os.environ["KEYTURN_MASTER_KEY"] = self.master_key
            try:
                self._app = Keyturn.open(Settings.load({"db": self.db_url}))
            finally:
                if saved is None:
                    os.environ.pop("KEYTURN_MASTER_KEY", None)
                else:
                    os.environ["KEYTURN_MASTER_KEY"] = saved
        return self._app

    def write(self, name: str, text: str) -> Path:
        path = self.home / name
        path.write_text(text)
        return path

    def close(self) -> None:
        if self._app is not None:
            self._app.close()
            self._app = None
