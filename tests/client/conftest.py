"""A real `keyturn serve` (uvicorn in a thread) over a `single` credential on a passwd-file
target, a consumer token for the SDK, and a rotation that tests drive step by step."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from keyturn import auth
from keyturn.cli.serve import build_server
from keyturn.domain.model import Trigger
from keyturn.engine import lease, service
from keyturn.engine.protocol import Runner
from tests.engine.conftest import Setup, _flaky_plugin  # noqa: F401 (registers test-flaky)
from tests.servers import unused_port
from tests.support.keyturn import Harness

CRED = "acme/smtp-admin"
USER = "admin@acme.example"


class LoginRefused(Exception):
    """What the test's application raises when the target refuses a value."""


def refused(exc: BaseException) -> bool:
    return isinstance(exc, LoginRefused)


@dataclass
class Served:
    kt: Harness
    setup: Setup
    url: str
    token: str

    def login(self, value: str) -> str:
        """The application's work: log in to the target, or fail as a driver would."""
        if not self.setup.accepts(USER, value):
            raise LoginRefused("authentication failed")
        return "ok"

    def rotation(self) -> Runner:
        """A rotation whose steps the test calls one by one, as a worker commits them."""
        app = self.kt.app
        rid = service.start(app, CRED, trigger=Trigger.MANUAL, actor="test", reason="drill")
        runner = Runner(app, rid)
        runner.credential_id = CRED
        assert lease.claim(app.db, rid, runner.owner, timedelta(minutes=5))
        return runner


def until(predicate: object, limit: float = 30) -> bool:
    """Wait for *predicate* (bounded; the test asserts the result, never the time taken)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


@contextlib.contextmanager
def serving(kt: Harness, strategy: str, **inventory: Any) -> Iterator[Served]:
    setup = Setup(kt, strategy, **inventory)
    with kt.app.db.write() as session:
        token = auth.create_token(session, "consumer", ["acme/*"], None, name="sdk").token
    port = unused_port()
    srv = build_server(kt.app, "127.0.0.1", port, log_level="warning")
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    assert until(lambda: srv.started, 20), "uvicorn did not start"
    try:
        yield Served(kt, setup, f"http://127.0.0.1:{port}", token)
    finally:
        srv.should_exit = True
        thread.join(10)


@pytest.fixture
def served(kt: Harness) -> Iterator[Served]:
    with serving(kt, "single") as found:
        yield found
