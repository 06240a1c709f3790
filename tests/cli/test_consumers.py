"""`keyturn consumers ID` and the preview an emergency rotation prints first."""

from __future__ import annotations

import json

from keyturn.engine import consumers
from tests.engine.conftest import Setup, _flaky_plugin  # noqa: F401 (registers test-flaky)
from tests.support.keyturn import Harness

CRED = "acme/smtp-admin"


def test_consumers_listing_and_emergency_preview(kt: Harness) -> None:
    Setup(kt, "single")
    who = consumers.Identity(host="web-1", process="gunicorn[42]", sdk_version="0.1")
    consumers.report(kt.app, CRED, "web", 1, who, fallbacks=3)
    consumers.register(kt.app, CRED, "cron", actor="test")
    listed = kt.cli("consumers", CRED)
    assert listed.code == 0, listed.err
    assert "web-1" in listed.out and "gunicorn[42]" in listed.out and "cron" in listed.out
    data = json.loads(kt.cli("consumers", CRED, "--json").out)
    assert {c["name"]: (c["version"], c["fallbacks"]) for c in data} == {
        "cron": (None, 0),
        "web": (1, 3),
    }
    risky = json.loads(kt.cli("consumers", CRED, "--at-risk", "revoke", "--json").out)
    assert [r["name"] for r in risky] == ["cron"]  # web reports the current version
    rotated = kt.cli("rotate", CRED, "--reason", "leaked", "--emergency")
    assert rotated.code == 0, rotated.err
    warning = next(line for line in rotated.err.splitlines() if line.startswith("warning:"))
    assert "cron" in warning and "web" in warning and "SDK refetches" in warning
    bad = kt.cli("consumers", CRED, "--at-risk", "later")
    assert bad.code != 0 and bad.err.startswith("error:")


def test_resume_that_revokes_names_the_lagging_consumer_first(kt: Harness) -> None:
    from keyturn.db.models import utcnow
    from keyturn.domain.model import RotationStatus, Trigger
    from keyturn.engine import service
    from tests.client.conftest import until

    Setup(kt, "dual", grace="1s")
    consumers.report(kt.app, CRED, "lagger", 1)
    out = service.rotate(kt.app, CRED, trigger=Trigger.MANUAL, actor="test", reason="drill")
    assert out.status == RotationStatus.WAITING and out.wait_until is not None
    assert until(lambda: utcnow() > out.wait_until)
    resumed = kt.cli("resume", CRED)
    assert resumed.code == 0, resumed.err
    warning = next(line for line in resumed.err.splitlines() if line.startswith("warning:"))
    assert "lagger" in warning and "uses version 1" in warning
    assert "rotated to version 2" in resumed.out


def test_the_emergency_preview_tells_an_old_version_from_the_current(kt: Harness) -> None:
    """A consumer still on a version older than the current one is not told that the
    emergency rotation revokes its version (it is gone already): it is told it is behind."""
    Setup(kt, "single")
    consumers.report(kt.app, CRED, "web", 1)
    assert kt.cli("rotate", CRED, "--reason", "drill").code == 0  # version 2 current
    consumers.report(kt.app, CRED, "api", 2)
    risky = {
        r["name"]: r["why"]
        for r in json.loads(kt.cli("consumers", CRED, "--at-risk", "emergency", "--json").out)
    }
    assert risky == {
        "web": "uses version 1, older than the current 2",
        "api": "uses version 2, which an emergency rotation revokes at once",
    }
