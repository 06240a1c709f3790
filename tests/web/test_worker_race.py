"""`keyturn serve --with-worker`: the dashboard's (and the API's) rotation runner and the
worker live in one process, under one worker id. When the worker claims a rotation first,
the request's runner must not pass as the lease's owner and run the same steps at once."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from keyturn.db.models import AuditEntry, Rotation
from keyturn.domain.errors import RotationInProgress
from keyturn.domain.model import Trigger
from keyturn.engine import service
from keyturn.scheduler.worker import Worker, claim_rotations
from tests.web.conftest import CRED, Api, csrf_of, wait_for


def test_a_rotation_the_worker_claimed_is_not_run_twice_in_the_same_process(api: Api) -> None:
    app = api.kt.app
    rotation = service.start(app, CRED, trigger=Trigger.MANUAL, actor="test", reason="race")
    assert claim_rotations(app, app.worker_id, 10) == [rotation]  # the worker won the lease
    with pytest.raises(RotationInProgress):
        service.run(app, rotation)
    with app.db.read() as session:
        rot = session.get(Rotation, rotation)
        assert rot is not None and rot.step == "create" and rot.lease_owner == app.worker_id


def test_dashboard_rotation_beside_a_running_worker(api: Api) -> None:
    """The page's rotation and a worker ticking in the same process: one run of each step."""
    app = api.kt.app
    api.faults(set="slow", slow_seconds=1)
    stop = threading.Event()
    worker = threading.Thread(target=Worker(app).run_forever, args=(stop,), daemon=True)
    worker.start()
    try:
        form = api.client.get("/signin")
        api.client.post("/signin", data={"token": api.tokens["admin"], "csrf": csrf_of(form.text)})
        csrf = csrf_of(api.client.get("/").text)
        answer = api.client.post(
            f"/credentials/{CRED}/rotate",
            data={"csrf": csrf, "reason": "beside the worker"},
            headers={"X-Keyturn-Fragment": "1"},
        )
        assert answer.status_code == 202
        url = f"/credentials/{CRED}/rotations/1/progress"
        wait_for(lambda: 'data-status="done"' in api.client.get(url).text, "the rotation")
    finally:
        stop.set()
        worker.join(timeout=60)
    with app.db.read() as session:
        actions = list(
            session.execute(
                select(AuditEntry.action).where(AuditEntry.action.like("rotation.%"))
            ).scalars()
        )
    assert actions.count("rotation.set") == 1 and actions.count("rotation.done") == 1
