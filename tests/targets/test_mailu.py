"""The mailu and mailu-token targets against a double of MailU's admin application.

MailU needs Docker, which the tests cannot run: tests.support.mailu_double follows MailU
2024.06.57's code point by point (routes, bodies, validation, API token check, SQLite ids,
password schemes, the rate limiter and its exemption, the SMTP front's answers); its docstring
says what it leaves out. The hashes in data/mailu_hashes.json were made by MailU's own pins
(passlib 1.7.4, bcrypt 4.1.3) with MailU's CryptContext, which also recorded whether MailU
accepts the password for each.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from passlib.hash import md5_crypt

from keyturn.domain.errors import (
    LiteralSecret,
    TargetRateLimited,
    TargetRejected,
    TargetUnreachable,
)
from keyturn.domain.model import Secret
from keyturn.targets.base import Account, Target
from keyturn.targets.mailu import MailuTarget, MailuTokenTarget
from keyturn.targets.mailu_api import answer_error
from tests.servers import unused_port
from tests.support.mailu_double import MailuDouble
from tests.targets.conftest import Refs, new_password

USER = "admin@acme.example"
HASHES = json.loads((Path(__file__).parent / "data" / "mailu_hashes.json").read_text())
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def mailu() -> Iterator[MailuDouble]:
    double = MailuDouble().start(smtp=True)
    yield double
    double.stop()


def plugin(
    double: MailuDouble, refs: Refs, cls: type[Target] = MailuTarget, **extra: object
) -> Any:
    token = double.api_token if double.api_token is not None else "unset"
    settings: dict[str, object] = {"url": double.url, "api_token": refs.add(token or "empty")}
    return cls.from_settings({**settings, **extra}, refs.context())


def smtp(double: MailuDouble) -> dict[str, object]:
    return {"smtp_host": "127.0.0.1", "smtp_port": double.smtp_port, "smtp_tls": "none"}


def others_fail_api_logins(double: MailuDouble, ip: str = "127.0.0.9", count: int = 5) -> None:
    """Someone else in keyturn's /24 (MailU reads X-Real-IP) sends wrong API tokens."""
    for _ in range(count):
        httpx.get(
            f"{double.url}/api/v1/user/{USER}",
            headers={"Authorization": "Bearer wrong-token", "X-Real-IP": ip},
        )


# -- mailu: the password (single) --------------------------------------------------------------


def test_single_patches_raw_password_and_the_old_one_stops_working(
    mailu: MailuDouble, refs: Refs
) -> None:
    old, new = new_password(), new_password()
    mailu.add_user(USER, old)
    target, acct = plugin(mailu, refs, **smtp(mailu)), Account(USER)
    assert mailu.stored_hash(USER).startswith("$bcrypt-sha256$v=2,t=2b,r=4$")  # MailU's default
    assert target.test(acct, Secret(old))

    target.set(acct, Secret(new), Secret(old))
    target.set(acct, Secret(new), Secret(old))  # replayed: MailU already holds it
    patches = [r for r in mailu.requests if r.method == "PATCH"]
    assert [r.path for r in patches] == ["/api/v1/user/admin@acme.example"]
    assert mailu.accepts(USER, new) and not mailu.accepts(USER, old)
    assert target.test(acct, Secret(new))
    assert not target.test(acct, Secret(old))
    # The refusal came from the API's hash: no failed SMTP login was spent on it.
    assert mailu.failed_logins == 0 and len(mailu.logins) == 2
    target.revoke(acct, Secret(old))  # nothing to do, and harmless
    assert target.test(acct, Secret(new))


@pytest.mark.parametrize("case", HASHES["cases"], ids=[c["scheme"] for c in HASHES["cases"]])
def test_every_scheme_mailu_writes_is_checked_as_mailu_checks_it(
    mailu: MailuDouble, refs: Refs, case: dict[str, Any]
) -> None:
    """No SMTP: the answer comes from the hash alone, and agrees with MailU's own context."""
    password = case.get("password", HASHES["password"])
    mailu.add_user(USER, stored=case["hash"])
    target, acct = plugin(mailu, refs), Account(USER)
    assert target.test(acct, Secret(password)) is case["mailu_accepts"]
    assert mailu.accepts(USER, password) is case["mailu_accepts"]  # the double agrees
    assert target.test(acct, Secret(password + "x")) is False
    new = new_password()
    target.set(acct, Secret(new), Secret(password))
    assert mailu.stored_hash(USER).startswith("$bcrypt-sha256$")
    assert target.test(acct, Secret(new)) and not target.test(acct, Secret(password))


@pytest.mark.parametrize(
    "stored", ["{PLAIN}kt-old-password", "{ARGON2}$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA"]
)
def test_a_hash_mailu_itself_refuses_is_said_and_can_still_be_replaced(
    mailu: MailuDouble, refs: Refs, stored: str
) -> None:
    mailu.add_user(USER, stored=stored)
    assert not mailu.accepts(USER, "kt-old-password")  # MailU 2024.06 refuses it at login
    target, acct = plugin(mailu, refs), Account(USER)
    with pytest.raises(TargetRejected, match="a form MailU itself refuses at login") as info:
        target.test(acct, Secret("kt-old-password"))
    label = stored.split("}")[0] + "}"
    assert "kt-old-password" not in str(info.value) and f"hash is {label}," in str(info.value)
    new = new_password()
    target.set(acct, Secret(new), None)  # set never needs to read the old hash
    assert target.test(acct, Secret(new))
    # With smtp_host the login decides: one attempt, refused.
    mailu.set_stored(USER, stored)
    assert plugin(mailu, refs, **smtp(mailu)).test(acct, Secret("kt-old-password")) is False
    assert mailu.failed_logins == 1


WITHOUT_BCRYPT = """
import sys
sys.modules["bcrypt"] = None  # as if keyturn[mailu] were not installed
from keyturn.domain.errors import TargetRejected
from keyturn.domain.model import Secret
from keyturn.targets.base import Account, TargetContext
from keyturn.targets.mailu import MailuTarget

settings, password, new = {settings!r}, {password!r}, {new!r}
ctx = TargetContext(resolve=lambda ref: Secret({token!r}))
bare = MailuTarget.from_settings(settings, ctx)
try:
    bare.test(Account("admin@acme.example"), Secret(password))
except TargetRejected as exc:
    print("REJECTED", exc)
with_smtp = MailuTarget.from_settings({{**settings, **{smtp!r}}}, ctx)
print("SMTP", with_smtp.test(Account("admin@acme.example"), Secret(password)))
bare.set(Account("admin@acme.example"), Secret(new), None)
print("SET done")
"""


def test_without_bcrypt_the_hint_is_true_and_smtp_settles_it(
    mailu: MailuDouble, refs: Refs
) -> None:
    password, new = new_password(), new_password()
    mailu.add_user(USER, password)
    script = WITHOUT_BCRYPT.format(
        settings={"url": mailu.url, "api_token": "env:T"},
        password=password,
        new=new,
        token=mailu.api_token,
        smtp=smtp(mailu),
    )
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "REJECTED" in out and "pip install 'keyturn[mailu]'" in out and "smtp_host" in out
    assert "SMTP True" in out and "SET done" in out
    assert mailu.accepts(USER, new) and password not in out


# -- mailu-token: app tokens (dual) ------------------------------------------------------------


def test_tokens_dual_both_work_until_revoke(mailu: MailuDouble, refs: Refs) -> None:
    mailu.add_user(USER, new_password())
    phone_id, _ = mailu.issue_token(USER, comment="iphone")
    target = plugin(mailu, refs, MailuTokenTarget, **smtp(mailu))
    assert target.issues_secrets
    first = target.create(Account(USER))
    second = target.create(Account(USER))
    assert len(first.value.reveal()) == 32 and first.key_id != second.key_id
    comments = [t["comment"] for t in mailu.tokens(USER)]
    assert comments[0] == "iphone" and all(c.startswith("keyturn [kt:") for c in comments[1:])
    # Only keyturn's tokens are listed; the one someone made for a phone is not keyturn's.
    assert target.list_active(Account(USER)) == [first.key_id, second.key_id]
    for issued in (first, second):
        assert target.test(Account(USER, issued.key_id), issued.value)

    target.revoke(Account(USER, first.key_id), first.value)
    target.revoke(Account(USER, first.key_id), first.value)  # replay: already gone
    assert not target.test(Account(USER, first.key_id), first.value)
    assert not mailu.accepts(USER, first.value.reveal())
    assert target.test(Account(USER, second.key_id), second.value)
    assert mailu.token_ids(USER) == [str(phone_id), second.key_id.split(":")[0]]
    assert mailu.failed_logins == 0


def test_a_reused_token_id_is_never_taken_for_keyturns_token(
    mailu: MailuDouble, refs: Refs
) -> None:
    """MailU on SQLite gives a deleted token's id to the next token."""
    mailu.add_user(USER, new_password())
    target = plugin(mailu, refs, MailuTokenTarget, **smtp(mailu))
    mine = target.create(Account(USER))
    mine_id = int(mine.key_id.split(":")[0])
    mailu.delete_token(mine_id)  # deleted in MailU's UI, behind keyturn's back
    phone_id, phone = mailu.issue_token(USER, comment="iphone")
    assert phone_id == mine_id
    assert not target.test(Account(USER, mine.key_id), mine.value)  # no login tried either
    assert target.list_active(Account(USER)) == []
    target.revoke(Account(USER, mine.key_id), mine.value)
    assert mailu.accepts(USER, phone)  # the phone's token is untouched
    # keyturn's next token may get the same id again: the old key id still does not match it.
    mailu.delete_token(phone_id)
    again = target.create(Account(USER))
    assert again.key_id.split(":")[0] == str(mine_id) and again.key_id != mine.key_id
    target.revoke(Account(USER, mine.key_id), mine.value)
    assert target.test(Account(USER, again.key_id), again.value)
    assert mailu.failed_logins == 0


def test_tokens_keyturn_issued_before_nonces_are_still_its_own(
    mailu: MailuDouble, refs: Refs
) -> None:
    """Key ids were bare ids, and the comment exactly token_comment."""
    mailu.add_user(USER, new_password())
    old_id, old_value = mailu.issue_token(USER, comment="keyturn")
    mailu.issue_token(USER, comment="keyturn phone")  # not keyturn's
    target = plugin(mailu, refs, MailuTokenTarget, **smtp(mailu))
    assert target.list_active(Account(USER)) == [str(old_id)]
    assert target.test(Account(USER, str(old_id)), Secret(old_value))
    target.revoke(Account(USER, str(old_id)), Secret(old_value))
    assert [t["comment"] for t in mailu.tokens(USER)] == ["keyturn phone"]


def test_a_mixed_case_username_gets_a_token_that_works(mailu: MailuDouble, refs: Refs) -> None:
    """MailU finds users whatever the case but stores a token's owner as sent."""
    mailu.add_user(USER, new_password())
    target = plugin(mailu, refs, MailuTokenTarget, **smtp(mailu))
    acct = Account("Admin@ACME.example")
    issued = target.create(acct)
    assert [t["email"] for t in mailu.tokens(USER)] == [USER]
    assert target.list_active(acct) == [issued.key_id]
    assert target.test(Account(acct.username, issued.key_id), issued.value)
    assert mailu.accepts(USER, issued.value.reveal())


def test_a_token_is_never_tried_from_outside_its_authorized_ips(
    mailu: MailuDouble, refs: Refs
) -> None:
    mailu.add_user(USER, new_password())
    target = plugin(mailu, refs, MailuTokenTarget, token_ips=["203.0.113.0/24"], **smtp(mailu))
    issued = target.create(Account(USER))
    with pytest.raises(TargetRejected, match=r"does not include 127\.0\.0\.1.*badip"):
        target.test(Account(USER, issued.key_id), issued.value)
    assert mailu.logins == []  # no AUTH was made, so nothing was counted
    # Behind NAT MailU sees another address: source_address says which.
    mailu.smtp_client_ip = "203.0.113.7"
    nat = plugin(mailu, refs, MailuTokenTarget, source_address="203.0.113.7", **smtp(mailu))
    assert nat.test(Account(USER, issued.key_id), issued.value)
    assert [login.result for login in mailu.logins] == ["token"]


# -- MailU's answers: each maps to its cause ---------------------------------------------------


@pytest.mark.parametrize(
    ("setup", "error", "fragment"),
    [
        ({"api_token": ""}, TargetRejected, "API_TOKEN is empty in mailu.env"),
        ({"api_token": None}, TargetUnreachable, "API_TOKEN is unset"),
        ({"wrong_token": True}, TargetRejected, r"refused the API token \(403\)"),
        ({"api_path": "/api/v2"}, TargetRejected, "no such API route"),
        ({"api_off": True}, TargetRejected, "redirected to its login page.*API=true"),
        ({"user": "nobody@acme.example"}, TargetRejected, "User nobody@acme.example cannot be"),
        ({"user": "admin@localhost"}, TargetRejected, "not a valid email address"),
        ({"limited": True}, TargetRateLimited, r"rate-limited.*tries again in 1h"),
        ({"fault": 503}, TargetUnreachable, "HTTP 503"),
        ({"fault": 502}, TargetUnreachable, "HTTP 502"),
    ],
)
@pytest.mark.parametrize("verb", ["set", "test", "create", "list_active"])
def test_mailu_answers_name_their_cause(
    refs: Refs, setup: dict[str, Any], error: type[Exception], fragment: str, verb: str
) -> None:
    double = MailuDouble(api_token=setup.get("api_token", "t" * 32)).start()
    try:
        password, user = new_password(), setup.get("user", USER)
        double.add_user(USER, password)
        double.api_enabled = not setup.get("api_off", False)
        if setup.get("limited"):
            others_fail_api_logins(double)
        if "fault" in setup:
            double.faults[("*", "/api/v1/")] = setup["fault"]
        cls = MailuTarget if verb in ("set", "test") else MailuTokenTarget
        extra = {"api_path": setup["api_path"]} if "api_path" in setup else {}
        target = plugin(double, Refs(), cls, **extra)
        if setup.get("wrong_token"):
            target = cls.from_settings(
                {"url": double.url, "api_token": refs.add("not-the-token")}, refs.context()
            )
        calls = {
            "set": lambda: target.set(Account(user), Secret(password), None),
            "test": lambda: target.test(Account(user), Secret(password)),
            "create": lambda: target.create(Account(user)),
            "list_active": lambda: target.list_active(Account(user)),
        }
        with pytest.raises(error, match=fragment) as info:
            calls[verb]()
        url = double.url
    finally:
        double.stop()
    message = str(info.value)
    assert url in message and user in message
    assert password not in message and "t" * 32 not in message


@pytest.mark.parametrize(
    ("status", "body", "sent", "expected", "absent"),
    [
        (
            400,
            {
                "errors": {"comment": "None is not of type 'string'"},
                "message": "Input payload validation failed",
            },
            "",
            "field comment (from token_comment): None is not of type 'string'",
            "e-mail address",
        ),
        (
            400,
            {"code": 400, "message": "Provided AuthorizedIP not-an-ip in ['not-an-ip'] is invalid"},
            "",
            "MailU says: Provided AuthorizedIP not-an-ip",
            "e-mail address",
        ),
        (
            400,
            {
                "errors": {"raw_password": "'kt-sent-value' is not of type 'integer'"},
                "message": "x",
            },
            "kt-sent-value",
            "field raw_password (from the generated password): '**********' is not",
            "kt-sent-value",
        ),
        (
            400,
            {"errors": {"AuthorizedIP.0": "1 is not of type 'string'"}, "message": "x"},
            "",
            "field AuthorizedIP.0 (from token_ips)",
            "e-mail address",
        ),
        (415, {"message": "Did not attempt to load JSON data"}, "", "wants a JSON body", "e-mail"),
        (405, {"message": "The method is not allowed"}, "", "MailU 1.9 or later", "e-mail"),
    ],
)
def test_mailu_error_bodies_name_the_field_and_never_a_value(
    status: int, body: dict[str, Any], sent: str, expected: str, absent: str
) -> None:
    response = httpx.Response(status, json=body)
    error = answer_error("MailU x: PATCH user for u", response, (Secret(sent),), timedelta(hours=1))
    assert isinstance(error, TargetRejected)
    assert expected in error.message and absent not in error.message


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


def test_a_disabled_user_is_an_error_not_a_refusal(mailu: MailuDouble, refs: Refs) -> None:
    password = new_password()
    mailu.add_user(USER, password, enabled=False)
    with pytest.raises(TargetRejected, match=r"disabled \(enabled=false\)"):
        plugin(mailu, refs, **smtp(mailu)).test(Account(USER), Secret(password))
    assert mailu.logins == []


# -- the failed-login budget and MailU's rate limit --------------------------------------------


def test_one_failing_smtp_login_per_target_object(mailu: MailuDouble, refs: Refs) -> None:
    """AUTH_REQUIRE_TOKENS: MailU's hash matches the password but SMTP refuses it."""
    password = new_password()
    mailu.add_user(USER, password)
    mailu.require_tokens = True
    target = plugin(mailu, refs, **smtp(mailu))
    assert target.test(Account(USER), Secret(password)) is False
    # After one failure in this attempt, the hash answers alone: no second AUTH.
    assert target.test(Account(USER), Secret(password)) is True
    mailu.set_stored(USER, "{PLAIN}" + password)  # a hash keyturn cannot read
    with pytest.raises(TargetUnreachable, match="already made one failed login in this attempt"):
        target.test(Account(USER), Secret(password))
    assert mailu.failed_logins == 1
    target.close()  # the next attempt opens a fresh one
    assert target.test(Account(USER), Secret(password)) is False
    assert mailu.failed_logins == 2


def test_a_429_stops_the_attempt_and_says_how_long(mailu: MailuDouble, refs: Refs) -> None:
    mailu.add_user(USER, new_password())
    others_fail_api_logins(mailu)  # MailU counts keyturn's whole /24
    target = plugin(mailu, refs, ratelimit_window="90m")
    with pytest.raises(
        TargetRateLimited, match=r"tries again in 1h30m, at \d{4}-\d\d-\d\d"
    ) as info:
        target.test(Account(USER), Secret("x"))
    assert info.value.retry_after == timedelta(minutes=90)
    sent = len(mailu.requests)
    with pytest.raises(TargetRateLimited, match="not sent"):
        target.set(Account(USER), Secret("y"), None)
    assert len(mailu.requests) == sent  # nothing more reached MailU in this attempt
    # The window passes (MailU's moving window of an hour): MailU answers again.
    mailu.advance(timedelta(hours=1, minutes=1))
    assert plugin(mailu, refs).test(Account(USER), Secret("x")) is False


def test_a_successful_login_exempts_keyturns_address_for_24h(
    mailu: MailuDouble, refs: Refs
) -> None:
    password = new_password()
    mailu.add_user(USER, password)
    assert plugin(mailu, refs, **smtp(mailu)).test(Account(USER), Secret(password))
    others_fail_api_logins(mailu, ip="127.0.0.1", count=7)  # keyturn's own address is exempt
    assert plugin(mailu, refs).test(Account(USER), Secret(password))
    others_fail_api_logins(mailu, ip="127.0.0.9")  # its neighbours are not
    httpx.get(f"{mailu.url}/api/v1/user/{USER}", headers={"X-Real-IP": "127.0.0.9"})
    assert mailu.requests[-1].status == 429
    mailu.advance(timedelta(hours=24, minutes=1))  # the exemption ends, and the window
    others_fail_api_logins(mailu, ip="127.0.0.9")
    with pytest.raises(TargetRateLimited):
        plugin(mailu, refs).test(Account(USER), Secret(password))


def test_an_smtp_451_is_mailus_rate_limit(mailu: MailuDouble, refs: Refs) -> None:
    password = new_password()
    mailu.add_user(USER, password)
    mailu.smtp_client_ip = "10.9.9.9"  # the front sees keyturn's logins from there
    for i in range(5):
        mailu.limiter.limit_ip("10.9.9.1", f"nobody{i}@acme.example")
    target = plugin(mailu, refs, **smtp(mailu))
    with pytest.raises(TargetRateLimited, match="SMTP 451") as info:
        target.test(Account(USER), Secret(password))
    assert info.value.retry_after == timedelta(hours=1)
    assert [login.result for login in mailu.logins] == ["ratelimit"]


# -- settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "error", "fragment"),
    [
        ({"url": "http://mail.acme.example"}, ValueError, "plain http"),
        ({"url": "mail.acme.example"}, ValueError, "https://"),
        ({"api_token": "0123456789abcdef0123456789abcdef"}, LiteralSecret, "reference"),
        ({"smtp_host": "mail.acme.example", "smtp_tls": "none"}, ValueError, "only on loopback"),
        ({"token_ips": ["not-an-ip"]}, ValueError, "'not-an-ip' is not an IP address"),
        ({"token_ips": ["10.0.0.0/8", "10.1.2.3/33"]}, ValueError, "10.1.2.3/33"),
        ({"token_comment": " "}, ValueError, "must not be empty"),
        ({"ratelimit_window": "an hour"}, ValueError, "invalid ratelimit_window"),
        ({"source_address": "nat-gateway"}, ValueError, "not an IP address"),
    ],
)
def test_settings_are_validated(
    settings: dict[str, str], error: type[Exception], fragment: str
) -> None:
    base = {"url": "https://mail.acme.example", "api_token": "env:ACME_MAILU_TOKEN"}
    with pytest.raises(error, match=fragment):
        MailuTarget.config_model.model_validate({**base, **settings})


def test_plugins_are_registered() -> None:
    from keyturn import plugins

    assert plugins.load("target", "mailu") is MailuTarget
    assert plugins.load("target", "mailu-token") is MailuTokenTarget
    assert MailuTarget.strategies == ("single",) and MailuTokenTarget.strategies == ("dual",)
    assert not MailuTarget.issues_secrets and MailuTokenTarget.issues_secrets


def test_the_mailu_extra_brings_bcrypt() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert any(dep.startswith("bcrypt") for dep in extras["mailu"])
    assert "mailu" in extras["all"][0]


@pytest.mark.parametrize("page", ["mailu.md", "postfix-dovecot.md"])
def test_the_docs_examples_are_valid_inventories(page: str) -> None:
    import re

    from keyturn import plugins
    from keyturn.inventory.spec import parse

    text = (ROOT / "docs" / "targets" / page).read_text()
    blocks = re.findall(r"```toml\n(.*?)```", text, re.S)
    assert blocks
    for block in blocks:
        inv = parse(block, page)
        for spec in inv.targets.values():
            plugins.load("target", spec.type).config_model.model_validate(spec.settings())


# -- the double itself: what it was checked to do like MailU 2024.06.57 ------------------------


def test_the_double_answers_as_mailu_does(mailu: MailuDouble) -> None:
    mailu.add_user(USER, "kt-some-password")
    auth = {"Authorization": f"Bearer {mailu.api_token}"}
    api = httpx.Client(base_url=f"{mailu.url}/api/v1", headers=auth)
    user = api.get("/user/ADMIN@Acme.Example").json()
    assert len(user) == 23 and user["email"] == USER and user["enabled"] is True
    assert (
        api.request("PATCH", f"/user/{USER}", content=b'{"raw_password": "x"}').status_code == 415
    )
    assert api.put(f"/user/{USER}", json={}).status_code == 405
    missing = api.get("/domain")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/html")
    assert "<title>Mailu API</title>" in api.get("/").text
    made = api.post("/token", json={"email": USER, "comment": "a"}).json()
    assert isinstance(made["id"], int) and len(made["token"]) == 32
    assert api.get("/token").json()[0]["id"] == str(made["id"])
    assert api.get(f"/tokenuser/{USER}").json()[0]["Last edit"] == "None"
    api.delete(f"/token/{made['id']}")
    assert api.post("/token", json={"email": USER}).json()["id"] == made["id"]  # SQLite
    bad = api.post("/token", json={"email": USER, "comment": None})
    assert bad.status_code == 400 and bad.json()["errors"] == {
        "comment": "None is not of type 'string'"
    }
    md5 = "{MD5-CRYPT}" + md5_crypt.hash("kt-legacy-1")
    mailu.set_stored(USER, md5)
    assert mailu.accepts(USER, "kt-legacy-1")
