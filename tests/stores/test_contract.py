"""The store contract, the same table for every store that checks-and-sets: a replayed
publish changes nothing, a new version moves the mark, and a write by someone else is a
conflict that is not overwritten (keyturn.stores.base).

OpenBao is real (the shared dev server); AWS is moto's server and Conjur a double of its
REST API (doubles: neither can run here).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from keyturn.domain.model import Secret
from keyturn.stores.aws_secretsmanager import AwsSecretsManagerStore
from keyturn.stores.base import Numbered, PublishView, Store, StoreConflict, StoreContext
from keyturn.stores.conjur import ConjurStore
from keyturn.stores.file import FileStore
from keyturn.stores.vault import VaultStore
from tests.stores.bao import client
from tests.stores.conftest import need
from tests.stores.conjur_double import ConjurDouble
from tests.stores.test_aws_secretsmanager import REGION, foreign_write

Case = tuple[Store, Callable[[str], None]]  # the store, and "someone else writes VALUE"


def _env(ref: str) -> Secret:
    return Secret(need(ref.removeprefix("env:")))


def vault(tenant: str, tmp_path: Path) -> Iterator[Case]:
    settings = {"url": need("KEYTURN_TEST_BAO_ADDR"), "token": "env:KEYTURN_TEST_BAO_TOKEN"}
    store = VaultStore.from_settings(settings, StoreContext(resolve=_env))

    def write(value: str) -> None:
        client().secrets.kv.v2.create_or_update_secret(path=f"{tenant}/db", secret={"value": value})

    yield store, write


def aws(tenant: str, tmp_path: Path) -> Iterator[Case]:
    settings = {
        "region": REGION,
        "endpoint": need("KEYTURN_TEST_AWS_ENDPOINT"),
        "access_key_id": "env:KEYTURN_TEST_AWS_ACCESS_KEY_ID",
        "secret_access_key": "env:KEYTURN_TEST_AWS_SECRET_ACCESS_KEY",
    }
    store = AwsSecretsManagerStore.from_settings(settings, StoreContext(resolve=_env))
    yield store, lambda value: foreign_write(f"{tenant}/db", value)


def conjur(tenant: str, tmp_path: Path) -> Iterator[Case]:
    with ConjurDouble() as double:
        key = double.add_host("host/keyturn")
        double.declare(f"{tenant}/db")
        settings = {"url": double.url, "account": "myorg", "login": "host/keyturn"}
        store = ConjurStore.from_settings(
            {**settings, "api_key": "env:K"}, StoreContext(resolve=lambda ref: Secret(key))
        )
        yield store, lambda value: double.set(f"{tenant}/db", value)


def files(tenant: str, tmp_path: Path) -> Iterator[Case]:
    store = FileStore.from_settings(
        {"directory": str(tmp_path)}, StoreContext(resolve=_env, base_dir=str(tmp_path))
    )
    yield store, lambda value: (tmp_path / tenant / "db").write_text(value)


STORES: dict[str, Callable[[str, Path], Iterator[Case]]] = {
    "vault": vault,
    "aws-secretsmanager": aws,
    "conjur": conjur,
    "file": files,
}


@pytest.fixture(params=sorted(STORES))
def case(request: Any, tmp_path: Path) -> Iterator[tuple[str, Store, Callable[[str], None]]]:
    tenant = "t" + secrets.token_hex(4)
    for store, write in STORES[request.param](tenant, tmp_path):
        with store:
            yield tenant, store, write


def version(tenant: str, number: int, value: str, previous: str | None = None) -> PublishView:
    prev = Numbered(number - 1, Secret(previous), f"fp{number - 1}") if previous else None
    return PublishView(f"{tenant}/db", tenant, Numbered(number, Secret(value), f"fp{number}"), prev)


def test_replay_then_new_version_then_conflict(case: Any) -> None:
    tenant, store, write = case
    first = store.publish(version(tenant, 2, "value-Two-2"), None)
    held = store.held(f"{tenant}/db", tenant)
    assert held is not None and held.mark == first
    assert store.publish(version(tenant, 2, "value-Two-2"), first) == first  # a replay
    assert store.held(f"{tenant}/db", tenant).mark == first  # nothing new was written
    second = store.publish(version(tenant, 3, "value-Three-3", "value-Two-2"), first)
    assert second != first
    found = store.read(f"{tenant}/db")
    assert found is not None and found[1].reveal() == "value-Three-3"
    write("someone-Else-9")
    with pytest.raises(StoreConflict) as conflict:
        store.publish(version(tenant, 4, "value-Four-4", "value-Three-3"), second)
    assert "value-Four-4" not in conflict.value.message
    assert "someone-Else-9" not in conflict.value.message
    found = store.read(f"{tenant}/db")
    assert found is not None and found[1].reveal() == "someone-Else-9"  # not overwritten
    # The operator's repair: publish over what is there now, from its current mark.
    now = store.held(f"{tenant}/db", tenant)
    assert now is not None and now.mark != second
    store.publish(version(tenant, 4, "value-Four-4", "value-Three-3"), now.mark)
    found = store.read(f"{tenant}/db")
    assert found is not None and found[1].reveal() == "value-Four-4"
