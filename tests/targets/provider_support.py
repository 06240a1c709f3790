"""A rig for the targets whose provider issues the secret (IAM, SES, HTTP API keys) and for
TLS certificates: one credential on one target, driven through the keyturn CLI.

Checks go to the provider or endpoint directly (boto3 with the value `keyturn get` prints, an
HTTP request, a TLS handshake), never through the plugin under test.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import update

from keyturn.db.models import Rotation, utcnow
from tests.support.keyturn import Harness, Result

# Every point a rotation can be killed at, in order (create:issued only on issuing targets).
CRASH_POINTS = [
    "create:issued",
    "create:effect",
    "set:effect",
    "test:effect",
    "publish:before",
    "finish:effect",
    "wait:before",
    "revoke:effect",
]


def toml(value: Any) -> str:
    """A TOML value (basic strings, numbers, arrays and inline tables of them)."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(toml(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


@dataclass
class ProviderRig:
    """One credential of *target_type* with *settings*, for the account *username*."""

    kt: Harness
    target_type: str
    settings: dict[str, Any]
    username: str
    kind: str = "api-key"
    strategy: str = "dual"
    grace: str = "0s"
    consumers: list[str] = field(default_factory=list)
    initial_ref: str | None = None  # initial_secret's reference (env:NAME, file:PATH)
    cred: str = "acme/key"
    policy: dict[str, Any] = field(default_factory=dict)
    extra: str = ""  # more of the inventory (another credential, e.g. a CA's key)

    def __post_init__(self) -> None:
        # One worker id for every process, so a restarted one takes a killed one's lease back.
        self.kt.env["KEYTURN_WORKER_ID"] = "worker-1"

    def inventory(self) -> str:
        settings = "\n".join(f"{k} = {toml(v)}" for k, v in self.settings.items())
        policy = "\n".join(f"{k} = {toml(v)}" for k, v in self.policy.items())
        initial = f'initial_secret = "{self.initial_ref}"' if self.initial_ref else ""
        return f"""
[policies.p]
grace = "{self.grace}"
{policy}

[targets.t]
type = "{self.target_type}"
{settings}

[[credentials]]
id = "{self.cred}"
tenant = "acme"
kind = "{self.kind}"
policy = "p"
target = "t"
strategy = "{self.strategy}"
username = {toml(self.username)}
consumers = {toml(self.consumers)}
{initial}
{self.extra}
"""

    def cli(self, *args: str, env: dict[str, str] | None = None) -> Result:
        return self.kt.cli(*args, env=env)

    def ok(self, *args: str, env: dict[str, str] | None = None) -> Result:
        result = self.kt.cli(*args, env=env)
        assert result.code == 0, (args, result.out, result.err)
        return result

    def apply(self, env: dict[str, str] | None = None) -> Result:
        self.kt.write("keyturn.toml", self.inventory())
        return self.ok("apply", "keyturn.toml", env=env)

    def rotate(self, *extra: str) -> Result:
        return self.ok("rotate", self.cred, "--reason", "issue 22", *extra)

    def resume(self) -> Result:
        return self.ok("resume", self.cred)

    def get(self, previous: bool = False) -> str:
        return self.ok("get", self.cred, *(["--previous"] if previous else [])).out.strip()

    def value(self, previous: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.get(previous))
        return data

    def show(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.ok("show", self.cred, "--json").out)
        return data

    def states(self) -> list[str]:
        return sorted(v["state"] for v in self.show()["versions"])

    def key_ids(self, state: str) -> list[str]:
        return [v["key_id"] for v in self.show()["versions"] if v["state"] == state]

    def last_rotation(self) -> dict[str, Any]:
        rotations: list[dict[str, Any]] = self.show()["rotations"]
        return max(rotations, key=lambda r: r["id"])

    def end_grace(self) -> None:
        with self.kt.app.db.write() as session:
            session.execute(
                update(Rotation)
                .where(Rotation.credential_id == self.cred, Rotation.status == "waiting")
                .values(wait_until=utcnow() - timedelta(seconds=1))
            )

    def report(self, consumer: str, version: int) -> None:
        from keyturn.engine import service

        service.report_consumer(self.kt.app, self.cred, consumer, version)

    def finish(self) -> None:
        """Carry a rotation to its end (grace over, resumed as often as it takes)."""
        for _ in range(5):
            status = self.last_rotation()["status"]
            if status == "done":
                return
            if status == "waiting":
                self.end_grace()
            self.kt.cli("resume", self.cred, "--now")
        raise AssertionError(f"rotation did not finish: {self.last_rotation()}")


def written_texts(kt: Harness, extra: list[str] | None = None, inputs: tuple[str, ...] = ()) -> str:
    """Everything keyturn wrote that a person or a log collector could read: the audit log
    export, the outbox, rotation errors, the files in the harness's folder but the database,
    the master key and the test's own *inputs*, and *extra* (outputs, captured logs)."""
    parts = list(extra or [])
    parts.append(kt.cli("audit", "export").out)
    for path in Path(kt.home).iterdir():
        skipped = re.search(r"keyturn\.db|\.key$", path.name) or path.name in inputs
        if path.is_file() and not skipped:
            parts.append(path.read_text(errors="replace"))
    with kt.app.db.read() as session:
        from sqlalchemy import text

        for row in session.execute(text("SELECT subject, body FROM notices")):
            parts.extend(str(c) for c in row)
        for row in session.execute(text("SELECT error FROM rotations")):
            parts.extend(str(c) for c in row)
    return "\n".join(parts)
