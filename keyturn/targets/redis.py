"""Redis target: rotate the password of an ACL user (Redis 6 and later).

Strategies:

- ``dual`` (native): an ACL user holds any number of passwords. ``set`` adds the new one,
  ``revoke`` removes the old one, and consumers move in between.
- ``single``: ``set`` replaces every password of the user with the new one.

keyturn sends SHA-256 hashes (``#<hash>`` to add, ``!<hash>`` to remove), never the password,
and reads ``ACL GETUSER`` to know whether a step already happened, so replaying a step costs no
failed login. Redis quotes the modifier in its errors, another reason to send only hashes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pydantic import model_validator

from keyturn.domain.errors import ConfigInvalid, PluginMissing, TargetRejected, TargetUnreachable
from keyturn.domain.model import PasswordRules, Secret
from keyturn.refs import SecretRef
from keyturn.targets.base import Account, Target, TargetConfig, redact
from keyturn.targets.common import DSN_UNSAFE, require_admin_password

# Rules of a user `ensure` creates: every key and channel, everything but administration
# but the commands Redis marks dangerous (admin ones included: FLUSHALL, KEYS, CONFIG, ACL, ...).
DEFAULT_ACL_RULES = "~* &* +@all -@dangerous"


def password_hash(value: str) -> str:
    """How Redis stores an ACL password: hex SHA-256."""
    return hashlib.sha256(value.encode()).hexdigest()


class RedisConfig(TargetConfig):
    """Settings of a Redis target."""

    host: str
    port: int = 6379
    # A user allowed ACL SETUSER/GETUSER (+acl). Without admin_user, admin_password logs in as
    # the `default` user; without either, keyturn logs in as the account with its current value.
    admin_user: str | None = None
    admin_password: SecretRef | None = None  # a reference: env:NAME, file:PATH, keyturn:ID
    # ACL rules of users that `ensure` creates (keys, channels, commands), e.g. "~app:* +@read".
    acl_rules: str = DEFAULT_ACL_RULES
    connect_timeout: float = 10
    tls: bool = False
    tls_ca: str | None = None

    _admin = model_validator(mode="after")(require_admin_password)


def _driver() -> Any:
    try:
        import redis
    except ImportError as exc:
        raise PluginMissing(
            "the redis target needs redis-py: pip install 'keyturn[redis]'"
        ) from exc
    return redis


def _reason(exc: Exception, *values: Secret | None) -> str:
    """The server's message without any secret value or its hash."""
    return redact(str(exc) or type(exc).__name__, values, password_hash)


class _Refused(Exception):
    """WRONGPASS (internal: test() turns it into False)."""


class RedisTarget(Target):
    """Rotates the password of a Redis ACL user (``dual`` or ``single``)."""

    name = "redis"
    max_active_secrets = 2
    strategies = ("dual", "single")
    password_rules = PasswordRules(length=32, alphabet="urlsafe", forbid=DSN_UNSAFE)
    config_model = RedisConfig
    config: RedisConfig

    def _where(self, user: str) -> str:
        return f"Redis at {self.config.host}:{self.config.port} (user {user!r})"

    @contextmanager
    def _connect(self, user: str | None, password: Secret, *hidden: Secret) -> Iterator[Any]:
        """A client logged in as *user*; driver errors mapped to keyturn errors once, here."""
        rd = _driver()
        cfg = self.config
        shown = user or "default"
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        client = rd.Redis(
            host=cfg.host,
            port=cfg.port,
            username=user,
            password=password.reveal(),
            socket_connect_timeout=cfg.connect_timeout,
            socket_timeout=cfg.connect_timeout,
            ssl=cfg.tls,
            ssl_ca_certs=cfg.tls_ca,
            # One attempt: a retried wrong password is one more failed login.
            retry=Retry(NoBackoff(), 0),
        )
        try:
            client.ping()  # connects and authenticates
        except rd.exceptions.AuthenticationError as exc:
            client.close()
            raise _Refused(_reason(exc, password)) from None
        except rd.exceptions.NoPermissionError:
            pass  # logged in, but may not PING
        except (rd.exceptions.ConnectionError, rd.exceptions.TimeoutError) as exc:
            client.close()
            raise TargetUnreachable(f"cannot reach {self._where(shown)}: {_reason(exc)}") from None
        try:
            yield client
        except (rd.exceptions.ConnectionError, rd.exceptions.TimeoutError) as exc:
            reason = _reason(exc, password, *hidden)
            raise TargetUnreachable(f"lost {self._where(shown)}: {reason}") from None
        except rd.exceptions.RedisError as exc:
            reason = _reason(exc, password, *hidden)
            raise TargetRejected(f"{self._where(shown)} refused the change: {reason}") from None
        finally:
            client.close()

    def _has_admin(self, account: Account) -> bool:
        """Does an admin change *account*? Not when the admin is that very user (the admin
        credential rotating itself): it then acts with its current value."""
        cfg = self.config
        return bool(cfg.admin_password) and (cfg.admin_user or "default") != account.username

    @contextmanager
    def _admin(self, account: Account, current: Secret | None, *hidden: Secret) -> Iterator[Any]:
        """The client that runs ACL commands: the admin, else the account itself."""
        cfg = self.config
        if self._has_admin(account):
            assert cfg.admin_password
            user, password = cfg.admin_user, self.context.resolve(cfg.admin_password)
            hint = f"check admin_password ({cfg.admin_password})"
        elif current is not None:
            user, password, hint = account.username, current, "is the current value still valid?"
        else:
            raise ConfigInvalid(
                f"the redis target {cfg.host}:{cfg.port} needs admin_password (and admin_user) "
                f"to change {account.username!r} without its current password"
            )
        try:
            with self._connect(user, password, *hidden) as client:
                yield client
        except _Refused as exc:
            where = self._where(user or "default")
            raise TargetRejected(f"{where} refused the login: {exc}; {hint}") from None

    @staticmethod
    def _user(client: Any, name: str) -> dict[str, Any] | None:
        found = client.acl_getuser(name)
        return dict(found) if found else None

    # -- verbs ----------------------------------------------------------------------------

    def set(self, account: Account, new: Secret, current: Secret | None) -> None:
        """Replace the user's passwords with *new* (``single``).

        Returns at once when the user is enabled and already holds *new*.
        """
        self._change(account, new, current, keep=False)

    def add(self, account: Account, new: Secret, current: Secret | None) -> None:
        """Add *new* beside the user's current password (``dual``)."""
        self._change(account, new, current, keep=True)

    def _change(self, account: Account, new: Secret, current: Secret | None, keep: bool) -> None:
        try:
            self._set(account, new, current, keep)
        except TargetRejected:
            # Without an admin keyturn logs in with the current value, which a replay of a
            # `single` set no longer has: the change took effect if *new* logs in.
            if self._has_admin(account) or not self.test(account, new):
                raise

    def _set(self, account: Account, new: Secret, current: Secret | None, keep: bool) -> None:
        digest = password_hash(new.reveal())
        with self._admin(account, current, new) as client:
            user = self._user(client, account.username)
            if user is None:
                raise TargetRejected(
                    f"{self._where(account.username)}: no such ACL user; create it first "
                    "(keyturn apply with an initial secret)"
                )
            if "on" in user.get("flags", []) and digest in user.get("passwords", []):
                return
            modifiers = ["on", "#" + digest]
            if not keep:
                modifiers.insert(1, "resetpass")
            client.execute_command("ACL", "SETUSER", account.username, *modifiers)

    def test(self, account: Account, value: Secret) -> bool:
        """``AUTH user value`` on a fresh connection (WRONGPASS: refused)."""
        try:
            with self._connect(account.username, value):
                return True
        except _Refused:
            return False

    def revoke(self, account: Account, old: Secret) -> None:
        """Remove *old* from the user's passwords, if it still holds it."""
        digest = password_hash(old.reveal())
        with self._admin(account, None, old) as client:
            user = self._user(client, account.username)
            if user is None or digest not in user.get("passwords", []):
                return
            client.execute_command("ACL", "SETUSER", account.username, "!" + digest)

    def ensure(self, account: Account, value: Secret) -> bool:
        """Create the ACL user with *value* and ``acl_rules`` unless it exists.

        Without an admin keyturn cannot create users, but one that already accepts *value*
        needs nothing (an admin credential that rotates itself).
        """
        if not self._has_admin(account) and self.test(account, value):
            return False
        digest = password_hash(value.reveal())
        with self._admin(account, None, value) as client:
            if self._user(client, account.username) is not None:
                return False
            rules = self.config.acl_rules.split()
            client.execute_command(
                "ACL", "SETUSER", account.username, "reset", "on", "#" + digest, *rules
            )
            return True
