"""http-api-key against a double of a key-issuing SaaS API (``tests/support/keyapi_double.py``:
two active keys at most, a rate limit, errors for revoked keys; no real provider can be reached
from the tests). Keys are checked with a fresh request to the double, not through the plugin.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

from keyturn.domain.errors import ConfigInvalid, LiteralSecret, TargetRejected, TargetUnreachable
from keyturn.domain.model import Secret
from keyturn.inventory.spec import parse
from keyturn.targets.base import Account
from keyturn.targets.http_api_key import HttpApiKeyTarget
from tests.support.keyapi_double import KeyApi
from tests.support.keyturn import Harness
from tests.targets.conftest import Refs
from tests.targets.engine_support import run_killed
from tests.targets.provider_support import CRASH_POINTS, ProviderRig, written_texts

USER = "billing"


def settings(api: KeyApi) -> dict[str, Any]:
    """The doc page's profile for this API (docs/targets/http-api-key.md)."""
    return {
        "base_url": api.url,
        "max_active": 2,
        "secrets": {"admin": "env:KT_KEYAPI_ADMIN"},
        "headers": {"Authorization": "Bearer ${secrets.admin}"},
        "create": {
            "method": "POST",
            "url": "/v1/keys",
            "body": {"name": "keyturn ${username}"},
            "key": "$.key",
            "id": "$.id",
        },
        "validate": {"url": "/v1/whoami", "headers": {"Authorization": "Bearer ${key}"}},
        "list": {
            "url": "/v1/keys",
            "ids": "$.data[?(@.status == 'active' & @.name == 'keyturn ${username}')].id",
        },
        "revoke": {"method": "DELETE", "url": "/v1/keys/${key_id}"},
    }


@pytest.fixture
def api() -> Iterator[KeyApi]:
    double = KeyApi().serve()
    yield double
    double.close()


def plugin(api: KeyApi, refs: Refs, **changes: Any) -> HttpApiKeyTarget:
    refs.add(api.admin_token, "env:KT_KEYAPI_ADMIN")
    target = HttpApiKeyTarget.from_settings({**settings(api), **changes}, refs.context())
    assert isinstance(target, HttpApiKeyTarget)
    target.sleep = lambda seconds: None  # the double's Retry-After is honoured, not slept
    return target


def test_create_validate_list_revoke(api: KeyApi, refs: Refs) -> None:
    target = plugin(api, refs)
    first = target.create(Account(USER))
    assert api.accepts(first.value.reveal())
    assert target.test(Account(USER, first.key_id), first.value)
    second = target.create(Account(USER))
    assert set(target.list_active(Account(USER))) == {first.key_id, second.key_id}
    with pytest.raises(TargetRejected, match="already holds 2 keys"):
        target.create(Account(USER))  # max_active, before the API has to refuse it
    target.revoke(Account(USER, first.key_id), first.value)
    target.revoke(Account(USER, first.key_id), first.value)  # 404 now: already gone
    assert not api.accepts(first.value.reveal())
    assert not target.test(Account(USER, first.key_id), first.value)  # 401 api_key_revoked
    assert target.list_active(Account(USER)) == [second.key_id]
    assert not target.test(Account(USER), Secret("sk_test_not-a-key"))


def test_the_api_refuses_a_third_key_itself(api: KeyApi, refs: Refs) -> None:
    blind = dict(settings(api))
    del blind["list"]  # no list request: keyturn cannot count, the API must refuse
    refs.add(api.admin_token, "env:KT_KEYAPI_ADMIN")
    target = HttpApiKeyTarget.from_settings(blind, refs.context())
    target.create(Account(USER))
    target.create(Account(USER))
    target.create(Account("someone"))  # another owner's keys do not count
    with pytest.raises(TargetRejected, match=r"create answered HTTP 409"):
        target.create(Account(USER))
    assert target.list_active(Account(USER)) == []  # and nothing to reconcile with


def test_rate_limits_are_waited_out_then_reported(api: KeyApi, refs: Refs) -> None:
    target = plugin(api, refs)
    waits: list[float] = []
    target.sleep = waits.append
    api.rate = 1  # one request a second: every burst is refused
    api._window[:] = [time.monotonic()] * 5
    with pytest.raises(TargetUnreachable, match="rate-limited"):
        target.list_active(Account(USER))
    assert waits == [1.0, 1.0, 1.0]
    api.rate = 1000
    api._window.clear()
    assert target.list_active(Account(USER)) == []


def test_errors_name_the_request_never_a_key(api: KeyApi, refs: Refs) -> None:
    target = plugin(api, refs)
    issued = target.create(Account(USER))
    refs.values["env:KT_KEYAPI_ADMIN"] = Secret("wrong-admin-token")
    target.close()
    with pytest.raises(TargetRejected) as caught:
        target.revoke(Account(USER, issued.key_id), issued.value)
    assert "revoke answered HTTP 403" in caught.value.message
    assert issued.value.reveal() not in caught.value.message
    assert "wrong-admin-token" not in caught.value.message


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"base_url": "http://api.example.com"}, "plain http"),
        ({"secrets": {"admin": "adm_literal_token_value_1234"}}, "reference"),
        ({"revoke": {"method": "DELETE", "url": "/v1/keys/${keyid}"}}, "unknown placeholder"),
        ({"create": {"method": "POST", "url": "/v1/keys", "key": "$.key"}}, "needs key and id"),
        ({"max_active": 1}, "two active keys"),
    ],
)
def test_settings_are_checked(api: KeyApi, refs: Refs, change: dict[str, Any], error: str) -> None:
    with pytest.raises((ValueError, ConfigInvalid, LiteralSecret)) as caught:
        plugin(api, refs, **change)
    text = getattr(caught.value, "message", str(caught.value))
    assert error in text or (error == "reference" and isinstance(caught.value, LiteralSecret))


def test_the_inventory_accepts_the_profile() -> None:
    inventory = parse(
        '[targets.saas]\ntype = "http-api-key"\nbase_url = "https://api.example.com"\n'
        'secrets = { admin = "env:SAAS_ADMIN" }\n'
        'headers = { Authorization = "Bearer ${secrets.admin}" }\n'
        '[targets.saas.create]\nmethod = "POST"\nurl = "/v1/keys"\nkey = "$.key"\nid = "$.id"\n'
        '[targets.saas.validate]\nurl = "/v1/whoami"\n'
        'headers = { Authorization = "Bearer ${key}" }\n'
        '[targets.saas.revoke]\nmethod = "DELETE"\nurl = "/v1/keys/${key_id}"\n'
    )
    spec = inventory.targets["saas"]
    HttpApiKeyTarget.config_model.model_validate(spec.settings())


# -- through keyturn ---------------------------------------------------------------------------


def _rig(kt: Harness, api: KeyApi, **kw: Any) -> ProviderRig:
    kt.env["KT_KEYAPI_ADMIN"] = api.admin_token
    return ProviderRig(kt, "http-api-key", settings(api), USER, **kw)


def test_rotations_move_consumers_then_revoke(kt: Harness, api: KeyApi) -> None:
    rig = _rig(kt, api, grace="1d", consumers=["billing-worker"])
    rig.apply()
    rig.rotate()
    first = rig.get()
    rig.rotate()
    assert rig.last_rotation()["status"] == "waiting"
    second = rig.get()
    assert api.accepts(first) and api.accepts(second)
    rig.report("billing-worker", rig.last_rotation()["new_version"])
    rig.resume()
    assert rig.last_rotation()["status"] == "done"
    assert not api.accepts(first) and api.accepts(second)
    assert api.active() == rig.key_ids("current")
    assert kt.cli("verify", rig.cred).code == 0


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_killed_at_every_step_then_resumed(kt: Harness, api: KeyApi, point: str) -> None:
    rig = _rig(kt, api)
    rig.apply()
    rig.rotate()
    old = rig.get()
    assert run_killed(kt, point, "rotate", rig.cred, "--reason", "crash", env={}) == -9
    assert 1 <= len(api.active()) <= 2
    rig.finish()
    new = rig.get()
    assert new != old and api.accepts(new) and not api.accepts(old)
    assert api.active() == rig.key_ids("current")  # none orphaned at the provider


def test_no_key_in_logs_audit_or_errors(
    kt: Harness, api: KeyApi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    rig = _rig(kt, api)
    rig.settings["max_retry_wait"] = 0  # a 429 fails the step at once
    rig.apply()
    outputs = [rig.rotate().out]
    values = [rig.get()]
    outputs.append(rig.rotate().out)
    values.append(rig.get())
    api.rate = 0  # every request now rate-limited: the next rotation fails and retries
    failed = kt.cli("rotate", rig.cred, "--reason", "x")
    outputs += [failed.out, failed.err, kt.cli("verify", rig.cred).err]
    texts = written_texts(kt, [*outputs, caplog.text])
    for value in [*values, api.admin_token]:
        assert value not in texts


def test_the_documented_profiles_are_valid_settings() -> None:
    """The SendGrid and Datadog profiles of docs/targets/http-api-key.md parse and pass the
    settings checks (they cannot run here: no real provider)."""
    import re
    from pathlib import Path

    page = (Path(__file__).parents[2] / "docs/targets/http-api-key.md").read_text()
    blocks = re.findall(r"<!-- doc-test: skip [^>]*-->\n```toml\n(.*?)```", page, re.S)
    assert len(blocks) == 2
    for block in blocks:
        (spec,) = parse(block).targets.values()
        config = HttpApiKeyTarget.config_model.model_validate(spec.settings())
        assert set(config.requests()) == {"create", "validate", "list", "revoke"}  # type: ignore[attr-defined]
