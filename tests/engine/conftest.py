from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from keyturn import plugins
from keyturn.domain.model import Secret
from keyturn.targets.base import Account, TargetContext
from tests.support.flaky import FlakyTarget
from tests.support.keyturn import Harness

CREDENTIAL = "acme/smtp-admin"  # the credential `inventory` declares


@pytest.fixture(autouse=True)
def _flaky_plugin() -> Any:
    plugins.register("target", FlakyTarget)
    yield
    plugins.unregister("target", "test-flaky")


def inventory(
    strategy: str, grace: str = "0s", consumers: tuple[str, ...] = (), stores: bool = False
) -> str:
    users = (
        'usernames = ["app", "app_clone"]'
        if strategy == "alternating"
        else 'username = "admin@acme.example"'
    )
    secondary = 'secondary_path = "mail2.passwd"' if strategy == "dual" else ""
    store_decl = '[stores.env]\ntype = "dotenv"\npath = "app.env"\n' if stores else ""
    return f"""
[policies.p]
max_age = "180d"
grace = "{grace}"

[targets.mail]
type = "test-flaky"
path = "mail.passwd"
control = "control.json"
{secondary}

{store_decl}
[[credentials]]
id = "acme/smtp-admin"
tenant = "acme"
kind = "smtp"
policy = "p"
target = "mail"
strategy = "{strategy}"
{users}
consumers = {json.dumps(list(consumers))}
stores = {json.dumps(["env"] if stores else [])}
initial_secret = "env:INITIAL_PW"
"""


INITIAL = "initial-Password-000111"


class Setup:
    """A credential on a (flaky) passwd-file target, applied and provisioned."""

    def __init__(self, kt: Harness, strategy: str, **kwargs: Any) -> None:
        self.kt, self.strategy = kt, strategy
        kt.write("keyturn.toml", inventory(strategy, **kwargs))
        result = kt.cli("apply", "keyturn.toml", env={"INITIAL_PW": INITIAL})
        assert result.code == 0, result.err
        paths = {"path": "mail.passwd", "control": "control.json"}
        if strategy == "dual":
            paths["secondary_path"] = "mail2.passwd"
        self.target = FlakyTarget.from_settings(
            paths, TargetContext(resolve=lambda ref: Secret(""), base_dir=str(kt.home))
        )

    def faults(self, **modes: Any) -> None:
        (self.kt.home / "control.json").write_text(json.dumps(modes))

    def calls(self) -> dict[str, int]:
        path = self.kt.home / "control.calls"
        return json.loads(path.read_text()) if path.exists() else {}

    def accepts(self, user: str, value: str) -> bool:
        return self.target.test(Account(user), Secret(value))

    def values(self) -> dict[int, tuple[str, str | None, str]]:
        """number -> (state, username, value) for every version."""
        from keyturn.db import repo

        app = self.kt.app
        with app.db.read() as session:
            return {
                v.number: (v.state, v.username, app.vault.reveal(v).reveal())
                for v in repo.versions(session, "acme/smtp-admin")
            }

    def current(self) -> tuple[str, str]:
        ((_, user, value),) = [(s, u, v) for s, u, v in self.values().values() if s == "current"]
        return user or "", value


@pytest.fixture
def setup(kt: Harness) -> Any:
    def make(strategy: str, **kwargs: Any) -> Setup:
        return Setup(kt, strategy, **kwargs)

    return make


__all__ = ["INITIAL", "Path", "Setup"]


def stop_at(
    kt: Harness, point: str, rotation_id: int | None = None, credential_id: str = CREDENTIAL
) -> int:
    """A rotation (started now, or *rotation_id* carried on) run until keyturn's database
    fails at *point* (keyturn.engine.faults); its id."""
    from keyturn.domain.errors import StoreUnavailable
    from keyturn.domain.model import Trigger
    from keyturn.engine import faults, service
    from keyturn.engine.protocol import Runner

    if rotation_id is None:
        rotation_id = service.start(
            kt.app, credential_id, trigger=Trigger.MANUAL, actor="t", reason="r"
        )
    faults.arm(point, "dberror")
    try:
        with pytest.raises(StoreUnavailable):
            Runner(kt.app, rotation_id).run()
    finally:
        faults.disarm()
    return rotation_id
