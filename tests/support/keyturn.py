"""A test harness around one keyturn installation: CLI in-process or in a subprocess."""

from __future__ import annotations

import base64
import contextlib
import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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
        """Run keyturn in a child process (for crash and concurrency tests)."""
        proc = self.popen(*args, env=env)
        out, err = proc.communicate(timeout=timeout)
        return Result(proc.returncode, out, err)

    def popen(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        full_env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("KEYTURN_") or k.startswith("KEYTURN_TEST_")
        }
        full_env.update(self.env)
        full_env.update(env or {})
        full_env["PYTHONPATH"] = str(ROOT)
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
