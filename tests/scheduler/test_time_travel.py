"""The schedule, tested by moving `--at` (with `--execute`: without it `--at` only previews):
due at exactly max age, one notice per cycle, missed runs caught up, blackouts respected."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from keyturn.db import repo
from keyturn.db.models import Notice, Version
from keyturn.domain.model import VersionState
from tests.support.keyturn import Harness

T0 = datetime(2026, 1, 1, 2, 0, tzinfo=UTC)
POLICY_EXTRA = ""


def inventory(extra: str = "") -> str:
    return f"""
[tenants.acme]
recipients = ["admins@acme.example"]

[policies.smtp]
max_age = "180d"
notice = "7d"
grace = "0s"
{extra}

[targets.mail]
type = "passwd-file"
path = "mail.passwd"

[[credentials]]
id = "acme/smtp-admin"
kind = "smtp"
policy = "smtp"
target = "mail"
username = "admin@acme.example"
initial_secret = "env:PW"
"""


@pytest.fixture
def cred(kt: Harness):  # type: ignore[no-untyped-def]
    def make(extra: str = "") -> Harness:
        kt.write("keyturn.toml", inventory(extra))
        assert kt.cli("apply", "keyturn.toml", env={"PW": "initial-password-1234"}).code == 0
        with kt.app.db.write() as session:
            session.execute(
                update(Version).where(Version.state == VersionState.CURRENT).values(activated_at=T0)
            )
            session.flush()
            repo.refresh_due(session, repo.get_credential(session, "acme/smtp-admin"))
        return kt

    return make


def run_due(kt: Harness, at: datetime) -> dict:  # type: ignore[type-arg]
    result = kt.cli("run-due", "--at", at.isoformat(), "--execute", "--json")
    assert result.code in (0, 1), result.err
    return json.loads(result.out)  # type: ignore[no-any-return]


def day(n: int, hour: int = 2) -> datetime:
    return T0 + timedelta(days=n) + timedelta(hours=hour - 2)


def test_due_at_exactly_180_days_not_179(cred) -> None:  # type: ignore[no-untyped-def]
    kt = cred()
    assert run_due(kt, day(179))["rotated"] == []
    assert run_due(kt, day(180))["rotated"] == ["acme/smtp-admin"]
    assert json.loads(kt.cli("show", "acme/smtp-admin", "--json").out)["version"] == 2


def notices(kt: Harness) -> list[Notice]:
    with kt.app.db.read() as session:
        return list(session.execute(select(Notice).where(Notice.kind == "notice")).scalars())


def test_one_notice_at_173_days_and_none_after(cred) -> None:  # type: ignore[no-untyped-def]
    kt = cred()
    assert run_due(kt, day(172))["noticed"] == []
    assert run_due(kt, day(173))["noticed"] == ["acme/smtp-admin"]
    for n in (174, 175, 176, 177, 178, 179):
        assert run_due(kt, day(n))["noticed"] == []
    sent = notices(kt)
    assert len(sent) == 1 and sent[0].recipient == "admins@acme.example"
    assert "2026-06-30" in sent[0].subject


def test_missed_daily_run_is_caught_up(cred) -> None:  # type: ignore[no-untyped-def]
    kt = cred()
    run_due(kt, day(179))  # the 02:00 run of day 179 happened
    # Down at 02:00 on day 180; back at 09:00: the missed run happens at once.
    late = run_due(kt, day(180, hour=9))
    assert late["rotated"] == ["acme/smtp-admin"] and len(late["passes"]) == 1
    # Later the same day nothing runs again: that slot is done.
    assert run_due(kt, day(180, hour=15))["passes"] == []


def test_blackout_defers_the_rotation(cred) -> None:  # type: ignore[no-untyped-def]
    kt = cred('blackout = ["2026-06-30/2026-07-01"]')
    first = run_due(kt, day(180))
    assert first["due"] == ["acme/smtp-admin"] and first["deferred"] == ["acme/smtp-admin"]
    assert first["rotated"] == []
    assert run_due(kt, day(181))["rotated"] == []
    assert run_due(kt, day(182))["rotated"] == ["acme/smtp-admin"]


def test_window_and_jitter(cred) -> None:  # type: ignore[no-untyped-def]
    kt = cred('window = "01:00-03:00"\njitter = "6h"')
    with kt.app.db.read() as session:
        due_at = repo.get_credential(session, "acme/smtp-admin").due_at
    assert due_at is not None and day(180) <= due_at < day(180) + timedelta(hours=6)
    assert run_due(kt, day(181, hour=9))["deferred"] == ["acme/smtp-admin"]  # outside window
    assert run_due(kt, day(182))["rotated"] == ["acme/smtp-admin"]


def test_plan_lists_notice_and_rotation(cred) -> None:  # type: ignore[no-untyped-def]
    kt = cred('blackout = ["2026-06-30"]')
    events = json.loads(kt.cli("plan", "--days", "200", "--at", T0.isoformat(), "--json").out)
    assert [(e["action"], e["at"][:16]) for e in events] == [
        ("notice", "2026-06-23T02:00"),
        ("rotate", "2026-07-01T02:00"),
    ]


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ('schedule = "0 25 * * *"', "invalid cron"),
        ('window = "25:00-26:00"', "invalid window"),
        ('blackout = ["someday"]', "invalid blackout"),
        ('recipients = ["not an address"]', "invalid recipient"),
        ('jitter = "forever"', "policies.smtp.jitter: invalid jitter"),
    ],
)
def test_invalid_schedule_settings_are_clear_errors(kt: Harness, extra: str, words: str) -> None:
    kt.write("keyturn.toml", inventory(extra))
    result = kt.cli("apply", "keyturn.toml", env={"PW": "initial-password-1234"})
    assert result.code == 1 and words in result.err
    assert len(result.err.strip().splitlines()) == 1
