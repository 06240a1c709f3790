"""The revoke waits for a lagging consumer and follows its report within a worker poll; a
consumer that never moves holds it only until the grace period ends, in an alert naming it.
A real worker (poll every second) runs the rotations, as `keyturn worker` would."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from keyturn.client import Client
from keyturn.db.models import Notice, Rotation
from keyturn.domain.model import RotationStatus, Trigger
from keyturn.engine import consumers, service
from keyturn.scheduler.worker import Worker
from tests.client.conftest import CRED, Served, refused, serving, until
from tests.support.keyturn import Harness


def _status(served: Served) -> str:
    with served.kt.app.db.read() as session:
        rot = session.execute(select(Rotation).order_by(Rotation.id.desc())).scalars().first()
        assert rot is not None
        return rot.status


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers poll every second (set before the test opens keyturn)."""
    monkeypatch.setenv("KEYTURN_POLL_SECONDS", "1")


@contextlib.contextmanager
def worker(kt: Harness) -> Iterator[None]:
    stop = threading.Event()
    thread = threading.Thread(target=Worker(kt.app).run_forever, args=(stop,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)


def test_revoke_follows_the_lagging_consumers_report(kt: Harness, fast: None) -> None:
    with serving(kt, "dual", grace="1h") as served:
        client = Client(served.url, served.token, consumer="web", auth_failure=refused)
        try:
            client.use(CRED, lambda v: served.login(v.value))
            out = service.rotate(kt.app, CRED, trigger=Trigger.MANUAL, actor="t", reason="r")
            assert out.status == RotationStatus.WAITING  # web still reports version 1
            with worker(kt):
                assert until(lambda: client.get(CRED, note=False).version == 2)
                assert _status(served) == RotationStatus.WAITING
                client.use(CRED, lambda v: served.login(v.value))  # web moves: reports v2
                assert until(lambda: _status(served) == RotationStatus.DONE, 20)
        finally:
            client.close()


def test_a_consumer_gone_ends_in_an_alert_naming_it(kt: Harness, fast: None) -> None:
    with serving(kt, "dual", grace="2s") as served, worker(kt):
        consumers.report(kt.app, CRED, "gone-batch", 1)
        out = service.rotate(kt.app, CRED, trigger=Trigger.MANUAL, actor="t", reason="r")
        assert out.status == RotationStatus.WAITING
        assert until(lambda: _status(served) == RotationStatus.DONE, 30)
        with kt.app.db.read() as session:
            alerts = session.execute(select(Notice).where(Notice.kind == "consumers-lagging"))
            (alert,) = alerts.scalars().all()
        assert "gone-batch" in alert.body
