"""The mailu and mailu-token targets against a double of MailU's admin API.

MailU needs Docker, which the tests cannot run: tests.support.mailu_double is a small HTTP
server that follows MailU's published API (paths, Bearer auth, bodies, status codes) over a real
Dovecot passwd-file, plus an SMTP listener that accepts the password or any app token.
"""

from __future__ import annotations

import json
import logging
import signal
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from keyturn.db import repo
from keyturn.db.models import Rotation, Tenant, utcnow
from keyturn.domain.errors import LiteralSecret, TargetRejected, TargetUnreachable
from keyturn.domain.model import Secret
from keyturn.targets.base import Account, Target
from keyturn.targets.mailu import MailuTarget, MailuTokenTarget
from tests.servers import unused_port
from tests.support.keyturn import Harness
from tests.support.mailu_double import MailuDouble
from tests.targets.conftest import Refs, new_password

USER = "admin@acme.example"
WORKER = {"KEYTURN_WORKER_ID": "worker-1"}


@pytest.fixture
def mailu(tmp_path: Path) -> Iterator[MailuDouble]:
    double = MailuDouble(tmp_path / "mailu.passwd").start(smtp=True)
    yield double
    double.stop()


def plugin(
    double: MailuDouble, refs: Refs, cls: type[Target] = MailuTarget, **extra: object
) -> Target:
    settings: dict[str, object] = {"url": double.url, "api_token": refs.add(double.api_token)}
    return cls.from_settings({**settings, **extra}, refs.context())


def smtp(double: MailuDouble) -> dict[str, object]:
    return {"smtp_host": "127.0.0.1", "smtp_port": double.smtp_port, "smtp_tls": "none"}


# -- mailu: the password (single) --------------------------------------------------------------


def test_single_patches_raw_password_and_the_old_one_stops_working(
    mailu: MailuDouble, refs: Refs
) -> None:
    old, new = new_password(), new_password()
    mailu.add_user(USER, old)
    target, acct = plugin(mailu, refs, **smtp(mailu)), Account(USER)
    assert target.test(acct, Secret(old))

    target.set(acct, Secret(new), Secret(old))
    target.set(acct, Secret(new), Secret(old))  # replayed: MailU already holds it
    patches = [r for r in mailu.requests if r.method == "PATCH"]
    assert [r.path for r in patches] == ["/api/v1/user/admin%40acme.example"]
    assert mailu.accepts(USER, new) and not mailu.accepts(USER, old)
    assert target.test(acct, Secret(new))
    assert not target.test(acct, Secret(old))
    # The refusal came from the API's hash: no failed SMTP login was spent on it.
    assert mailu.failed_logins == 0
    target.revoke(acct, Secret(old))  # nothing to do, and harmless
    assert target.test(acct, Secret(new))


def test_single_without_smtp_checks_the_hash_mailu_reports(mailu: MailuDouble, refs: Refs) -> None:
    value = new_password()
    mailu.add_user(USER, value)
    target = plugin(mailu, refs)
    assert target.test(Account(USER), Secret(value))
    assert not target.test(Account(USER), Secret(new_password()))
    assert all(r.path.startswith("/api/v1/user/") for r in mailu.requests)


def test_smtp_refusal_costs_exactly_one_failed_login(mailu: MailuDouble, refs: Refs) -> None:
    """The API says yes but SMTP says no (e.g. the account is locked for SMTP): one AUTH."""
    value = new_password()
    mailu.add_user(USER, value)
    target = plugin(mailu, refs, **smtp(mailu))
    assert isinstance(target, MailuTarget)
    endpoint = target.config.smtp()
    assert endpoint is not None
    assert endpoint.login(USER, Secret("wrong-" + value)) is False
    assert mailu.failed_logins == 1


# -- mailu-token: app tokens (dual) ------------------------------------------------------------


def test_tokens_dual_both_work_until_revoke(mailu: MailuDouble, refs: Refs) -> None:
    mailu.add_user(USER, new_password())
    mailu.handle(
        "POST", "/api/v1/token", f"Bearer {mailu.api_token}", {"email": USER, "comment": "iphone"}
    )
    target = plugin(mailu, refs, MailuTokenTarget, **smtp(mailu))
    assert target.issues_secrets
    first = target.create(Account(USER))
    second = target.create(Account(USER))
    assert len(first.value.reveal()) == 32 and first.key_id != second.key_id
    # Only keyturn's tokens are listed; the one someone made for a phone is not keyturn's.
    assert target.list_active(Account(USER)) == [first.key_id, second.key_id]
    for issued in (first, second):
        assert target.test(Account(USER, issued.key_id), issued.value)

    target.revoke(Account(USER, first.key_id), first.value)
    target.revoke(Account(USER, first.key_id), first.value)  # replay: already gone
    assert not target.test(Account(USER, first.key_id), first.value)
    assert not mailu.accepts(USER, first.value.reveal())
    assert target.test(Account(USER, second.key_id), second.value)
    assert len(mailu.token_ids(USER)) == 2  # the phone's token and the new one
    assert mailu.failed_logins == 0
    assert ("DELETE", f"/api/v1/token/{first.key_id}") in [
        (r.method, r.path) for r in mailu.requests
    ]


def test_token_without_id_is_explained(mailu: MailuDouble, refs: Refs) -> None:
    target = plugin(mailu, refs, MailuTokenTarget)
    with pytest.raises(TargetRejected, match="start without initial_secret"):
        target.revoke(Account(USER), Secret("x"))


# -- errors: every MailU status maps to a keyturn error that names the tenant and the user ----


@pytest.mark.parametrize(
    ("status", "error", "hint"),
    [
        (400, TargetRejected, "full e-mail address"),
        (401, TargetRejected, "Authorization header"),
        (403, TargetRejected, "API_TOKEN"),
        (404, TargetRejected, "does not exist"),
        (409, TargetRejected, "conflict"),
        (429, TargetUnreachable, "rate-limited"),
        (500, TargetUnreachable, "HTTP 500"),
        (502, TargetUnreachable, "HTTP 502"),
        (503, TargetUnreachable, "HTTP 503"),
        (302, TargetRejected, "redirected"),
        (418, TargetRejected, "HTTP 418"),
    ],
)
@pytest.mark.parametrize("verb", ["set", "test", "create", "list_active"])
def test_status_table(
    mailu: MailuDouble, refs: Refs, status: int, error: type[Exception], hint: str, verb: str
) -> None:
    value = new_password()
    mailu.add_user(USER, value)
    mailu.faults[("*", "/api/v1/")] = status
    cls = MailuTarget if verb in ("set", "test") else MailuTokenTarget
    target = plugin(mailu, refs, cls)
    calls = {
        "set": lambda: target.set(Account(USER), Secret(value), None),
        "test": lambda: target.test(Account(USER), Secret(value)),
        "create": lambda: target.create(Account(USER)),
        "list_active": lambda: target.list_active(Account(USER)),
    }
    with pytest.raises(error) as info:
        calls[verb]()
    message = str(info.value)
    assert hint in message and mailu.url in message and USER in message
    assert value not in message and mailu.api_token not in message


def test_a_wrong_api_token_is_a_403_that_says_what_to_fix(mailu: MailuDouble, refs: Refs) -> None:
    target = MailuTarget.from_settings(
        {"url": mailu.url, "api_token": refs.add("not-the-token")}, refs.context()
    )
    with pytest.raises(TargetRejected, match=r"refused the API token \(403\)"):
        target.test(Account(USER), Secret("x"))
    assert mailu.strikes == 1


def test_unknown_user_and_unreachable_server(mailu: MailuDouble, refs: Refs) -> None:
    with pytest.raises(TargetRejected, match="404"):
        plugin(mailu, refs).set(Account("nobody@acme.example"), Secret("x"), None)
    with pytest.raises(TargetRejected, match="not an e-mail address"):
        plugin(mailu, refs).set(Account("admin"), Secret("x"), None)
    port = unused_port()
    down = MailuTarget.from_settings(
        {"url": f"http://127.0.0.1:{port}", "api_token": refs.add("t" * 32)}, refs.context()
    )
    with pytest.raises(TargetUnreachable, match=f"127.0.0.1:{port}.*cannot connect"):
        down.test(Account(USER), Secret("x"))


@pytest.mark.parametrize(
    ("settings", "error", "fragment"),
    [
        ({"url": "http://mail.acme.example"}, ValueError, "plain http"),
        ({"url": "mail.acme.example"}, ValueError, "https://"),
        ({"api_token": "0123456789abcdef0123456789abcdef"}, LiteralSecret, "reference"),
        ({"smtp_host": "mail.acme.example", "smtp_tls": "none"}, ValueError, "only on loopback"),
    ],
)
def test_settings_are_validated(
    settings: dict[str, str], error: type[Exception], fragment: str
) -> None:
    base = {"url": "https://mail.acme.example", "api_token": "env:ACME_MAILU_TOKEN"}
    with pytest.raises(error, match=fragment):
        MailuTarget.config_model.model_validate({**base, **settings})


# -- end to end through keyturn ----------------------------------------------------------------


def inventory(
    tenants: dict[str, MailuDouble], plugin_type: str = "mailu", grace: str = "0s"
) -> str:
    strategy = "dual" if plugin_type == "mailu-token" else "single"
    parts = [f'[policies.smtp]\nmax_age = "180d"\ngrace = "{grace}"\n']
    for tenant, double in tenants.items():
        initial = "" if strategy == "dual" else f'initial_secret = "env:{tenant.upper()}_INITIAL"'
        parts.append(
            f"""
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
    """N tenants, each with its own MailU double (own port, API token and passwd-file)."""

    def __init__(self, kt: Harness, count: int, plugin_type: str = "mailu", grace: str = "0s"):
        self.kt = kt
        self.doubles = {
            f"t{i:02d}": MailuDouble(kt.home / f"t{i:02d}.passwd").start(smtp=True)
            for i in range(count)
        }
        self.initial = {t: new_password() for t in self.doubles}
        self.env: dict[str, str] = {}
        for tenant, double in self.doubles.items():
            double.add_user(f"admin@{tenant}.example", self.initial[tenant])
            self.env[f"{tenant.upper()}_MAILU_TOKEN"] = double.api_token
            self.env[f"{tenant.upper()}_INITIAL"] = self.initial[tenant]
        kt.write("keyturn.toml", inventory(self.doubles, plugin_type, grace))
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

    def stop(self) -> None:
        for double in self.doubles.values():
            double.stop()


@pytest.fixture
def tenants(kt: Harness) -> Iterator[type[Tenants]]:
    made: list[Tenants] = []

    class Make(Tenants):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(kt, *args, **kwargs)  # type: ignore[arg-type]
            made.append(self)

    yield Make  # type: ignore[misc]
    for t in made:
        t.stop()


def test_single_end_to_end(tenants: type[Tenants], kt: Harness) -> None:
    acme = tenants(1)  # type: ignore[call-arg]
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
    assert double.failed_logins == 0


def test_dual_tokens_end_to_end(tenants: type[Tenants], kt: Harness) -> None:
    acme = tenants(1, "mailu-token", "7d")  # type: ignore[call-arg]
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
    assert double.token_ids(user) == [v2[2]]
    assert double.accepts(user, acme.initial["t00"])  # tokens never touch the password
    assert double.failed_logins == 0


def test_crash_after_issuing_leaves_an_orphan_the_next_run_removes(
    tenants: type[Tenants], kt: Harness
) -> None:
    acme = tenants(1, "mailu-token")  # type: ignore[call-arg]
    double, user = acme.doubles["t00"], "admin@t00.example"
    assert acme.rotate("t00")["status"] == "done"
    (kept,) = double.token_ids(user)
    crashed = kt.spawn(
        "rotate",
        "t00/smtp-admin",
        "--reason",
        "crash test",
        env={**acme.env, **WORKER, "KEYTURN_TEST_CRASH_AT": "create:issued"},
    )
    assert crashed.code == -signal.SIGKILL, crashed.err
    orphans = [i for i in double.token_ids(user) if i != kept]
    assert len(orphans) == 1  # MailU issued it; keyturn never stored it
    # The restarted worker (same id, so it takes its own lease back at once).
    resumed = kt.cli("resume", "--now", env={**acme.env, **WORKER})
    assert resumed.code == 0, resumed.err
    numbers = {v[0]: v for v in acme.versions("t00")}
    current = next(v for v in numbers.values() if v[1] == "current")
    assert orphans[0] not in double.token_ids(user)  # reconciled away
    assert double.token_ids(user) == [current[2]]  # grace 0s: the old one is revoked too
    assert double.accepts(user, current[4])
    with kt.app.db.read() as session:
        from keyturn.audit import log as audit

        removed = [e for e in audit.iter_entries(session) if e.action == "rotation.orphan-removed"]
    assert [e.details["key_id"] for e in removed] == orphans


def test_ten_tenants_in_one_pass_each_on_its_own_endpoint_and_key(
    tenants: type[Tenants], kt: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    many = tenants(10)  # type: ignore[call-arg]
    listed = kt.cli("list", "--tenant", "t03", "--json")
    assert listed.code == 0 and "t03/smtp-admin" in listed.out and "t04/" not in listed.out
    for tenant in many.doubles:
        out = many.rotate(tenant)
        assert out["status"] == "done", (tenant, out)
    with kt.app.db.read() as session:
        tenant_keys = {t.id: t.data_key_id for t in session.execute(select(Tenant)).scalars()}
    seen_keys = set()
    for tenant, double in many.doubles.items():
        new = many.current(tenant)
        user = f"admin@{tenant}.example"
        assert double.accepts(user, new) and not double.accepts(user, many.initial[tenant])
        # Only this tenant's MailU heard of this tenant's credential.
        for other, other_double in many.doubles.items():
            if other != tenant:
                assert not other_double.accepts(user, new)
        keys = {v[3] for v in many.versions(tenant)}
        assert keys == {tenant_keys[tenant]}
        seen_keys |= keys
    assert len(seen_keys) == 10
    _assert_no_value_leaks(kt, many, caplog, [d.api_token for d in many.doubles.values()])


def test_no_secret_in_logs_errors_or_audit(
    tenants: type[Tenants], kt: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    acme = tenants(1, "mailu-token")  # type: ignore[call-arg]
    double = acme.doubles["t00"]
    texts = [repr(acme.rotate("t00")), repr(acme.rotate("t00"))]
    double.faults[("POST", "/api/v1/token")] = 503
    texts.append(repr(acme.rotate("t00")))
    double.faults.clear()
    texts.append(kt.cli("resume", "--now", env=acme.env).err)
    texts.append(kt.cli("rotate", "t00/smtp-admin", "--reason", "x", env={}).err)  # no token env
    _assert_no_value_leaks(kt, acme, caplog, [double.api_token], texts)


def _assert_no_value_leaks(
    kt: Harness,
    tenants: Tenants,
    caplog: pytest.LogCaptureFixture,
    extra_values: list[str],
    texts: list[str] | None = None,
) -> None:
    texts = list(texts or [])
    for args in (["audit", "export"], ["list", "--json"], ["verify", "--json"]):
        result = kt.cli(*args, env=tenants.env)
        texts += [result.out, result.err]
    for tenant in tenants.doubles:
        result = kt.cli("show", f"{tenant}/smtp-admin", "--json")
        texts += [result.out, result.err]
    with kt.app.db.read() as session:
        texts += [f"{r.error} {r.reason}" for r in session.execute(select(Rotation)).scalars()]
    texts += [r.getMessage() for r in caplog.records]
    everything = "\n".join(texts)
    values = [v[4] for t in tenants.doubles for v in tenants.versions(t)]
    values += list(tenants.initial.values()) + extra_values
    assert len(values) >= 2
    for value in values:
        assert value not in everything


def test_plugins_are_registered_and_open_through_the_runtime(
    kt: Harness, mailu: MailuDouble
) -> None:
    from keyturn import plugins

    assert plugins.load("target", "mailu") is MailuTarget
    assert plugins.load("target", "mailu-token") is MailuTokenTarget
    assert MailuTarget.strategies == ("single",) and MailuTokenTarget.strategies == ("dual",)
    assert not MailuTarget.issues_secrets and MailuTokenTarget.issues_secrets
    kt.write(
        "bad.toml",
        f'[targets.m]\ntype = "mailu"\nurl = "{mailu.url}"\napi_token = "env:T"\n'
        '[[credentials]]\nid = "acme/smtp-admin"\ntarget = "m"\nstrategy = "dual"\n'
        'username = "admin@acme.example"\n',
    )
    result = kt.cli("apply", "bad.toml")
    assert result.code != 0 and "dual" in result.err


@pytest.mark.parametrize("page", ["mailu.md", "postfix-dovecot.md"])
def test_the_docs_examples_are_valid_inventories(page: str) -> None:
    import re

    from keyturn import plugins
    from keyturn.inventory.spec import parse

    text = (Path(__file__).resolve().parents[2] / "docs" / "targets" / page).read_text()
    blocks = re.findall(r"```toml\n(.*?)```", text, re.S)
    assert blocks
    for block in blocks:
        inv = parse(block, page)
        for spec in inv.targets.values():
            plugins.load("target", spec.type).config_model.model_validate(spec.settings())
