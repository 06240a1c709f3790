"""The rotation protocol end to end on a real passwd-file target (Dovecot's format)."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from keyturn.audit import log as audit
from keyturn.cli import secret
from keyturn.db import repo
from keyturn.db.models import Credential, Notice, Rotation, utcnow
from keyturn.domain.errors import RotationInProgress
from keyturn.domain.model import PasswordRules, Trigger, VersionState
from keyturn.engine import service
from keyturn.engine.protocol import Runner
from tests.engine.conftest import INITIAL, stop_at
from tests.support.keyturn import Harness

CRED = "acme/smtp-admin"
USER = "admin@acme.example"


def rotate(kt: Harness, *extra: str) -> dict:  # type: ignore[type-arg]
    result = kt.cli("rotate", CRED, "--reason", "test run", "--json", *extra)
    return json.loads(result.out)[0] if result.out.strip() else {"error": result.err}


def actions(kt: Harness) -> list[str]:
    with kt.app.db.read() as session:
        return [e.action for e in audit.iter_entries(session)]


def test_single_replaces_the_value_and_the_old_one_is_refused(kt: Harness, setup) -> None:  # type: ignore[no-untyped-def]
    s = setup("single")
    assert s.accepts(USER, INITIAL)
    out = rotate(kt)
    assert out["status"] == "done" and out["version"] == 2
    user, new = s.current()
    assert user == USER and new != INITIAL and len(new) == 32
    assert s.accepts(USER, new) and not s.accepts(USER, INITIAL)
    assert {n: st for n, (st, _, _) in s.values().items()} == {1: "retired", 2: "current"}
    assert kt.cli("get", CRED).out.strip() == new
    with kt.app.db.read() as session:
        tested = next(e for e in audit.iter_entries(session) if e.action == "rotation.test")
    assert tested.details["old_rejected"] is True and tested.reason == "test run"
    assert [a for a in actions(kt) if a.startswith("rotation.")] == [
        "rotation.start",
        "rotation.create",
        "rotation.set",
        "rotation.test",
        "rotation.publish",
        "rotation.promote",
        "rotation.wait-over",
        "rotation.revoke",
        "rotation.done",
    ]
    assert kt.cli("audit", "verify").code == 0


def test_alternating_flips_logins_and_both_work_during_grace(kt: Harness, setup) -> None:  # type: ignore[no-untyped-def]
    s = setup("alternating", grace="1d")
    assert s.accepts("app", INITIAL)
    first = rotate(kt)
    assert first["status"] == "waiting"
    user, new = s.current()
    assert user == "app_clone" and s.accepts("app_clone", new) and s.accepts("app", INITIAL)
    assert kt.cli("get", CRED, "--previous").out.strip() == INITIAL
    # A second rotation cannot start while the first waits.
    assert "already in progress" in kt.cli("rotate", CRED, "--reason", "x").err
    # The grace period ends: resume revokes the old login.
    with kt.app.db.write() as session:
        session.execute(update(Rotation).values(wait_until=utcnow() - timedelta(seconds=1)))
    assert kt.cli("resume", CRED).code == 0
    assert not s.accepts("app", INITIAL) and s.accepts("app_clone", new)
    users = []
    for _ in range(3):
        kt.write("keyturn.toml", (kt.home / "keyturn.toml").read_text().replace('"1d"', '"0s"'))
        kt.cli("apply", "keyturn.toml")
        assert rotate(kt)["status"] == "done"
        users.append(s.current()[0])
        assert s.accepts(*s.current())
    assert users == ["app", "app_clone", "app"]


def test_dual_keeps_both_until_consumers_move(kt: Harness, setup) -> None:  # type: ignore[no-untyped-def]
    s = setup("dual", grace="7d", consumers=("billing", "mailer"))
    out = rotate(kt)
    assert out["status"] == "waiting"
    _, new = s.current()
    assert s.accepts(USER, new) and s.accepts(USER, INITIAL)
    service.report_consumer(kt.app, CRED, "billing", 2)
    assert kt.cli("resume", CRED).code == 0
    assert s.accepts(USER, INITIAL)  # mailer has not moved
    service.report_consumer(kt.app, CRED, "mailer", 2)
    assert kt.cli("resume", CRED).code == 0
    assert s.accepts(USER, new) and not s.accepts(USER, INITIAL)
    with kt.app.db.read() as session:
        revoke = next(e for e in audit.iter_entries(session) if e.action == "rotation.revoke")
    assert revoke.details["old_rejected"] is True


@pytest.mark.parametrize("how", ["aborted", "failed"])
def test_a_previous_value_left_accepted_is_revoked_before_the_next_rotation_retires_it(
    kt: Harness, setup, how: str
) -> None:  # type: ignore[no-untyped-def]
    """A `dual` rotation aborted (or failed) after promotion leaves the previous value
    accepted, by design. The next rotation retires it at its promotion, so it revokes it
    first, before it changes the target: no retired value logs in."""
    s = setup("dual", grace="7d", consumers=("billing",))
    assert rotate(kt)["status"] == "waiting"
    _, second = s.current()
    if how == "aborted":
        assert kt.cli("abort", CRED, "--reason", "keep the old one for now").code == 0
    else:
        with kt.app.db.write() as session:
            session.execute(update(Rotation).values(status="failed", lease_owner=None))
    assert s.accepts(USER, INITIAL) and s.accepts(USER, second)  # version 1 left accepted
    assert rotate(kt)["status"] == "waiting"
    states = {n: st for n, (st, _, _) in s.values().items()}
    assert states == {1: "retired", 2: "previous", 3: "current"}
    assert not s.accepts(USER, INITIAL)  # revoked before it was retired
    assert s.accepts(USER, second) and s.accepts(*s.current())
    with kt.app.db.read() as session:
        (entry,) = [e for e in audit.iter_entries(session) if e.action.endswith("leftover")]
    assert entry.details["version"] == 1 and entry.details["rotation"] == 2
    assert kt.cli("audit", "verify").code == 0


def test_grace_end_revokes_and_names_who_did_not_move(kt: Harness, setup) -> None:  # type: ignore[no-untyped-def]
    s = setup("dual", grace="7d", consumers=("billing",))
    rotate(kt)
    with kt.app.db.write() as session:
        session.execute(update(Rotation).values(wait_until=utcnow() - timedelta(seconds=1)))
    assert kt.cli("resume").code == 0
    assert not s.accepts(USER, INITIAL)
    with kt.app.db.read() as session:
        notice = session.execute(
            select(Notice).where(Notice.kind == "consumers-lagging")
        ).scalar_one()
    assert "billing" in notice.body


def test_emergency_revokes_at_once(kt: Harness, setup) -> None:  # type: ignore[no-untyped-def]
    s = setup("dual", grace="7d", consumers=("billing",))
    out = rotate(kt, "--emergency")
    assert out["status"] == "done"
    assert not s.accepts(USER, INITIAL) and s.accepts(*s.current())


def test_stores_receive_the_new_value(kt: Harness, setup) -> None:  # type: ignore[no-untyped-def]
    s = setup("single", stores=True)
    rotate(kt)
    env = (kt.home / "app.env").read_text()
    assert f"ACME_SMTP_ADMIN={s.current()[1]}" in env and "ACME_SMTP_ADMIN_VERSION=2" in env


def test_one_active_rotation_is_a_database_constraint(kt: Harness, setup) -> None:  # type: ignore[no-untyped-def]
    setup("single")
    service.start(kt.app, CRED, trigger=Trigger.MANUAL, actor="t", reason="r")
    with pytest.raises(RotationInProgress):
        service.start(kt.app, CRED, trigger=Trigger.MANUAL, actor="t", reason="r")
    with pytest.raises(IntegrityError), kt.app.db.write() as session:
        # Bypassing the service's own check: the database still refuses.
        session.add(
            Rotation(
                credential_id=CRED,
                trigger="manual",
                actor="x",
                strategy="single",
                status="retrying",
            )
        )
        session.flush()


def test_reason_is_required_for_manual_rotation(kt: Harness, setup) -> None:  # type: ignore[no-untyped-def]
    setup("single")
    result = kt.cli("rotate", CRED, "--reason", "  ")
    assert result.code == 1 and "reason is required" in result.err
    assert kt.cli("rotate", CRED).code == 2


def test_a_rejected_value_is_abandoned_with_backoff_then_an_alert(kt: Harness, setup) -> None:  # type: ignore[no-untyped-def]
    s = setup("single")
    s.faults(set="reject")
    first = rotate(kt)
    assert first["status"] == "retrying" and first["next_attempt_at"]
    assert s.accepts(USER, INITIAL)
    states = s.values()
    assert states[2][0] == "failed" and states[1][0] == "current"
    delays = []
    for _ in range(4):
        with kt.app.db.read() as session:
            rot = session.execute(select(Rotation)).scalar_one()
            delays.append(
                (rot.next_attempt_at - rot.updated_at).total_seconds()  # type: ignore[operator]
                if rot.next_attempt_at
                else None
            )
        kt.cli("resume", "--now")
    with kt.app.db.read() as session:
        rot = session.execute(select(Rotation)).scalar_one()
        notices = (
            session.execute(select(Notice).where(Notice.kind == "rotation-failed")).scalars().all()
        )
    assert rot.status == "failed" and rot.attempts == 5
    assert len(notices) == 3  # attempts 3, 4 and the final 5th
    # Every attempt used a fresh value, each abandoned only once the old one was proven to work.
    values = s.values()
    assert sorted(st for st, _, _ in values.values()) == ["current"] + ["failed"] * 5
    assert len({v for _, _, v in values.values()}) == 6
    assert s.accepts(USER, INITIAL) and kt.cli("get", CRED).out.strip() == INITIAL
    assert delays[1] is not None and delays[3] is not None and delays[3] > delays[1]
    # Not an endless loop: the failed rotation does not run again by itself.
    assert kt.cli("resume", "--now", "--json").out.strip() == "[]"


def test_target_down_keeps_the_pending_value_and_reuses_it(kt: Harness, setup) -> None:  # type: ignore[no-untyped-def]
    s = setup("single")
    s.faults(set="down", test="down")
    assert rotate(kt)["status"] == "retrying"
    pending = [v for st, _, v in s.values().values() if st == "pending"]
    s.faults()
    assert len(pending) == 1 and s.accepts(USER, INITIAL)
    assert kt.cli("resume", "--now").code == 0
    assert s.current()[1] == pending[0]  # the same value, not a second one
    assert s.accepts(USER, pending[0]) and not s.accepts(USER, INITIAL)


def test_set_accepted_but_test_fails_restores_the_old_value(kt: Harness, setup) -> None:  # type: ignore[no-untyped-def]
    s = setup("single")
    s.faults(refuse_new=True)
    assert rotate(kt)["status"] == "retrying"
    assert s.accepts(USER, INITIAL)  # restored
    assert [st for st, _, _ in s.values().values()].count("failed") == 1
    s.faults()
    assert kt.cli("resume", "--now").code == 0
    assert s.accepts(*s.current()) and not s.accepts(USER, INITIAL)


def test_database_failure_after_the_target_changed(kt: Harness, setup) -> None:  # type: ignore[no-untyped-def]
    """The pointer commit after `set` fails: the value was stored first, so nothing is lost."""
    s = setup("single")
    rotation_id = stop_at(kt, "set:effect")
    (pending,) = [v for st, _, v in s.values().values() if st == "pending"]
    assert s.accepts(USER, pending) and not s.accepts(USER, INITIAL)  # target changed
    out = Runner(kt.app, rotation_id).run()
    assert out.status == "done" and s.current()[1] == pending


def test_a_live_lease_blocks_and_an_expired_one_is_taken_over(kt: Harness, setup) -> None:  # type: ignore[no-untyped-def]
    s = setup("single")
    rotation_id = service.start(kt.app, CRED, trigger=Trigger.MANUAL, actor="t", reason="r")
    with kt.app.db.write() as session:
        session.execute(
            update(Rotation).values(
                lease_owner="other-host:1", lease_expires_at=utcnow() + timedelta(minutes=5)
            )
        )
    with pytest.raises(RotationInProgress, match="other-host:1"):
        Runner(kt.app, rotation_id).run()
    with kt.app.db.write() as session:
        session.execute(update(Rotation).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
    assert Runner(kt.app, rotation_id).run().status == "done"
    assert s.accepts(*s.current())


@pytest.mark.parametrize("path", ["short", "reference"])
def test_get_prints_the_value_the_target_accepts_mid_rotation(
    kt: Harness, setup, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:  # type: ignore[no-untyped-def]
    """Invariant 9 for `keyturn get`: before `set` it prints the current value; once `set` has
    put the new one on a `single` target (which refuses the current one), the new one, with
    a warning that names its version and not its value; --version still picks by number."""
    if path == "reference":  # a rekey under way, an older schema: keyturn.runtime's read
        monkeypatch.setattr(secret, "_short", _elsewhere)
    s = setup("single")
    rotation_id = stop_at(kt, "set:before")
    before = kt.cli("get", CRED)
    assert (before.code, before.out.strip(), before.err) == (0, INITIAL, "")
    stop_at(kt, "test:before", rotation_id)
    ((number, pending),) = [(n, v) for n, (st, _, v) in s.values().items() if st == "pending"]
    assert s.accepts(USER, pending) and not s.accepts(USER, INITIAL)
    got = kt.cli("get", CRED)
    assert got.code == 0 and got.out.strip() == pending
    assert f"version {number} (pending)" in got.err and pending not in got.err
    as_json = json.loads(kt.cli("get", CRED, "--json").out)
    assert (as_json["state"], as_json["version"], as_json["value"]) == ("pending", number, pending)
    assert kt.cli("get", CRED, "--version", str(number - 1)).out.strip() == INITIAL
    assert Runner(kt.app, rotation_id).run().status == "done"
    done = kt.cli("get", CRED)
    assert (done.out.strip(), done.err) == (pending, "")


def test_get_keeps_the_current_login_of_an_alternating_pair_mid_rotation(
    kt: Harness, setup
) -> None:  # type: ignore[no-untyped-def]
    """`alternating` puts the new value on the other login, and the current login keeps
    working until revoke: `get` prints the current value and login, without a warning."""
    s = setup("alternating")
    stop_at(kt, "test:before")
    (current,) = [(u, v) for st, u, v in s.values().values() if st == "current"]
    assert s.accepts(*current)
    got = kt.cli("get", CRED, "--json")
    assert got.code == 0 and got.err == "", got.err
    shown = json.loads(got.out)
    assert (shown["state"], shown["username"], shown["value"]) == ("current", *current)


def _elsewhere(*_: object) -> None:
    raise secret._Elsewhere


def test_verify_says_why_the_target_refuses_the_current_value(kt: Harness, setup) -> None:  # type: ignore[no-untyped-def]
    """out-of-sync names the refused version and what to do: a rotation past `set` is
    finished by resume; with no rotation, a change outside keyturn is met by a rotation."""
    setup("single")
    rotation_id = stop_at(kt, "test:before")
    (found,) = json.loads(kt.cli("verify", CRED, "--json").out)
    assert found["status"] == "out-of-sync"
    assert f"rotation {rotation_id} has put version 2 on it" in found["detail"]
    assert f"`keyturn resume {CRED}`" in found["detail"]
    assert Runner(kt.app, rotation_id).run().status == "done"
    passwd = kt.home / "mail.passwd"
    passwd.write_text(passwd.read_text().replace(USER + ":", USER + ":x", 1))
    (found,) = json.loads(kt.cli("verify", CRED, "--json").out)
    assert found["status"] == "out-of-sync", found
    assert "changed outside keyturn" in found["detail"] and "version 2" in found["detail"]


def test_abort_before_promotion_puts_the_old_value_back(kt: Harness, setup) -> None:  # type: ignore[no-untyped-def]
    s = setup("single")
    stop_at(kt, "test:before")
    assert not s.accepts(USER, INITIAL)
    result = kt.cli("abort", CRED, "--reason", "changed my mind")
    assert result.code == 0, result.err
    assert s.accepts(USER, INITIAL) and kt.cli("get", CRED).out.strip() == INITIAL
    assert sorted(st for st, _, _ in s.values().values()) == ["current", "failed"]


def test_an_abort_the_target_cannot_take_says_why_and_what_to_do(kt: Harness, setup) -> None:  # type: ignore[no-untyped-def]
    """Past `set` on `single`, the target down: aborting would hand out a value it refuses,
    so the abort waits, in one line that says so; the rotation is still there to finish."""
    s = setup("single")
    stop_at(kt, "test:before")
    s.faults(test="down", set="down")
    result = kt.cli("abort", CRED, "--reason", "changed my mind")
    assert result.code == 1 and len(result.err.splitlines()) == 1, result.err
    assert "cannot abort until the target takes the current value back" in result.err
    assert "keyturn resume" in result.err
    s.faults()
    assert kt.cli("resume", CRED, "--now").code == 0
    assert s.accepts(*s.current())


def test_verify_reports_drift(kt: Harness, setup) -> None:  # type: ignore[no-untyped-def]
    s = setup("single")
    assert kt.cli("verify").code == 0
    (kt.home / "mail.passwd").write_text("")  # someone changed the server behind our back
    result = kt.cli("verify", "--json")
    assert result.code == 1 and json.loads(result.out)[0]["status"] == "out-of-sync"
    assert json.loads(kt.cli("show", CRED, "--json").out)["sync"] == "out-of-sync"
    assert s is not None


def test_no_secret_leaks_sideways(kt: Harness, setup, caplog) -> None:  # type: ignore[no-untyped-def]
    """Grep every output, log line, audit entry and notice for every value used."""
    caplog.set_level(logging.DEBUG)
    s = setup("dual", grace="0s", consumers=("billing",))
    texts = [rotate(kt).__repr__()]
    s.faults(set="reject")
    texts.append(repr(rotate(kt)))
    s.faults(refuse_new=True)
    texts.append(kt.cli("resume", "--now").err)
    s.faults()
    texts.append(kt.cli("resume", "--now", "--json").out)
    for args in (
        ["show", CRED, "--json"],
        ["show", CRED],
        ["list", "--json"],
        ["audit", "export"],
        ["verify", "--json"],
        ["-v", "show", CRED],
    ):
        result = kt.cli(*args)
        texts += [result.out, result.err]
    with kt.app.db.read() as session:
        texts += [
            f"{n.subject} {n.body} {n.data} {n.last_error}"
            for n in session.execute(select(Notice)).scalars()
        ]
        texts += [f"{r.error} {r.reason}" for r in session.execute(select(Rotation)).scalars()]
    texts += [r.getMessage() for r in caplog.records]
    everything = "\n".join(texts)
    values = [v for _, _, v in s.values().values()]
    assert len(values) >= 3
    for value in values:
        assert value not in everything


def test_leak_revokes_at_once_and_is_recorded_as_a_leak(kt: Harness, setup) -> None:  # type: ignore[no-untyped-def]
    s = setup("dual", grace="7d", consumers=("billing",))
    out = rotate(kt, "--leak")
    assert out["status"] == "done"
    assert not s.accepts(USER, INITIAL) and s.accepts(*s.current())
    with kt.app.db.read() as session:
        start = next(e for e in audit.iter_entries(session) if e.action == "rotation.start")
    assert start.details["trigger"] == "leak" and start.reason == "test run"


def test_a_start_that_loses_the_race_is_in_progress(kt: Harness, setup, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Two starts that both saw no active rotation: the database's unique index refuses
    the second row, which says the rotation in progress, and nothing of it is stored."""
    setup("alternating", grace="1d")
    first = service.start(kt.app, CRED, trigger=Trigger.MANUAL, actor="t", reason="first")
    real = service.repo.locked_credential_with

    def blind(session, credential_id):  # type: ignore[no-untyped-def]
        cred, rows, _active = real(session, credential_id)
        return cred, rows, None  # as a start that asked before the first one committed

    monkeypatch.setattr(service.repo, "locked_credential_with", blind)
    with pytest.raises(RotationInProgress, match=f"rotation {first}"):
        service.start(kt.app, CRED, trigger=Trigger.MANUAL, actor="t", reason="second")
    with kt.app.db.read() as session:
        assert session.execute(select(Rotation.id)).scalars().all() == [first]
    assert "rotation.start" in actions(kt)
    assert actions(kt).count("rotation.start") == 1


def test_the_promotion_leaves_the_credential_in_sync_and_due_again(kt: Harness, setup) -> None:  # type: ignore[no-untyped-def]
    """As stored (read afresh), not only as the run's loaded row says: in sync, verified at
    the promotion, due and noticed again from the new current value's activation."""
    setup("single")
    with kt.app.db.write() as session:
        session.get(Credential, CRED).due_at = None  # type: ignore[union-attr]
    assert rotate(kt)["status"] == "done"
    with kt.app.db.read() as session:
        cred = session.get(Credential, CRED)
        assert cred is not None
        current = repo.version_in_state(session, CRED, VersionState.CURRENT)
        assert current is not None and current.activated_at is not None
        policy = repo.policy_for(session, cred, PasswordRules())
        due, notice = policy.due_times(current.activated_at, CRED, repo.validity(current))
        assert cred.sync_status == "in-sync" and cred.verified_at == current.activated_at
        assert (cred.due_at, cred.notice_at) == (due, notice)
        assert cred.schedule == policy.schedule
        assert cred.updated_at >= current.activated_at


def test_a_failure_past_set_says_whether_the_current_value_still_works(kt: Harness, setup) -> None:  # type: ignore[no-untyped-def]
    """`single`, stuck at publish (the store cannot be written): the target already has the
    new value and refuses the current one, and the one error line says so and how to read
    it (it said "the current value still works"). Said once: no log line, nothing on stdout
    repeating it."""
    s = setup("single", stores=True)
    (kt.home / "app.env").mkdir()  # the dotenv store cannot replace a folder
    result = kt.cli("rotate", CRED, "--reason", "t")
    assert result.code == 1 and result.out == "", result
    (line,) = result.err.splitlines()
    assert line.startswith("error: ") and "attempt failed (publish" in line, line
    assert "refuses the current value" in line and f"keyturn get {CRED} --version 2" in line
    assert not s.accepts(USER, INITIAL)
    assert json.loads(kt.cli("show", CRED, "--json").out)["rotations"][-1]["status"] == "retrying"
    (kt.home / "app.env").rmdir()
    assert kt.cli("resume", "--now").code == 0


def test_a_done_single_rotation_says_the_current_value_works(kt: Harness, setup) -> None:  # type: ignore[no-untyped-def]
    """Past `set` is `refused` only until promotion: once done, the new value is current."""
    s = setup("single")
    out = rotate(kt)
    assert out["status"] == "done" and out["current_value"] == "works", out
    assert s.accepts(*s.current())


def test_a_failure_says_what_works_meanwhile(kt: Harness, setup) -> None:  # type: ignore[no-untyped-def]
    """The new value refused at test, the old one put back: the current value works. The
    target down at set: keyturn cannot tell, and says so."""
    s = setup("single")
    s.faults(refuse_new=True)
    out = rotate(kt)
    assert out["status"] == "retrying" and out["current_value"] == "works", out
    result = kt.cli("resume", CRED, "--now")
    assert result.code == 1 and "the current value still works" in result.err, result
    assert s.accepts(USER, INITIAL)
    s.faults(set="down", test="down")
    result = kt.cli("resume", CRED, "--now")
    assert result.code == 1 and "may already hold the new value" in result.err, result
