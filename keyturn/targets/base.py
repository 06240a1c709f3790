"""The target plugin interface.

A target is a system that accepts a credential and can change it. The engine owns the
protocol (create, set, test, publish, finish, wait, revoke); a target implements narrow verbs,
each of which first asks "is it already so?" and returns if it is, because a resumed rotation
replays the step it was in.

Plugins are classes registered under the entry-point group ``keyturn.targets``; built-ins go
through the same path. Capabilities are class attributes. Every driver exception is mapped to
a keyturn error *inside* the plugin (TargetRejected, TargetUnreachable), once, with
``raise ... from exc`` and a message that names the account, never the value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict

from keyturn.crypto.secrets import generate_password
from keyturn.domain.model import PasswordRules, Secret

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

    Fields that hold secrets are declared as ``SecretRef`` strings (``env:``, ``file:``,
    ``keyturn:``); the engine resolves them through :class:`TargetContext.resolve`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Account:
    """Which login a version belongs to (alternating rotates two of them)."""

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

    # Resolve a secret reference (env:NAME, file:PATH, keyturn:ID) to its value.
    resolve: Callable[[str], Secret]
    # The directory relative paths in the settings are taken from (the config file's).
    base_dir: str = "."


class Target:
    """Base class of target plugins. Subclasses set the class attributes and the verbs."""

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
    config_model: ClassVar[type[TargetConfig]] = TargetConfig

    def __init__(self, config: TargetConfig, context: TargetContext) -> None:
        self.config = config
        self.context = context

    @classmethod
    def from_settings(cls, settings: dict[str, Any], context: TargetContext) -> Target:
        return cls(cls.config_model.model_validate(settings), context)

    # -- verbs -----------------------------------------------------------------------------

    def set(self, account: Account, new: Secret, current: Secret | None) -> None:
        """Make the target accept *new* for *account*.

        `single`: *new* replaces the account's password (the old one stops working).
        `alternating`: *account* is the inactive login; set its password and enable it.
        `dual`: add *new* beside the active one (the old keeps working until revoke).
        Idempotent: if *new* already works, return.
        """
        raise NotImplementedError

    def add(self, account: Account, new: Secret, current: Secret | None) -> None:
        """`dual`: make the target accept *new* for *account* beside *current*, which keeps
        working until `revoke`. Idempotent: if *new* already works, return."""
        raise NotImplementedError(f"{self.name} does not hold two secrets per account")

    def generate(self, rules: PasswordRules) -> Secret:
        """A new value for the `create` step, following *rules* (the policy's password rules
        over the target's own). Override for values that are not passwords (keys,
        certificates). Not called on targets that issue their secrets (`create`)."""
        return generate_password(rules)

    def test(self, account: Account, value: Secret) -> bool:
        """Log in as *account* with *value*: True if accepted, False if refused.

        Raise TargetUnreachable when the answer is unknown (network, server down): a refusal
        and an outage must never be confused. Make at most one failed login per call.
        """
        raise NotImplementedError

    def revoke(self, account: Account, old: Secret) -> None:
        """Stop the target accepting *old* for *account* (idempotent).

        *account* is the login the old value belongs to: with `alternating`, the login being
        retired, not the one that just became current.

        `dual`: remove the old secret; `alternating`: disable the inactive login.
        """
        raise NotImplementedError

    def ensure(self, account: Account, value: Secret) -> bool:
        """Provision *account* with *value* if the account does not exist yet.

        Used by `keyturn apply` for an initial secret. Returns True if it created the account.
        """
        return False

    @classmethod
    def validity(cls, value: Secret) -> tuple[datetime, datetime] | None:
        """Values that expire by themselves (certificates): their notBefore and notAfter,
        recorded with the version so that the schedule can renew before expiry. Called when a
        version is created or imported; None (the default) for values that do not expire."""
        return None

    def create(self, account: Account) -> IssuedSecret:
        """Providers that issue secrets: make a new one and return it with its id."""
        raise NotImplementedError

    def list_active(self, account: Account) -> list[str]:
        """Providers that issue secrets: ids of every key the account holds now."""
        raise NotImplementedError

    def close(self) -> None:
        """Release connections. Called once the engine is done with the plugin."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"
