"""The conjur store against a double of Conjur's REST API (tests/stores/conjur_double.py says
what it follows): Conjur itself cannot run here."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from keyturn.domain.model import Secret
from keyturn.stores.base import Numbered, PublishView, StoreContext, StoreRefused
from keyturn.stores.conjur import TOKEN_SECONDS, ConjurStore
from tests.stores.conftest import Rig, written
from tests.stores.conjur_double import ConjurDouble
from tests.support.keyturn import Harness

LOGIN = "host/keyturn"


@pytest.fixture
def conjur() -> Iterator[ConjurDouble]:
    with ConjurDouble() as double:
        yield double


def store(conjur: ConjurDouble, api_key: str) -> ConjurStore:
    settings = {"url": conjur.url, "account": "myorg", "login": LOGIN, "api_key": "env:K"}
    context = StoreContext(resolve=lambda ref: Secret(api_key), name="conjur")
    return ConjurStore.from_settings(settings, context)  # type: ignore[return-value]


def view(number: int, value: str, previous: str | None = None) -> PublishView:
    prev = Numbered(number - 1, Secret(previous), "fp0") if previous else None
    return PublishView("acme/db", "acme", Numbered(number, Secret(value), "fp"), previous=prev)


def test_rotations_set_the_variable_and_read_it_back(
    kt: Harness, conjur: ConjurDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONJUR_KEY", conjur.add_host(LOGIN))
    toml = (
        f'type = "conjur"\nurl = "{conjur.url}"\naccount = "myorg"\n'
        f'login = "{LOGIN}"\napi_key = "env:CONJUR_KEY"'
    )
    rig = Rig(kt, toml)
    conjur.declare(f"{rig.tenant}/smtp-admin")  # in Conjur, by a policy
    for _ in range(2):
        assert rig.rotate()["status"] == "done"
        assert conjur.value(f"{rig.tenant}/smtp-admin") == rig.current()[1]
    assert kt.cli("verify", rig.id).code == 0
    conjur.set(f"{rig.tenant}/smtp-admin", "set-by-hand")
    result = kt.cli("verify", rig.id, "--json")
    assert json.loads(result.out)[0]["status"] == "store-drift"
    assert "set-by-hand" not in written(kt.home)


def test_an_expired_token_is_renewed(conjur: ConjurDouble) -> None:
    conjur.declare("acme/db")
    with store(conjur, conjur.add_host(LOGIN)) as s:
        mark = s.publish(view(2, "value-two"), None)
        assert conjur.authentications == 1
        conjur.expire_tokens()  # Conjur answers 401: keyturn logs in again, once
        mark = s.publish(view(3, "value-three", "value-two"), mark)
        assert conjur.authentications == 2
        s._token_at -= TOKEN_SECONDS + 1  # near its 8 minutes: renewed before use
        s.publish(view(4, "value-four", "value-three"), mark)
        assert conjur.authentications == 3
    assert conjur.value("acme/db") == "value-four"


def test_an_undeclared_variable_or_a_wrong_key_is_a_clear_refusal(conjur: ConjurDouble) -> None:
    conjur.add_host(LOGIN)
    with store(conjur, "wrong-api-key-000") as s, pytest.raises(StoreRefused) as wrong:
        s.publish(view(2, "value-two"), None)
    assert "refused the API key" in wrong.value.message
    assert "wrong-api-key-000" not in wrong.value.message
    with store(conjur, conjur.api_keys[LOGIN]) as s, pytest.raises(StoreRefused) as missing:
        s.publish(view(2, "value-two"), None)
    assert "declare it in a Conjur policy" in missing.value.message
