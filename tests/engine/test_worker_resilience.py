"""A plugin bug in one rotation does not stop a worker; the rotation resumes afterwards."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from keyturn.db.models import Rotation, utcnow
from keyturn.domain.model import Trigger
from keyturn.engine import service
from keyturn.scheduler.worker import Worker
from tests.engine.conftest import INITIAL
from tests.support.keyturn import Harness

USER = "admin@acme.example"


def test_a_plugin_bug_is_contained_and_the_rotation_resumes(kt: Harness, setup) -> None:  # type: ignore[no-untyped-def]
    s = setup("single")
    s.faults(set="bug")
    service.start(kt.app, "acme/smtp-admin", trigger=Trigger.MANUAL, actor="t", reason="r")
    result = Worker(kt.app).tick()  # must not raise, nor loop on the same rotation
    (failed,) = result.outcomes
    assert failed.status == "retrying" and "RuntimeError" in (failed.error or "")
    assert s.accepts(USER, INITIAL)  # the current value still works
    s.faults()
    with kt.app.db.write() as session:  # the backoff ends
        session.execute(update(Rotation).values(next_attempt_at=utcnow() - timedelta(seconds=1)))
    done = Worker(kt.app).tick()
    assert [o.status for o in done.outcomes] == ["done"]
    assert s.accepts(*s.current())
