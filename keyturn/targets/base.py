"""The target plugin API (contract v1): everything a third party needs to write a target.

A target is a system that accepts a credential and can change it. The engine owns the
protocol, ``create -> set -> test -> publish -> finish -> wait -> revoke -> done``, and calls
the narrow verbs of `Target` below; their docstrings say when each is called, what it may
assume and what it must return. Because a resumed rotation replays the step it was in, every
verb first asks "is it already so?" and returns if it is.

Plugins are classes registered under the entry-point group ``keyturn.targets``; built-ins go
through the same path. Capabilities are class attributes, checked when the class is defined
and when an inventory is applied (a `dual` credential on a target with
``max_active_secrets = 1`` is refused).

Errors: a verb raises only keyturn errors, from this tree (re-exported here)::

    PluginError
    ├── TargetError
    │   ├── TargetRejected       the target refused the operation (bad settings, no account)
    │   └── TargetUnreachable    the answer is unknown: network, timeout, server down
    │       └── TargetRateLimited   the target asks to wait (``retry_after``)
    └── ConfigInvalid / LiteralSecret / ReferenceUnresolved (settings the target cannot use)

Every driver exception is mapped *inside* the plugin, once, with ``raise ... from exc`` and a
message that names the account, never the value (`redact` blots values out of a driver's
text). Any other exception is treated as a plugin bug: the step fails and is retried.

`keyturn.testing` checks a plugin against all of this; `docs/plugins.md` walks through one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict

from keyturn.crypto.secrets import generate_password
from keyturn.domain.errors import (
    ConfigInvalid,
    KeyturnError,
    LiteralSecret,
    PluginError,
    ReferenceUnresolved,
    TargetError,
    TargetRateLimited,
    TargetRejected,
    TargetUnreachable,
)
from keyturn.domain.model import PasswordRules, Secret
from keyturn.refs import SecretRef, settings_path

__all__ = [
    "MASK",
    "Account",
    "ConfigInvalid",
    "IssuedSecret",
    "KeyturnError",
    "LiteralSecret",
    "PasswordRules",
    "PluginError",
    "ReferenceUnresolved",
    "Secret",
    "SecretRef",
    "Target",
    "TargetConfig",
    "TargetContext",
    "TargetError",
    "TargetRateLimited",
    "TargetRejected",
    "TargetUnreachable",
    "redact",
]

MASK = "**********"


def redact(
    text: str, values: Iterable[Secret | None], derived: Callable[[str], str] | None = None
) -> str:
    """*text* (a driver's or server's message) with every value, and *derived* forms of it
    (e.g. the hash a server quotes back), blotted out. Plugins map driver errors through it."""
    for value in values:
        if value is not None and value.reveal():
            text = text.replace(value.reveal(), MASK)
            if derived is not None:
                text = text.replace(derived(value.reveal()), MASK)
    return text


class TargetConfig(BaseModel):
    """Base of every target's settings model: unknown keys are refused.

    Fields that hold secrets are typed `SecretRef` (``env:NAME``, ``file:PATH``,
    ``keyturn:ID``; a literal is refused without being repeated) and resolved when needed
    through `TargetContext.resolve`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Account:
    """Which login a version belongs to (`alternating` rotates two of them)."""

    username: str
    # For providers that issue keys themselves (API keys, MailU app tokens): the key's id.
    key_id: str | None = None


@dataclass(frozen=True)
class IssuedSecret:
    """A secret a provider generated (``create``): its id at the provider and the value."""

    key_id: str
    value: Secret


@dataclass
class TargetContext:
    """What a plugin gets from keyturn besides its settings."""

    # Resolve a secret reference (env:NAME, file:PATH, keyturn:ID) to its value; raises
    # ReferenceUnresolved.
    resolve: Callable[[str], Secret]
    # The directory relative paths in the settings are taken from (the config file's).
    base_dir: str = "."

    def path(self, name: str) -> str:
        """*name* from the settings as a path: a relative one is from `base_dir`."""
        return str(settings_path(self.base_dir, name))


class Target:
    """Base class of target plugins. Subclasses set the class attributes and the verbs.

    An instance is made per use (a rotation run, an `apply`, a `verify`) from the settings
    model and a `TargetContext`, used as a context manager, and closed afterwards; verbs of
    one instance are called one at a time. Which verbs a target needs:

    ======================  =====================================================
    every target            ``test``, ``revoke``; ``ensure`` to provision accounts
    ``single``, alternating ``set``
    ``dual``                ``add`` (and ``max_active_secrets = 2``)
    ``issues_secrets``      ``create``, ``list_active`` (never ``set`` or ``add``)
    values not passwords    ``generate`` (keys), ``validity`` (certificates)
    ======================  =====================================================
    """

    # Persisted in databases and config files: never changes once released.
    name: ClassVar[str]
    # How many secrets of one account the target accepts at once (2 allows `dual`).
    max_active_secrets: ClassVar[int] = 1
    strategies: ClassVar[tuple[str, ...]] = ("single",)
    password_rules: ClassVar[PasswordRules] = PasswordRules()
    # True for providers that generate the secret themselves (create + list_active).
    issues_secrets: ClassVar[bool] = False
    # At most this many operations per second against one target (None: unlimited).
    rate_limit: ClassVar[float | None] = None
    # At most this many rotations at once against one target, per worker (None: as many as
    # the worker's KEYTURN_CONCURRENCY).
    max_in_flight: ClassVar[int | None] = None
    config_model: ClassVar[type[TargetConfig]] = TargetConfig

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        unknown = set(cls.strategies) - {"single", "alternating", "dual"}
        if unknown:
            raise PluginError(f"{cls.__name__}: unknown strategies {sorted(unknown)}")
        if "dual" in cls.strategies and cls.max_active_secrets < 2:
            raise PluginError(f"{cls.__name__}: `dual` needs max_active_secrets >= 2")

    def __init__(self, config: TargetConfig, context: TargetContext) -> None:
        self.config = config
        self.context = context

    @classmethod
    def from_settings(cls, settings: dict[str, Any], context: TargetContext) -> Self:
        """An instance from inventory settings (validated by ``config_model``)."""
        return cls(cls.config_model.model_validate(settings), context)

    # -- verbs -----------------------------------------------------------------------------

    def set(self, account: Account, new: Secret, current: Secret | None) -> None:
        """Make *account* accept *new* in place of its password (`single`, `alternating`).

        When: the ``set`` step, after *new* is stored as pending; again on every resume of
        that step, and to put *current* back (``set(account, current, new)``) when a failed
        rotation must restore the old value. `single`: the old value stops working here;
        `alternating`: *account* is the inactive login, which ``set`` also enables (or creates,
        when the target can).
        May assume: *current* is the value keyturn holds as current for the credential (None
        before the first one), possibly for the other login (`alternating`).
        Must: return at once if *new* already works (a replay). Returns nothing.
        Raises: TargetRejected, TargetUnreachable, ConfigInvalid.
        """
        raise NotImplementedError(f"{self.name} has no set: it supports {self.strategies}")

    def add(self, account: Account, new: Secret, current: Secret | None) -> None:
        """`dual`: make *account* accept *new* beside *current*, which keeps working until
        ``revoke``. When, may assume, must and raises: as ``set``."""
        raise NotImplementedError(f"{self.name} does not hold two secrets per account")

    def generate(self, rules: PasswordRules) -> Secret:
        """A new value. When: the ``create`` step, once per rotation (the value is stored
        before any other verb sees it, and a resume reuses it).

        *rules* are the policy's password rules over the target's own ``password_rules``.
        Override for values that are not passwords (keys, certificates). Not called on targets
        that issue their secrets (``create``). Raises ConfigInvalid if *rules* cannot be met.
        """
        return generate_password(rules)

    def test(self, account: Account, value: Secret) -> bool:
        """Log in as *account* with *value*: True if accepted, False if refused.

        When: the ``test`` step (the new value; under `single` also the old one, which must
        be refused), after ``revoke`` (the old value, which must be refused), in recovery
        after a failure, and by ``keyturn verify``.
        Raise TargetUnreachable when the answer is unknown (network, server down): a refusal
        and an outage must never be confused. Make at most one failed login per call. No side
        effects on the account.
        """
        raise NotImplementedError

    def test_pair(
        self, new: tuple[Account, Secret], old: tuple[Account, Secret] | None
    ) -> tuple[bool, bool | None]:
        """The ``test`` step's logins: *new* (account, value) must be accepted and, when
        given, *old* must then be refused. Returns (new accepted, old accepted), the second
        None when *old* was not tried: not given, or *new* refused.

        The default calls ``test`` for *new*, then for *old* once *new* is accepted. A target
        whose ``test`` may run on two threads at once may try both at once (the two answers
        do not depend on each other) if it keeps this contract: the same answers and the
        same errors as the default, *new*'s first (*old*'s answer and error are dropped when
        *new* is refused).
        """
        if not self.test(*new):
            return False, None
        return True, (None if old is None else self.test(*old))

    def revoke(self, account: Account, old: Secret) -> None:
        """Make the target refuse *old* for *account*.

        When: the ``revoke`` step, once consumers moved or the grace period ended (never under
        `single` on a target that does not issue: ``set`` replaced the old value); replayed on
        resume. *account* is the login the old value belongs to: under `alternating`, the
        login being retired (disable it), under `dual` the same login (remove the old secret
        only). Issuing targets: *account.key_id* names the key, and *old* may be empty
        (``Secret("")``) when keyturn revokes an orphan it never stored.
        Must: be idempotent (nothing to do if *old* already fails). Returns nothing.
        Raises: TargetRejected, TargetUnreachable.
        """
        raise NotImplementedError

    def ensure(self, account: Account, value: Secret) -> bool:
        """Provision *account* with *value* if the account does not exist yet.

        When: ``keyturn apply`` of a credential with an initial secret. Must leave an
        existing account untouched. Returns True if it created the account.
        """
        return False

    @classmethod
    def validity(cls, value: Secret) -> tuple[datetime, datetime] | None:
        """Values that expire by themselves (certificates): their notBefore and notAfter,
        recorded with the version so that the schedule can renew before expiry. Called when a
        version is created or imported; None (the default) for values that do not expire."""
        return None

    def create(self, account: Account) -> IssuedSecret:
        """Providers that issue secrets (``issues_secrets``): make a new key for *account*.

        When: the ``create`` step, after keyturn revoked every key ``list_active`` shows that
        no stored version knows (orphans of a crashed run), so at most one key is in use.
        A crash after ``create`` but before keyturn stored the result leaves an orphan that
        the next ``create`` step removes: ``create`` itself need not be idempotent.
        Returns the key's id and value. Raises TargetRejected, TargetUnreachable.
        """
        raise NotImplementedError

    def list_active(self, account: Account) -> list[str]:
        """Providers that issue secrets: the ids of every key *account* holds now. When: the
        ``create`` step's reconciliation, before ``create``. Raises TargetUnreachable."""
        raise NotImplementedError

    def findings(self, logins: list[str], account: Account, value: Secret) -> list[str]:
        """Drift the target can see beyond the login itself, for ``keyturn verify`` (called
        after ``test`` accepted *value* for *account*; *logins* are the credential's). One
        sentence per problem, never a value; the default finds nothing."""
        return []

    def close(self) -> None:
        """Release connections. Called once the engine is done with the plugin."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"
