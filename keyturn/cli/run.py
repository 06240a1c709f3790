"""`keyturn run`: start a command with credentials in its environment or in 0600 files, and
keep it working through rotations (the way consul-template and Vault Agent do).

    keyturn run --consumer billing --env DB_PASSWORD=acme/db --file /run/app/smtp=acme/smtp \\
        --on-rotate signal:HUP -- ./server --port 8080

Values never appear on a command line (the child's argv is the command given). The versions
handed out are reported under the consumer's name, so a rotation's revoke waits for this
process. When a rotation promotes a new value, the files are rewritten and the child is
restarted (`restart`, the default: environment values can only change that way), signalled
(`signal:HUP`: it rereads its files) or left alone (`none`). Signals sent to `keyturn run` go
to the child; the child's exit code is keyturn's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from keyturn.cli import remote
from keyturn.cli.main import app, open_app
from keyturn.client import Client, ClientError, Value
from keyturn.domain.errors import KeyturnError, UsageError
from keyturn.domain.ids import validate_id, validate_name

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1)
STOP_SECONDS = 10.0  # a restarted child gets this long to stop after SIGTERM
LOOK_SECONDS = 0.2  # how often the (in-memory) cache is compared with what the child holds


@dataclass
class Plan:
    """What `keyturn run` was asked to do, checked."""

    consumer: str
    env: dict[str, str]  # variable -> credential id
    files: dict[Path, str]  # path -> credential id
    on_rotate: str  # restart | none | signal
    signal: signal.Signals | None
    command: list[str]
    versions: dict[str, int | None] = field(default_factory=dict)

    @property
    def ids(self) -> list[str]:
        return sorted({*self.env.values(), *self.files.values()})


def _pairs(items: list[str], what: str) -> list[tuple[str, str]]:
    out = []
    for item in items:
        name, sep, credential_id = item.partition("=")
        if not sep or not name or not credential_id:
            raise UsageError(f"{what} takes NAME=ID, not {item!r}")
        out.append((name, validate_id(credential_id)))
    return out


def _on_rotate(value: str) -> tuple[str, signal.Signals | None]:
    if value in ("restart", "none"):
        return value, None
    kind, _, name = value.partition(":")
    if kind == "signal" and name:
        try:
            return "signal", signal.Signals[name if name.startswith("SIG") else f"SIG{name}"]
        except KeyError:
            pass
    raise UsageError(
        f"--on-rotate takes restart, none or signal:NAME (e.g. signal:HUP), not {value!r}"
    )


def plan(
    consumer: str, env: list[str], files: list[str], on_rotate: str, command: list[str]
) -> Plan:
    validate_name(consumer, "consumer name")
    if not command:
        raise UsageError("give the command to run after `--`")
    if not env and not files:
        raise UsageError("give at least one --env VAR=ID or --file PATH=ID")
    variables = dict(_pairs(env, "--env"))
    for name in variables:
        if not name.replace("_", "a").isalnum() or name[0].isdigit():
            raise UsageError(f"--env: {name!r} is not an environment variable name")
    mode, sig = _on_rotate(on_rotate)
    paths = {Path(p).absolute(): i for p, i in _pairs(files, "--file")}
    for path in paths:
        if not path.parent.is_dir():
            raise UsageError(f"--file {path}: the folder {path.parent} does not exist")
    return Plan(consumer, variables, paths, mode, sig, list(command))


# keyturn's own secrets: the API token, and (without KEYTURN_URL, where `keyturn run` opens
# the database itself) the master keys. The child gets the values it asked for, not these.
WITHHELD = frozenset({"KEYTURN_TOKEN", "KEYTURN_MASTER_KEY", "KEYTURN_OLD_MASTER_KEY"})


def withheld(name: str, value: str) -> bool:
    """Is the variable one of keyturn's secrets, kept from the child? KEYTURN_DB too when
    its URL holds a password (postgresql://keyturn:PASSWORD@...)."""
    if name in WITHHELD:
        return True
    if name == "KEYTURN_DB":
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            return make_url(value).password is not None
        except (ArgumentError, ValueError):
            return True
    return False


def write_file(path: Path, value: str) -> None:
    """Replace *path* atomically with *value*, mode 0600 from the start."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(value)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Runner:
    """Holds the child, the values it was given, and the client that watches for rotations."""

    def __init__(self, client: Client, todo: Plan) -> None:
        self.client, self.plan = client, todo
        self.child: subprocess.Popen[bytes] | None = None
        self.restarting = False

    def values(self) -> dict[str, Value]:
        """The value the child gets of every credential (reported as in use): the current
        one, or `next` once a rotation has put it on the target, which may refuse the
        current one then (`single`): DESIGN.md invariant 9."""
        found = {i: self.client.get(i, note=False).usable for i in self.plan.ids}
        for credential_id, value in found.items():
            self.client.note(credential_id, value.version)
        self.plan.versions = {i: v.version for i, v in found.items()}
        return found

    def environment(self, found: dict[str, Value]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not withheld(k, v)}
        env.update({var: found[i].value for var, i in self.plan.env.items()})
        return env

    def start(self) -> None:
        found = self.values()
        for path, credential_id in self.plan.files.items():
            write_file(path, found[credential_id].value)
        self.child = self._spawn(found)
        self.client.flush()

    def _spawn(self, found: dict[str, Value]) -> subprocess.Popen[bytes]:
        try:
            return subprocess.Popen(self.plan.command, env=self.environment(found))
        except OSError as exc:  # not there, not executable
            raise UsageError(f"cannot run {self.plan.command[0]!r}: {exc.strerror}") from None

    def remove_files(self) -> None:
        """The values written for the child go with it: nothing keeps them current after."""
        for path in self.plan.files:
            path.unlink(missing_ok=True)

    def rotated(self) -> bool:
        """Is another version the one to hold now (a new current one, or `next` on the
        target)?"""
        for credential_id, version in self.plan.versions.items():
            if self.client.get(credential_id, note=False).usable.version != version:
                return True
        return False

    def apply_rotation(self) -> None:
        found = self.values()
        for path, credential_id in self.plan.files.items():
            write_file(path, found[credential_id].value)
        assert self.child is not None
        if self.plan.on_rotate == "restart":
            self.restarting = True
            self.stop_child()
            self.child = self._spawn(found)
            self.restarting = False
        elif self.plan.on_rotate == "signal" and self.plan.signal is not None:
            self.child.send_signal(self.plan.signal)
        self.client.flush()

    def stop_child(self) -> None:
        assert self.child is not None
        self.child.terminate()
        try:
            self.child.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.child.kill()
            self.child.wait()

    def forward(self, signum: int, _frame: Any) -> None:
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)

    def loop(self) -> int:
        """Until the child exits: watch for rotations; the child's exit code."""
        assert self.child is not None
        while True:
            code = self.child.poll()
            if code is not None and not self.restarting:
                return code if code >= 0 else 128 - code
            time.sleep(LOOK_SECONDS)
            if self.rotated():
                self.apply_rotation()


def _client(ctx: typer.Context, consumer: str) -> Client:
    if remote.configured():
        return Client.from_env(consumer=consumer)
    from keyturn.cli.run_local import LocalSource

    return Client(source=LocalSource(open_app(ctx)), consumer=consumer)


@app.command(
    context_settings={"allow_interspersed_args": False},
)
def run(
    ctx: typer.Context,
    command: Annotated[list[str], typer.Argument(metavar="-- COMMAND...")],
    consumer: Annotated[
        str, typer.Option("--consumer", help="The name this process reports its versions under")
    ],
    env: Annotated[
        list[str] | None, typer.Option("--env", metavar="VAR=ID", help="A value in $VAR")
    ] = None,
    file: Annotated[
        list[str] | None,
        typer.Option("--file", metavar="PATH=ID", help="A value in a 0600 file at PATH"),
    ] = None,
    on_rotate: Annotated[
        str,
        typer.Option(
            "--on-rotate",
            metavar="restart|signal:SIG|none",
            help="After a rotation (files are always rewritten)",
        ),
    ] = "restart",
) -> None:
    """Run COMMAND with credentials in its environment or files; restart or signal it when
    they rotate. Values never appear on a command line."""
    todo = plan(consumer, env or [], file or [], on_rotate, command)
    try:
        client = _client(ctx, consumer)
    except ClientError as exc:  # the SDK's own errors: one line, as every other command's
        raise KeyturnError(exc.message) from None
    runner = Runner(client, todo)
    try:
        runner.start()
        for sig in FORWARDED:
            signal.signal(sig, runner.forward)
        code = runner.loop()
    except ClientError as exc:  # refused (token, scope, no such id) or keyturn unreachable
        raise KeyturnError(exc.message) from None
    finally:
        runner.remove_files()
        client.close()
    sys.stdout.flush()
    raise typer.Exit(code)
