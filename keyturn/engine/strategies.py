"""What differs between the strategies, behind one interface the protocol calls.

The protocol (`keyturn.engine.protocol`) is the same state machine for every credential; where
keeping zero downtime differs, it asks the credential's strategy object:

- `Single`: the target accepts one secret. ``set`` replaces it, so the old value must be
  refused from then on (checked at ``test``) and there is nothing left to revoke; promotion
  ends the grace period at once (consumers fall back to ``next``/``previous`` meanwhile).
- `Alternating`: two logins; each rotation sets the inactive one, and revoke disables the one
  that just became previous.
- `Dual`: the target holds two secrets per account; ``add`` puts the new one beside the old,
  revoke removes the old one.
- `Issued`: the target makes the secret itself (an API key, an app token): create reconciles
  the keys it holds (orphans of a crashed run are revoked), then asks it for a new one; there is
  no ``set``, revoke deletes the old key, and an abandoned pending key is revoked at once.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from enum import StrEnum
from typing import ClassVar

from keyturn.domain.model import PasswordRules, Secret, Strategy
from keyturn.engine.faults import checkpoint
from keyturn.targets.base import Account, Target


class Recovery(StrEnum):
    """Which value the target accepts after a failed ``set`` or ``test``."""

    CURRENT = "current"  # the old value works: the pending one may be abandoned
    PENDING = "pending"  # the new value took effect after all: carry on with it
    UNKNOWN = "unknown"  # cannot tell (unreachable, or neither works): keep both, retry later


class RotationStrategy:
    """The strategy-dependent parts of a rotation, for one target."""

    name: ClassVar[Strategy]
    # Promotion ends the grace period at once (the old value stopped working at set).
    immediate: bool = False
    # `test` also checks that the old value of the same login is refused now.
    old_refused_at_test: ClassVar[bool] = False

    def __init__(self, target: Target) -> None:
        self.target = target

    def next_login(self, logins: list[str], current_login: str | None) -> str:
        """The login the new version belongs to."""
        return logins[0] if logins else ""

    def new_value(
        self,
        account: Account,
        rules: PasswordRules,
        known_keys: Collection[str | None],
        on_orphan: Callable[[str], None],
    ) -> tuple[Secret, str | None]:
        """The pending value (and its key id at the target, for issuing targets)."""
        return self.target.generate(rules), None

    def set(self, account: Account, new: Secret, current: Secret | None) -> None:
        """Make the target accept *new* (the protocol's `set` step)."""
        self.target.set(account, new, current)

    def revoke(self, account: Account, old: Secret) -> None:
        """Make the target refuse *old* (the protocol's `revoke` step)."""
        self.target.revoke(account, old)

    def abandon(self, account: Account, value: Secret) -> bool:
        """A pending value given up after a failure: does the target need telling?"""
        return False

    def restore(self, current: Account, cur: Secret, pending: Account, new: Secret) -> None:
        """Put the current value back after a failed set: set it again over the new one."""
        self.target.set(current, cur, new)

    def recover(
        self, current: Account, cur: Secret, pending: Account, new: Secret, *, keep_new: bool
    ) -> Recovery:
        """The one restore-current routine, after a failed set/test and on abort.

        If the current value still works, nothing to do. If the new one works and *keep_new*
        (a failed step will be resumed), carry on with it. Otherwise put the current value back.
        Target errors propagate: the caller decides whether that means "unknown".
        """
        if self.target.test(current, cur):
            return Recovery.CURRENT
        if keep_new and self.target.test(pending, new):
            return Recovery.PENDING
        self.restore(current, cur, pending, new)
        return Recovery.CURRENT if self.target.test(current, cur) else Recovery.UNKNOWN


class Single(RotationStrategy):
    name = Strategy.SINGLE
    immediate = True
    old_refused_at_test = True

    def revoke(self, account: Account, old: Secret) -> None:
        """Nothing: `set` replaced the old value; the protocol checks it is refused."""


class Alternating(RotationStrategy):
    name = Strategy.ALTERNATING

    def next_login(self, logins: list[str], current_login: str | None) -> str:
        if current_login is None or len(logins) < 2:
            return super().next_login(logins, current_login)
        return logins[1] if current_login == logins[0] else logins[0]


class Dual(RotationStrategy):
    name = Strategy.DUAL

    def set(self, account: Account, new: Secret, current: Secret | None) -> None:
        self.target.add(account, new, current)

    def restore(self, current: Account, cur: Secret, pending: Account, new: Secret) -> None:
        """Put the current value back: with `set` where the target has one (the current value
        alone); a `dual`-only target gets it added back beside the new one, then the new one
        revoked (`set` is not part of its contract)."""
        if type(self.target).set is not Target.set:
            super().restore(current, cur, pending, new)
            return
        self.target.add(current, cur, new)
        self.target.revoke(pending, new)


class Issued(RotationStrategy):
    """A target that issues its secrets (``issues_secrets``), whatever strategy it declares."""

    def __init__(self, target: Target, name: Strategy) -> None:
        super().__init__(target)
        self.immediate = name == Strategy.SINGLE

    def new_value(
        self,
        account: Account,
        rules: PasswordRules,
        known_keys: Collection[str | None],
        on_orphan: Callable[[str], None],
    ) -> tuple[Secret, str | None]:
        """Revoke the keys no version knows (a crashed run's), then issue a new one."""
        for key_id in self.target.list_active(account):
            if key_id not in known_keys:
                self.target.revoke(Account(account.username, key_id), Secret(""))
                on_orphan(key_id)
        issued = self.target.create(account)
        checkpoint("create:issued")
        return issued.value, issued.key_id

    def set(self, account: Account, new: Secret, current: Secret | None) -> None:
        """Nothing: the target has held the value since it issued it."""

    def abandon(self, account: Account, value: Secret) -> bool:
        if account.key_id is None:
            return False
        self.target.revoke(account, value)
        return True

    def restore(self, current: Account, cur: Secret, pending: Account, new: Secret) -> None:
        """Nothing to put back: issuing the new key did not touch the current one."""


_BY_NAME: dict[Strategy, type[RotationStrategy]] = {
    Strategy.SINGLE: Single,
    Strategy.ALTERNATING: Alternating,
    Strategy.DUAL: Dual,
}


def for_target(target: Target, strategy: str) -> RotationStrategy:
    """The strategy object a credential of *strategy* on *target* rotates with."""
    name = Strategy(strategy)
    if type(target).issues_secrets:
        return Issued(target, name)
    return _BY_NAME[name](target)
