"""keyturn end to end against MailU doubles: seed 000's flow, crashes, aborts, backoff, leaks.

Each tenant has its own MailU double (tests/support/mailu_double.py, which follows MailU
2024.06.57 point by point and says what it leaves out), with its own port, API token, SMTP
listener and rate limiter; keyturn runs through its CLI and REST API on SQLite (or
PostgreSQL) as in production.
"""

from __future__ import annotations

import json
import logging
import signal
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from typing import Any

import pytest
from fastapi.testclient import TestClient
from passlib import hash as passlib_hash
from sqlalchemy import select, update

from keyturn import auth
from keyturn.api import create_app
from keyturn.audit import log as audit
from keyturn.db import repo
from keyturn.db.models import Rotation, Tenant, Version, utcnow
from keyturn.domain.model import VersionState
from tests.support.keyturn import Harness
from tests.support.mailu_double import MailuDouble, free_port
from tests.targets.conftest import new_password

WORKER = {"KEYTURN_WORKER_ID": "worker-1"}
# Every scheme MailU writes or still accepts at login, as a MailU user record holds it.
SCHEMES: dict[str, Callable[[str], str] | None] = {
    "bcrypt_sha256": None,  # what MailU >= 1.9 writes (hashed by the double)
    "{SHA512-CRYPT}": lambda p: (
        "{SHA512-CRYPT}" + passlib_hash.sha512_crypt.using(rounds=5000).hash(p)
    ),
    "{SHA256-CRYPT}": lambda p: (
        "{SHA256-CRYPT}" + passlib_hash.sha256_crypt.using(rounds=5000).hash(p)
    ),
    "{MD5-CRYPT}": lambda p: "{MD5-CRYPT}" + passlib_hash.md5_crypt.hash(p),
    "{BLF-CRYPT}": lambda p: "{BLF-CRYPT}" + passlib_hash.bcrypt.using(rounds=4).hash(p),
    "{PBKDF2}": lambda p: "{PBKDF2}" + passlib_hash.pbkdf2_sha512.using(rounds=1000).hash(p),
    "{CRYPT}": lambda p: "{CRYPT}" + passlib_hash.des_crypt.hash(p),
    "$6$": lambda p: passlib_hash.sha512_crypt.using(rounds=5000).hash(p),
    "{SSHA512}": lambda p: str(passlib_hash.ldap_salted_sha512.hash(p)),
}


class Mailbox:
    """The notification channel's SMTP server: keeps what keyturn sends to admins."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[tuple[list[str], str, str]] = []
        box = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                msg = message_from_bytes(envelope.content)
                body = msg.get_payload(decode=True) or b""
                box.messages.append((list(envelope.rcpt_tos), str(msg["Subject"]), body.decode()))
                return "250 OK"

        self.port = free_port()
        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()


def inventory(tenants: dict[str, MailuDouble], plugin_type: str, grace: str, mailbox: int) -> str:
    strategy = "dual" if plugin_type == "mailu-token" else "single"
    parts = [
        f'[channels.mail]\ntype = "email"\nhost = "127.0.0.1"\nport = {mailbox}\ntls = "none"\n'
        'sender = "keyturn@platform.example"\n',
        '[policies.smtp]\nmax_age = "180d"\nnotice = "7d"\nschedule = "0 2 * * *"\n'
        f'grace = "{grace}"\n',
    ]
    for tenant, double in tenants.items():
        initial = "" if strategy == "dual" else f'initial_secret = "env:{tenant.upper()}_INITIAL"'
        parts.append(
            f"""
[tenants.{tenant}]
recipients = ["admins@{tenant}.example"]

[targets.{tenant}-mailu]
type = "{plugin_type}"
url = "{double.url}"
api_token = "env:{tenant.upper()}_MAILU_TOKEN"
smtp_host = "127.0.0.1"
smtp_port = {double.smtp_port}
smtp_tls = "none"

[[credentials]]
id = "{tenant}/smtp-admin"
tenant = "{tenant}"
kind = "smtp-mailu"
policy = "smtp"
target = "{tenant}-mailu"
strategy = "{strategy}"
username = "admin@{tenant}.example"
{initial}
"""
        )
    return "\n".join(parts)


class Tenants:
    """N tenants, each with its own MailU double (own port, API token, users and limiter)."""

    def __init__(
        self,
        kt: Harness,
        count: int,
        plugin_type: str = "mailu",
        grace: str = "0s",
        schemes: list[str] | None = None,
    ) -> None:
        self.kt = kt
        self.mailbox = Mailbox()
        self.doubles = {f"t{i:02d}": MailuDouble().start(smtp=True) for i in range(count)}
        self.schemes = dict(zip(self.doubles, schemes or ["bcrypt_sha256"] * count, strict=True))
        # {CRYPT} (DES) uses 8 characters: MailU refuses longer passwords with it.
        self.initial = {
            t: new_password()[: 8 if self.schemes[t] == "{CRYPT}" else None] for t in self.doubles
        }
        self.env: dict[str, str] = {}
        for tenant, double in self.doubles.items():
            user, value, make = (
                f"admin@{tenant}.example",
                self.initial[tenant],
                SCHEMES[self.schemes[tenant]],
            )
            double.add_user(user, value) if make is None else double.add_user(
                user, stored=make(value)
            )
            self.env[f"{tenant.upper()}_MAILU_TOKEN"] = str(double.api_token)
            self.env[f"{tenant.upper()}_INITIAL"] = value
        kt.write("keyturn.toml", inventory(self.doubles, plugin_type, grace, self.mailbox.port))
        result = kt.cli("apply", "keyturn.toml", env=self.env)
        assert result.code == 0, result.err

    def rotate(self, tenant: str, *extra: str) -> dict:  # type: ignore[type-arg]
        result = self.kt.cli(
            "rotate", f"{tenant}/smtp-admin", "--reason", "test", "--json", *extra, env=self.env
        )
        assert result.out.strip(), result.err
        return json.loads(result.out)[0]  # type: ignore[no-any-return]

    def versions(self, tenant: str) -> list[tuple[int, str, str | None, str, str]]:
        app = self.kt.app
        with app.db.read() as session:
            return [
                (v.number, v.state, v.key_id, v.data_key_id, app.vault.reveal(v).reveal())
                for v in repo.versions(session, f"{tenant}/smtp-admin")
            ]

    def current(self, tenant: str) -> str:
        return next(v for _, s, _, _, v in self.versions(tenant) if s == "current")

    def activated(self, tenant: str, at: datetime) -> None:
        with self.kt.app.db.write() as session:
            session.execute(
                update(Version)
                .where(Version.credential_id == f"{tenant}/smtp-admin")
                .where(Version.state == VersionState.CURRENT)
                .values(activated_at=at)
            )
            session.flush()
            repo.refresh_due(session, repo.get_credential(session, f"{tenant}/smtp-admin"))

    def stop(self) -> None:
        for double in self.doubles.values():
            double.stop()
        self.mailbox.stop()


@pytest.fixture
def tenants(kt: Harness) -> Iterator[Callable[..., Tenants]]:
    made: list[Tenants] = []

    def make(*args: Any, **kwargs: Any) -> Tenants:
        made.append(Tenants(kt, *args, **kwargs))
        return made[-1]

    yield make
    for t in made:
        t.stop()


def everything_written(
    kt: Harness,
    tenants: Tenants,
    caplog: pytest.LogCaptureFixture,
    shown: list[str] | None = None,
) -> str:
    """Every text keyturn wrote: CLI output, audit, rotation errors, logs, e-mails."""
    texts = []
    for args in (["audit", "export"], ["list", "--json"], ["verify", "--json"]):
        result = kt.cli(*args, env=tenants.env)
        texts += [result.out, result.err]
    for tenant in shown or list(tenants.doubles):
        result = kt.cli("show", f"{tenant}/smtp-admin", "--json")
        texts += [result.out, result.err]
    with kt.app.db.read() as session:
        texts += [f"{r.error} {r.reason}" for r in session.execute(select(Rotation)).scalars()]
    texts += [r.getMessage() for r in caplog.records]
    texts += [f"{to} {subject} {body}" for to, subject, body in tenants.mailbox.messages]
    return "\n".join(texts)


def assert_no_value_leaks(text: str, tenants: Tenants, extra: list[str]) -> None:
    values = [v[4] for t in tenants.doubles for v in tenants.versions(t)]
    values += list(tenants.initial.values()) + extra
    values += [str(d.api_token) for d in tenants.doubles.values()]
    assert len(values) >= 2
    for value in values:
        assert value not in text


# -- seed 000: ten tenants, the 02:00 pass, notices, an admin's rotation with a reason ---------

T0 = datetime(2026, 1, 1, 2, 0, tzinfo=UTC)
DUE_AT = T0 + timedelta(days=180)  # the 02:00 pass of day 180


LEGACY = [s for s in SCHEMES if s != "bcrypt_sha256"]
FLOWS = {
    # MailU's default: four due at the 02:00 pass, two noticed, four fresh (one rotated by hand).
    "bcrypt_sha256": (["bcrypt_sha256"] * 10, 4, 2),
    # Every legacy scheme rotated in the pass (one tenant each), then a notice, then one by hand.
    "legacy schemes": (LEGACY + LEGACY[:2], len(LEGACY), 1),
}


@pytest.mark.parametrize("flow", list(FLOWS))
def test_seed_000_flow_for_each_hash_scheme(
    tenants: Callable[..., Tenants],
    kt: Harness,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    flow: str,
) -> None:
    """Seed 000: ten tenants' MailU admin passwords; the 02:00 pass rotates those 180 days old
    and e-mails a notice to those 173 days old, once; a platform admin rotates one at once
    with a reason. Every tenant ends in sync, no login failed, no value was written anywhere."""
    caplog.set_level(logging.DEBUG, logger="keyturn")
    schemes, due_count, notice_count = FLOWS[flow]
    many = tenants(10, schemes=schemes)
    names = list(many.doubles)
    due, noticed = names[:due_count], names[due_count : due_count + notice_count]
    fresh = names[due_count + notice_count :]
    by_hand = fresh[-1]
    for tenant in due:
        many.activated(tenant, T0)
    for tenant in noticed:
        many.activated(tenant, T0 + timedelta(days=7))  # 173 days old at the pass
    for tenant in fresh:
        many.activated(tenant, T0 + timedelta(days=100))
    legacy = {t: d.stored_hash(f"admin@{t}.example") for t, d in many.doubles.items()}

    at = DUE_AT.isoformat()  # --execute: without it, --at only previews the pass
    passed = json.loads(kt.cli("run-due", "--at", at, "--execute", "--json", env=many.env).out)
    assert sorted(passed["rotated"]) == [f"{t}/smtp-admin" for t in due], passed
    assert sorted(passed["noticed"]) == [f"{t}/smtp-admin" for t in noticed], passed
    for tenant, double in many.doubles.items():
        user = f"admin@{tenant}.example"
        if tenant in due:
            new = many.current(tenant)
            assert double.accepts(user, new) and not double.accepts(user, many.initial[tenant])
            assert double.stored_hash(user).startswith("$bcrypt-sha256$")
        else:  # untouched: nothing written, no login made
            assert double.stored_hash(user) == legacy[tenant] and double.logins == []
        assert double.failed_logins == 0
    sent = {(to[0], s.removeprefix("[keyturn] ")) for to, s, _ in many.mailbox.messages}
    for tenant in due:
        assert (f"admins@{tenant}.example", f"{tenant}/smtp-admin rotated") in sent
    notices = sorted(to for to, s in sent if "will be rotated on 2026-07-07" in s)
    assert notices == [f"admins@{t}.example" for t in noticed], sent

    # The next day's pass sends nothing again (one notice per cycle) and rotates nothing.
    again = json.loads(
        kt.cli(
            "run-due",
            "--at",
            (DUE_AT + timedelta(days=1)).isoformat(),
            "--execute",
            "--json",
            env=many.env,
        ).out
    )
    assert again["rotated"] == [] and again["noticed"] == []

    # "Rotate Credentials Now": a platform admin, with a reason; other roles may not.
    for name, value in many.env.items():  # what `keyturn serve` has in its environment
        monkeypatch.setenv(name, value)
    app = create_app(kt.app)
    with kt.app.db.write() as session:
        admin = auth.create_token(session, "admin", name="platform-admin")
        auditor = auth.create_token(session, "auditor", name="auditor")
    path = f"/api/v1/credentials/{by_hand}/smtp-admin/rotate"
    body = {"reason": f"suspected compromise of {by_hand}'s mail server"}
    with TestClient(app) as client:
        refused = client.post(path, json=body, headers={"Authorization": f"Bearer {auditor.token}"})
        done = client.post(path, json=body, headers={"Authorization": f"Bearer {admin.token}"})
    assert refused.status_code == 403
    assert done.status_code == 200 and done.json()["status"] == "done", done.text
    assert many.doubles[by_hand].accepts(f"admin@{by_hand}.example", many.current(by_hand))
    with kt.app.db.read() as session:
        entries = [
            e for e in audit.iter_entries(session) if e.credential_id == f"{by_hand}/smtp-admin"
        ]
    manual = [e for e in entries if e.reason == body["reason"]]
    assert {e.actor for e in manual} == {f"token:{admin.id}"}
    assert {"rotation.start", "rotation.set", "rotation.done"} <= {e.action for e in manual}

    written = everything_written(kt, many, caplog, [by_hand, due[0]])
    verify = json.loads(kt.cli("verify", "--json", env=many.env).out)
    assert {v["status"] for v in verify} == {"in-sync"}, verify
    assert kt.cli("audit", "verify").code == 0
    assert sum(d.failed_logins for d in many.doubles.values()) == 0
    assert_no_value_leaks(written, many, [admin.token, auditor.token])


# -- one tenant through the CLI ----------------------------------------------------------------


def test_single_end_to_end(tenants: Callable[..., Tenants], kt: Harness) -> None:
    acme = tenants(1)
    double, user = acme.doubles["t00"], "admin@t00.example"
    out = acme.rotate("t00")
    assert out["status"] == "done", out
    new = acme.current("t00")
    assert new != acme.initial["t00"]
    assert double.accepts(user, new) and not double.accepts(user, acme.initial["t00"])
    assert kt.cli("get", "t00/smtp-admin").out.strip() == new
    verify = kt.cli("verify", "t00/smtp-admin", "--json", env=acme.env)
    assert verify.code == 0 and "in-sync" in verify.out
    # Test logins: the new value once at test, once at verify; never a failed one.
    assert [login.result for login in double.logins] == ["password", "password"]


def test_dual_tokens_end_to_end(tenants: Callable[..., Tenants], kt: Harness) -> None:
    acme = tenants(1, "mailu-token", "7d")
    double, user = acme.doubles["t00"], "admin@t00.example"
    assert acme.rotate("t00")["status"] == "done"  # the first token; nothing to revoke
    (v1,) = acme.versions("t00")
    assert v1[2] is not None and double.accepts(user, v1[4])

    assert acme.rotate("t00")["status"] == "waiting"
    v2 = next(v for v in acme.versions("t00") if v[0] == 2)
    assert double.accepts(user, v1[4]) and double.accepts(user, v2[4])  # both until revoke
    with kt.app.db.write() as session:
        session.execute(update(Rotation).values(wait_until=utcnow() - timedelta(seconds=1)))
    assert kt.cli("resume", "t00/smtp-admin", env=acme.env).code == 0
    assert not double.accepts(user, v1[4]) and double.accepts(user, v2[4])
    assert double.token_ids(user) == [str(v2[2]).split(":")[0]]
    assert double.accepts(user, acme.initial["t00"])  # tokens never touch the password
    assert double.failed_logins == 0


def test_crash_after_issuing_leaves_an_orphan_the_next_run_removes(
    tenants: Callable[..., Tenants], kt: Harness
) -> None:
    acme = tenants(1, "mailu-token")
    double, user = acme.doubles["t00"], "admin@t00.example"
    assert acme.rotate("t00")["status"] == "done"
    (kept,) = double.token_ids(user)
    phone_id, phone = double.issue_token(user, comment="iphone")
    crashed = kt.spawn(
        "rotate",
        "t00/smtp-admin",
        "--reason",
        "crash test",
        env={**acme.env, **WORKER, "KEYTURN_TEST_CRASH_AT": "create:issued"},
    )
    assert crashed.code == -signal.SIGKILL, crashed.err
    orphans = [t for t in double.tokens(user) if str(t["id"]) not in (kept, str(phone_id))]
    assert len(orphans) == 1  # MailU issued it; keyturn never stored it
    # The restarted worker (same id, so it takes its own lease back at once).
    resumed = kt.cli("resume", "--now", env={**acme.env, **WORKER})
    assert resumed.code == 0, resumed.err
    current = next(v for v in acme.versions("t00") if v[1] == "current")
    # Reconciled away (MailU may give its id to the new token: the comment tells them apart).
    comments = [t["comment"] for t in double.tokens(user)]
    assert orphans[0]["comment"] not in comments
    # grace 0s: the old one is revoked too; the phone's token is never touched.
    assert comments == ["iphone", f"keyturn [kt:{str(current[2]).split(':')[1]}]"]
    assert double.accepts(user, current[4]) and double.accepts(user, phone)
    with kt.app.db.read() as session:
        removed = [e for e in audit.iter_entries(session) if e.action == "rotation.orphan-removed"]
    orphan_key = f"{orphans[0]['id']}:{orphans[0]['comment'][-9:-1]}"
    assert [e.details["key_id"] for e in removed] == [orphan_key]


def test_a_token_id_mailu_gave_again_is_not_revoked_as_the_old_one(
    tenants: Callable[..., Tenants], kt: Harness
) -> None:
    """v1's token is deleted in MailU's UI; MailU (SQLite) gives its id to v2's token."""
    acme = tenants(1, "mailu-token")
    double, user = acme.doubles["t00"], "admin@t00.example"
    assert acme.rotate("t00")["status"] == "done"
    (v1,) = acme.versions("t00")
    double.delete_token(int(str(v1[2]).split(":")[0]))
    out = acme.rotate("t00")
    v2 = next(v for v in acme.versions("t00") if v[0] == 2)
    assert str(v2[2]).split(":")[0] == str(v1[2]).split(":")[0]  # the same id
    assert out["status"] == "done", out  # v1's revoke found nothing of keyturn's to delete
    assert double.accepts(user, v2[4]) and double.token_ids(user) == [str(v2[2]).split(":")[0]]


def test_a_mixed_case_username_rotates_its_tokens(
    tenants: Callable[..., Tenants], kt: Harness
) -> None:
    acme = tenants(1, "mailu-token")
    kt.write(
        "keyturn.toml",
        (kt.home / "keyturn.toml")
        .read_text()
        .replace('username = "admin@t00.example"', 'username = "Admin@T00.Example"'),
    )
    assert kt.cli("apply", "keyturn.toml", env=acme.env).code == 0
    assert acme.rotate("t00")["status"] == "done"
    assert acme.doubles["t00"].accepts("admin@t00.example", acme.current("t00"))


# -- abort: the old value back, or exactly why not ---------------------------------------------


@pytest.mark.parametrize("scheme", ["{MD5-CRYPT}", "{PBKDF2}"])
def test_abort_puts_back_an_old_value_stored_in_a_legacy_scheme(
    tenants: Callable[..., Tenants], kt: Harness, scheme: str
) -> None:
    acme = tenants(1, schemes=[scheme])
    double, user = acme.doubles["t00"], "admin@t00.example"
    double.faults[("PATCH", "/api/v1/user/")] = 503
    assert acme.rotate("t00")["status"] == "retrying"
    aborted = kt.cli("abort", "t00/smtp-admin", "--reason", "maintenance", env=acme.env)
    assert aborted.code == 0, aborted.err
    assert double.accepts(user, acme.initial["t00"])
    assert acme.current("t00") == acme.initial["t00"]
    assert double.failed_logins == 0


def test_abort_resets_a_password_mailu_no_longer_accepts_when_it_can_log_in(
    tenants: Callable[..., Tenants], kt: Harness
) -> None:
    """{PLAIN}: MailU 2024.06 refuses it at login; with smtp_host keyturn finds that out and
    sets the old value again (one failed login, the only one of the attempt)."""
    acme = tenants(1)
    double, user = acme.doubles["t00"], "admin@t00.example"
    double.set_stored(user, "{PLAIN}" + acme.initial["t00"])
    double.faults[("PATCH", "/api/v1/user/")] = 503
    assert acme.rotate("t00")["status"] == "retrying"
    double.faults.clear()
    aborted = kt.cli("abort", "t00/smtp-admin", "--reason", "maintenance", env=acme.env)
    assert aborted.code == 0, aborted.err
    assert double.accepts(user, acme.initial["t00"])
    assert double.stored_hash(user).startswith("$bcrypt-sha256$")
    assert double.failed_logins <= 2  # one in the rotation's attempt, one in abort's


def test_abort_says_exactly_why_it_cannot_check_without_smtp(
    tenants: Callable[..., Tenants], kt: Harness
) -> None:
    acme = tenants(1)
    kt.write(
        "keyturn.toml",
        (kt.home / "keyturn.toml")
        .read_text()
        .replace('smtp_host = "127.0.0.1"', "# no smtp_host")
        .replace(f"smtp_port = {acme.doubles['t00'].smtp_port}", "")
        .replace('smtp_tls = "none"', ""),
    )
    assert kt.cli("apply", "keyturn.toml", env=acme.env).code == 0
    double, user = acme.doubles["t00"], "admin@t00.example"
    double.set_stored(user, "{PLAIN}" + acme.initial["t00"])
    double.faults[("PATCH", "/api/v1/user/")] = 503
    assert acme.rotate("t00")["status"] == "retrying"
    aborted = kt.cli("abort", "t00/smtp-admin", "--reason", "maintenance", env=acme.env)
    assert aborted.code == 1
    assert "a form MailU itself refuses at login" in aborted.err and "smtp_host" in aborted.err
    assert acme.initial["t00"] not in aborted.err


def test_a_token_that_cannot_be_tested_is_deleted_not_left_live(
    tenants: Callable[..., Tenants], kt: Harness
) -> None:
    """token_ips without keyturn's address: the test step refuses to log in (MailU would
    count a badip failure) and the token MailU issued is deleted when it is abandoned, or
    when the rotation is aborted, instead of staying live until the next rotation."""
    acme = tenants(1, "mailu-token")
    double, user = acme.doubles["t00"], "admin@t00.example"
    assert acme.rotate("t00")["status"] == "done"
    (kept,) = double.token_ids(user)
    kt.write(
        "keyturn.toml",
        (kt.home / "keyturn.toml")
        .read_text()
        .replace('type = "mailu-token"', 'type = "mailu-token"\ntoken_ips = ["203.0.113.0/24"]'),
    )
    assert kt.cli("apply", "keyturn.toml", env=acme.env).code == 0
    out = acme.rotate("t00")
    assert out["status"] == "retrying" and "badip" in out["error"], out
    assert double.failed_logins == 0  # the current token was checked; nothing was refused
    assert double.token_ids(user) == [kept]  # the abandoned token is gone already
    with kt.app.db.read() as session:
        (retry,) = [e for e in audit.iter_entries(session) if e.action == "rotation.retry"]
    assert retry.details["revoked_key"] and retry.details["abandoned_version"] == 2
    # The retry issues another; an abort deletes that one too.
    assert kt.cli("resume", "--now", env=acme.env).code == 1
    with kt.app.db.write() as session:  # as if the recovery could not tell (target down)
        session.execute(update(Version).where(Version.number == 3).values(state="pending"))
        session.execute(update(Rotation).values(new_version=3))
    double.issue_token(user, comment="unrelated")
    aborted = kt.cli("abort", "t00/smtp-admin", "--reason", "wrong networks", env=acme.env)
    assert aborted.code == 0, aborted.err
    comments = [t["comment"] for t in double.tokens(user)]
    assert len(comments) == 2 and comments[1] == "unrelated"
    with kt.app.db.read() as session:
        (entry,) = [e for e in audit.iter_entries(session) if e.action == "rotation.abort"]
    assert entry.details["revoked_key"]


def test_token_ips_are_checked_at_apply(tenants: Callable[..., Tenants], kt: Harness) -> None:
    acme = tenants(1, "mailu-token")
    kt.write(
        "bad.toml",
        (kt.home / "keyturn.toml")
        .read_text()
        .replace('type = "mailu-token"', 'type = "mailu-token"\ntoken_ips = ["not-an-ip"]'),
    )
    result = kt.cli("apply", "bad.toml", env=acme.env)
    assert result.code == 1 and "token_ips: 'not-an-ip' is not an IP address" in result.err
    assert len(result.err.strip().splitlines()) == 1


# -- the failed-login budget and MailU's rate limit, through the engine -------------------------


def test_a_rotation_makes_one_failing_smtp_login_per_attempt(
    tenants: Callable[..., Tenants], kt: Harness
) -> None:
    """AUTH_REQUIRE_TOKENS: the hash says yes, SMTP says no. The test step's refusal and the
    recovery that follows share one failed login."""
    acme = tenants(1)
    double = acme.doubles["t00"]
    double.require_tokens = True
    out = acme.rotate("t00")
    assert out["status"] == "retrying", out
    assert double.failed_logins == 1
    assert kt.cli("resume", "--now", env=acme.env).code in (0, 1)
    assert double.failed_logins == 2  # the next attempt: one more, not three


def test_a_rate_limited_rotation_waits_mailus_window(
    tenants: Callable[..., Tenants], kt: Harness
) -> None:
    import httpx

    acme = tenants(1)
    double = acme.doubles["t00"]
    for _ in range(5):  # a neighbour in keyturn's /24 sends wrong API tokens
        httpx.get(
            f"{double.url}/api/v1/user/x@t00.example",
            headers={"Authorization": "Bearer wrong", "X-Real-IP": "127.0.0.9"},
        )
    before = datetime.now(UTC)
    out = acme.rotate("t00")
    assert out["status"] == "retrying" and "tries again in 1h" in out["error"], out
    next_at = datetime.fromisoformat(out["next_attempt_at"].replace("Z", "+00:00"))
    assert next_at >= before + timedelta(minutes=59)
    with kt.app.db.read() as session:
        rot = session.execute(select(Rotation)).scalars().one()
        assert rot.next_attempt_at is not None
    assert [r.status for r in double.requests[-1:]] == [429]
    assert sum(1 for r in double.requests if r.client == "127.0.0.1") == 1  # then nothing more
    # A resume before the window is over leaves it alone.
    kt.cli("resume", env=acme.env)
    assert sum(1 for r in double.requests if r.client == "127.0.0.1") == 1


def test_ten_tenants_each_on_its_own_endpoint_and_key(
    tenants: Callable[..., Tenants], kt: Harness
) -> None:
    many = tenants(10)
    listed = kt.cli("list", "--tenant", "t03", "--json")
    assert listed.code == 0 and "t03/smtp-admin" in listed.out and "t04/" not in listed.out
    for tenant in many.doubles:
        assert many.rotate(tenant)["status"] == "done"
    with kt.app.db.read() as session:
        tenant_keys = {t.id: t.data_key_id for t in session.execute(select(Tenant)).scalars()}
    seen_keys = set()
    for tenant in many.doubles:
        new, user = many.current(tenant), f"admin@{tenant}.example"
        for other, other_double in many.doubles.items():
            assert other_double.accepts(user, new) is (other == tenant)
        keys = {v[3] for v in many.versions(tenant)}
        assert keys == {tenant_keys[tenant]}
        seen_keys |= keys
    assert len(seen_keys) == 10


def test_no_secret_in_logs_errors_or_audit(
    tenants: Callable[..., Tenants], kt: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="keyturn")
    acme = tenants(1, "mailu-token")
    double = acme.doubles["t00"]
    texts = [repr(acme.rotate("t00")), repr(acme.rotate("t00"))]
    double.faults[("POST", "/api/v1/token")] = 503
    texts.append(repr(acme.rotate("t00")))
    double.faults.clear()
    texts.append(kt.cli("resume", "--now", env=acme.env).err)
    texts.append(kt.cli("rotate", "t00/smtp-admin", "--reason", "x", env={}).err)  # no token env
    written = everything_written(kt, acme, caplog) + "\n".join(texts)
    assert_no_value_leaks(written, acme, [])
