"""The conformance kit against its own fakes: what passes, and what a broken plugin hears."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from keyturn import plugins
from keyturn.domain.model import Secret
from keyturn.stores.base import StoreContext
from keyturn.targets.base import Account
from keyturn.testing import (
    FakeIssuer,
    FakeStore,
    FakeTarget,
    InvariantBroken,
    TargetCase,
    check_store,
    check_target,
    check_verbs,
)

SAMPLE = ["create:effect", "set:effect", "test:after", "finish:effect", "revoke:effect"]


class SetNotIdempotent(FakeTarget):
    name = "fake-set-twice"

    def set(self, account: Account, new: Secret, current: Secret | None) -> None:
        if self.test(account, new):
            raise RuntimeError("already set")  # a replay after a crash would fail here
        super().set(account, new, current)


class RevokeNoop(FakeTarget):
    name = "fake-revoke-noop"

    def revoke(self, account: Account, old: Secret) -> None:
        pass


class LeaksInLog(FakeTarget):
    name = "fake-leaky"

    def set(self, account: Account, new: Secret, current: Secret | None) -> None:
        import logging

        logging.getLogger("fake").info("setting %s", new.reveal())
        super().set(account, new, current)


@pytest.fixture(autouse=True)
def _registered() -> Iterator[None]:
    classes = [FakeTarget, FakeIssuer, SetNotIdempotent, RevokeNoop, LeaksInLog]
    for cls in classes:
        plugins.register("target", cls)
    yield
    for cls in classes:
        plugins.unregister("target", cls.name)


def _case(tmp_path: Path, type_: str = "fake", strategy: str = "single") -> TargetCase:
    logins = ("app", "app_clone") if strategy == "alternating" else ("app",)
    return TargetCase(
        type_,
        {"path": str(tmp_path / "fake-server.json")},
        strategy=strategy,
        logins=logins,
        initial="kit-initial-" + secrets.token_urlsafe(12),
    )


@pytest.mark.parametrize("strategy", ["single", "alternating", "dual"])
def test_the_fake_target_passes(tmp_path: Path, db_url: str, strategy: str) -> None:
    check_target(_case(tmp_path, strategy=strategy), tmp_path / "kit", db_url, points=SAMPLE)


def test_the_fake_issuer_passes_with_its_orphans_reconciled(tmp_path: Path, db_url: str) -> None:
    case = TargetCase("fake-issuer", {"path": str(tmp_path / "issuer.json")}, strategy="dual")
    check_target(case, tmp_path / "kit", db_url, points=["create:issued", "set:effect"])


@pytest.mark.parametrize(
    ("type_", "invariant"),
    [
        ("fake-set-twice", "set-idempotent"),
        ("fake-revoke-noop", "revoke-refuses-old"),
    ],
)
def test_a_broken_target_fails_naming_the_invariant(
    tmp_path: Path, type_: str, invariant: str
) -> None:
    strategy = "alternating" if type_ == "fake-revoke-noop" else "single"
    with pytest.raises(InvariantBroken, match=f"^{invariant}: ") as caught:
        check_verbs(_case(tmp_path, type_, strategy))
    assert caught.value.invariant == invariant


def test_a_value_in_a_log_record_fails_the_kit(tmp_path: Path) -> None:
    with pytest.raises(InvariantBroken, match=r"^no-value-in-output: ") as caught:
        check_target(_case(tmp_path, "fake-leaky"), tmp_path / "kit", points=[])
    assert "<the value>" in str(caught.value)


def test_the_fake_store_passes(tmp_path: Path) -> None:
    settings = {"path": str(tmp_path / "store.json")}
    check_store(lambda: FakeStore.from_settings(settings, StoreContext(Secret)))
