"""Strategy details the protocol's end-to-end tests do not reach."""

from __future__ import annotations

from pathlib import Path

from keyturn.domain.model import Secret
from keyturn.engine.strategies import Dual, Recovery
from keyturn.targets.base import Account, Target, TargetContext
from keyturn.testing.fakes import FakeTarget


class DualOnly(FakeTarget):
    """A target that holds two secrets per account and has no `set` (its contract allows it)."""

    name = "dual-only"
    strategies = ("dual",)
    set = Target.set  # type: ignore[assignment]


def test_a_dual_only_target_gets_the_current_value_back_without_set(tmp_path: Path) -> None:
    """Recovery after a failed `dual` step, when the current value stopped working: a target
    without `set` has it added back and the new one revoked (it raised NotImplementedError,
    which the engine takes for a plugin bug)."""
    target = DualOnly.from_settings(
        {"path": "fake.json"}, TargetContext(resolve=lambda _: Secret(""), base_dir=str(tmp_path))
    )
    login, cur, new = Account("app"), Secret("current-Value-1"), Secret("new-Value-2")
    assert target.ensure(login, new)  # the target lost the current value, holds the new one
    assert Dual(target).recover(login, cur, login, new, keep_new=False) == Recovery.CURRENT
    assert target.test(login, cur) and not target.test(login, new)
