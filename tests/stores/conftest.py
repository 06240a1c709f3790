"""A credential on a real passwd-file target, published to one store, rotated by the CLI.

Each test gets names of its own on the shared servers (KV paths, secret names) through
``Rig.prefix``; the tests never reconfigure a shared server.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from keyturn import plugins
from keyturn.db import repo
from tests.support.flaky import FlakyTarget
from tests.support.keyturn import Harness

INITIAL = "initial-Password-000111"


def need(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run scripts/services, then source .test-env")
    return value


@pytest.fixture(autouse=True)
def _flaky_plugin() -> Iterator[None]:
    plugins.register("target", FlakyTarget)
    yield
    plugins.unregister("target", "test-flaky")


class Rig:
    """keyturn with one credential `<tenant>/smtp-admin` published to store `main`."""

    def __init__(self, kt: Harness, store_toml: str, strategy: str = "dual") -> None:
        self.kt = kt
        self.tenant = "t" + secrets.token_hex(4)
        self.id = f"{self.tenant}/smtp-admin"
        user = (
            'usernames = ["app", "app_clone"]'
            if strategy == "alternating"
            else ('username = "admin@acme.example"')
        )
        secondary = 'secondary_path = "mail2.passwd"' if strategy == "dual" else ""
        kt.write(
            "keyturn.toml",
            f"""
[policies.p]
max_age = "180d"
grace = "0s"

[targets.mail]
type = "test-flaky"
path = "mail.passwd"
control = "control.json"
{secondary}

[stores.main]
{store_toml}

[[credentials]]
id = "{self.id}"
tenant = "{self.tenant}"
kind = "smtp"
policy = "p"
target = "mail"
strategy = "{strategy}"
{user}
stores = ["main"]
initial_secret = "env:INITIAL_PW"
""",
        )
        result = kt.cli("apply", "keyturn.toml", env={"INITIAL_PW": INITIAL})
        assert result.code == 0, result.err

    def accepts(self, value: str) -> bool:
        """Does the (dual) target accept *value* for the rig's login?"""
        from keyturn.domain.model import Secret
        from keyturn.targets.base import Account, TargetContext

        target = FlakyTarget.from_settings(
            {"path": "mail.passwd", "control": "control.json", "secondary_path": "mail2.passwd"},
            TargetContext(resolve=lambda ref: Secret(""), base_dir=str(self.kt.home)),
        )
        return target.test(Account("admin@acme.example"), Secret(value))

    def rotate(self, *extra: str) -> dict[str, Any]:
        result = self.kt.cli("rotate", self.id, "--reason", "store test", "--json", *extra)
        assert result.out.strip(), result.err
        return json.loads(result.out)[0]  # type: ignore[no-any-return]

    def versions(self) -> dict[str, tuple[int, str, str]]:
        """state -> (number, value, fingerprint) of the live versions."""
        app = self.kt.app
        with app.db.read() as session:
            return {
                v.state: (v.number, app.vault.reveal(v).reveal(), v.fingerprint)
                for v in repo.versions(session, self.id)
                if v.state in ("current", "previous", "pending")
            }

    def current(self) -> tuple[int, str, str]:
        return self.versions()["current"]

    def show(self) -> dict[str, Any]:
        result = self.kt.cli("show", self.id, "--json")
        assert result.code == 0, result.err
        return json.loads(result.out)  # type: ignore[no-any-return]


def written(home: Path) -> str:
    """Everything keyturn wrote in *home* (logs, database, outputs), as text."""
    chunks = []
    for path in home.rglob("*"):
        if path.is_file() and not path.name.endswith(".passwd") and path.suffix != ".env":
            chunks.append(path.read_bytes().decode("latin-1"))
    return "\n".join(chunks)
