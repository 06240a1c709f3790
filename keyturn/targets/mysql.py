"""MySQL and MariaDB target: rotate the password of a user account.

Strategies:

- ``single``: ``ALTER USER`` replaces the password.
- ``alternating``: two users (``app``, ``app_clone``) that get their privileges from one role
  (``default_role``); a rotation sets the password of the inactive user and unlocks it, revoke
  locks the user that held the old value (``ACCOUNT LOCK``).
- ``dual``: MySQL 8.0.14 and later keep a secondary password: set adds the new one with
  ``RETAIN CURRENT PASSWORD``, revoke drops the old with ``DISCARD OLD PASSWORD``. MariaDB has
  no secondary passwords and refuses ``dual`` with a clear error.

On MariaDB keyturn sends the ``mysql_native_password`` hash, not the password, so the general,
slow and binary logs hold no secret. MySQL masks passwords in its logs itself.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pydantic import model_validator

from keyturn.domain.errors import ConfigInvalid, PluginMissing, TargetRejected, TargetUnreachable
from keyturn.domain.model import PasswordRules, Secret
from keyturn.refs import SecretRef
from keyturn.targets.base import Account, Target, TargetConfig, redact
from keyturn.targets.common import DSN_UNSAFE, require_admin_password

# Server error codes (MySQL and MariaDB share the low ones).
ACCESS_DENIED = {1045, 1698}  # wrong password; MariaDB also says 1698 for unknown users
ACCOUNT_LOCKED = {3118, 4151}  # MySQL, MariaDB
UNREACHABLE = {2002, 2003, 2005, 2006, 2013, 2026}  # socket, refused, unknown host, gone, TLS


def native_password_hash(password: str) -> str:
    """``mysql_native_password``'s stored form: ``*`` + hex(SHA1(SHA1(password)))."""
    inner = hashlib.sha1(password.encode(), usedforsecurity=False).digest()
    return "*" + hashlib.sha1(inner, usedforsecurity=False).hexdigest().upper()


@dataclass(frozen=True)
class ServerVersion:
    """What ``SELECT VERSION()`` says: MariaDB or MySQL, and the version numbers."""

    mariadb: bool
    numbers: tuple[int, ...]

    @classmethod
    def parse(cls, text: str) -> ServerVersion:
        match = re.match(r"(\d+)\.(\d+)\.(\d+)", text)
        numbers = tuple(int(n) for n in match.groups()) if match else (0, 0, 0)
        return cls(mariadb="mariadb" in text.lower(), numbers=numbers)

    @property
    def dual_passwords(self) -> bool:
        return not self.mariadb and self.numbers >= (8, 0, 14)

    def __str__(self) -> str:
        return ("MariaDB " if self.mariadb else "MySQL ") + ".".join(map(str, self.numbers))


class MysqlConfig(TargetConfig):
    """Settings of a MySQL or MariaDB target."""

    host: str
    port: int = 3306
    # A user with CREATE USER (and GRANT OPTION to hand out default_role). Without it,
    # `single` logs in as the account itself with its current password.
    admin_user: str | None = None
    admin_password: SecretRef | None = None  # a reference: env:NAME, file:PATH, keyturn:ID
    # The host part of the rotated accounts ('app'@'%').
    account_host: str = "%"
    # alternating: the role both users get their privileges from (granted and made default).
    default_role: str | None = None
    connect_timeout: int = 10
    ssl_ca: str | None = None  # verify the server's certificate against this CA file
    ssl_disabled: bool = False

    _admin = model_validator(mode="after")(require_admin_password)


def _driver() -> Any:
    try:
        import pymysql
    except ImportError as exc:
        raise PluginMissing("the mysql target needs PyMySQL: pip install 'keyturn[mysql]'") from exc
    return pymysql


def _code(exc: Exception) -> int | None:
    first = exc.args[0] if exc.args else None
    return first if isinstance(first, int) else None


def _reason(exc: Exception, *values: Secret | None) -> str:
    """The server's message without any secret value (syntax errors quote the statement)."""
    text = str(exc.args[1]) if len(exc.args) > 1 else type(exc).__name__
    return redact(text, values, native_password_hash)


class _Refused(Exception):
    """The server refused this login (internal: test() turns it into False)."""


class MysqlTarget(Target):
    """Rotates the password of a MySQL or MariaDB user (single, alternating, dual)."""

    name = "mysql"
    max_active_secrets = 2  # MySQL >= 8.0.14 only; MariaDB accepts one
    strategies = ("single", "alternating", "dual")
    password_rules = PasswordRules(length=32, alphabet="urlsafe", forbid=DSN_UNSAFE)
    config_model = MysqlConfig
    config: MysqlConfig

    # -- connections ----------------------------------------------------------------------

    def _where(self, user: str) -> str:
        return f"MySQL at {self.config.host}:{self.config.port} (user {user!r})"

    @contextmanager
    def _connect(self, user: str, password: Secret, *hidden: Secret) -> Iterator[Any]:
        """A connection as *user*; driver errors mapped to keyturn errors once, here."""
        my = _driver()
        cfg = self.config
        ssl = None if cfg.ssl_disabled or not cfg.ssl_ca else {"ca": cfg.ssl_ca}
        try:
            conn = my.connect(
                host=cfg.host,
                port=cfg.port,
                user=user,
                password=password.reveal(),
                connect_timeout=cfg.connect_timeout,
                ssl=ssl,
                ssl_disabled=cfg.ssl_disabled,
                autocommit=True,
            )
        except my.Error as exc:
            code, reason = _code(exc), _reason(exc, password)
            if code in ACCESS_DENIED or code in ACCOUNT_LOCKED:
                raise _Refused(reason) from None
            if code in UNREACHABLE or code is None:
                raise TargetUnreachable(f"cannot reach {self._where(user)}: {reason}") from None
            raise TargetRejected(f"{self._where(user)} refused the login: {reason}") from None
        try:
            with conn:
                yield conn
        except my.Error as exc:
            reason = _reason(exc, password, *hidden)
            if _code(exc) in UNREACHABLE:
                raise TargetUnreachable(f"lost {self._where(user)}: {reason}") from None
            raise TargetRejected(f"{self._where(user)} refused the change: {reason}") from None

    def _has_admin(self, account: Account | None = None) -> bool:
        """Does an admin change *account*? Not when the admin is that very user (the admin
        credential rotating itself): it changes its own password with its current value."""
        cfg = self.config
        if account is not None and cfg.admin_user == account.username:
            return False
        return bool(cfg.admin_user and cfg.admin_password)

    @contextmanager
    def _admin(self, *hidden: Secret) -> Iterator[Any]:
        cfg = self.config
        if not (cfg.admin_user and cfg.admin_password):
            raise ConfigInvalid(
                f"the mysql target {cfg.host}:{cfg.port} needs admin_user and admin_password "
                "for this operation"
            )
        try:
            with self._connect(
                cfg.admin_user, self.context.resolve(cfg.admin_password), *hidden
            ) as conn:
                yield conn
        except _Refused as exc:
            raise TargetRejected(
                f"{self._where(cfg.admin_user)} refused the admin login: {exc}; "
                f"check admin_password ({cfg.admin_password})"
            ) from None

    # -- helpers --------------------------------------------------------------------------

    @staticmethod
    def _run(conn: Any, query: str, *args: object) -> list[tuple[Any, ...]]:
        with conn.cursor() as cur:
            # PyMySQL quotes and escapes every argument as a string literal.
            cur.execute(query, args or None)
            return list(cur.fetchall())

    def _version(self, conn: Any) -> ServerVersion:
        return ServerVersion.parse(str(self._run(conn, "SELECT VERSION()")[0][0]))

    def _exists(self, conn: Any, user: str) -> bool:
        rows = self._run(
            conn,
            "SELECT 1 FROM mysql.user WHERE user = %s AND host = %s",
            user,
            self.config.account_host,
        )
        return bool(rows)

    def _identified(self, version: ServerVersion, value: Secret) -> tuple[str, str]:
        """The ``IDENTIFIED ...`` clause and its argument: a hash on MariaDB."""
        if version.mariadb:
            return "IDENTIFIED VIA mysql_native_password USING %s", native_password_hash(
                value.reveal()
            )
        return "IDENTIFIED BY %s", value.reveal()

    def _dual(self, version: ServerVersion, keep: bool) -> bool:
        """Whether to keep the current password beside the new one (``dual``, from `add`)."""
        if not keep:
            return False
        if not version.dual_passwords:
            raise ConfigInvalid(
                f"MySQL at {self.config.host}:{self.config.port} runs {version}, which keeps "
                "one password per account; "
                "dual needs MySQL 8.0.14 or later: use single or alternating"
            )
        return True

    def _grant_role(self, conn: Any, version: ServerVersion, user: str) -> None:
        role, host = self.config.default_role, self.config.account_host
        if not role:
            return
        self._run(conn, "CREATE ROLE IF NOT EXISTS %s", role)
        self._run(conn, "GRANT %s TO %s@%s", role, user, host)
        if version.mariadb:
            self._run(conn, "SET DEFAULT ROLE %s FOR %s@%s", role, user, host)
        else:
            self._run(conn, "SET DEFAULT ROLE %s TO %s@%s", role, user, host)

    # -- verbs ----------------------------------------------------------------------------

    def set(self, account: Account, new: Secret, current: Secret | None) -> None:
        """Make *account* accept *new* instead of its password, and unlock it.

        A missing account is created when ``default_role`` is set (the clone of
        ``alternating``). Returns at once when *new* already logs in.
        """
        self._change(account, new, current, keep=False)

    def add(self, account: Account, new: Secret, current: Secret | None) -> None:
        """``dual``: *new* becomes the password and the current one is retained (MySQL
        8.0.14 and later; MariaDB keeps one password per account and is refused)."""
        self._change(account, new, current, keep=True)

    def _change(self, account: Account, new: Secret, current: Secret | None, keep: bool) -> None:
        if self.test(account, new):
            return
        if not self._has_admin(account):
            self._set_own(account, new, current, keep)
            return
        user, host = account.username, self.config.account_host
        with self._admin(new) as conn:
            version = self._version(conn)
            dual = self._dual(version, keep)
            clause, arg = self._identified(version, new)
            if not self._exists(conn, user):
                if not self.config.default_role:
                    raise TargetRejected(
                        f"{self._where(user)}: no account {user!r}@{host!r}; create it, or set "
                        "default_role so keyturn creates alternating users"
                    )
                self._run(conn, f"CREATE USER %s@%s {clause}", user, host, arg)
                self._grant_role(conn, version, user)
                return
            retain = " RETAIN CURRENT PASSWORD" if dual else " ACCOUNT UNLOCK"
            self._run(conn, f"ALTER USER %s@%s {clause}{retain}", user, host, arg)

    def _set_own(self, account: Account, new: Secret, current: Secret | None, keep: bool) -> None:
        if current is None:
            raise ConfigInvalid(
                f"{self._where(account.username)}: set admin_user and admin_password, or give "
                "the current value, to change the password"
            )
        try:
            with self._connect(account.username, current, new) as conn:
                version = self._version(conn)
                dual = self._dual(version, keep)
                if version.mariadb:
                    # MariaDB wants CREATE USER for ALTER USER, even on oneself.
                    self._run(conn, "SET PASSWORD = %s", native_password_hash(new.reveal()))
                    return
                retain = " RETAIN CURRENT PASSWORD" if dual else ""
                self._run(conn, f"ALTER USER CURRENT_USER() IDENTIFIED BY %s{retain}", new.reveal())
        except _Refused as exc:
            raise TargetRejected(
                f"{self._where(account.username)} refused the current value: {exc}"
            ) from None

    def test(self, account: Account, value: Secret) -> bool:
        """Log in as *account* with *value* and run ``SELECT 1`` (1045: refused)."""
        try:
            with self._connect(account.username, value) as conn:
                self._run(conn, "SELECT 1")
        except _Refused:
            return False
        return True

    def revoke(self, account: Account, old: Secret) -> None:
        """Stop *account* accepting *old*: discard it if it is the retained second password
        (``dual``), else lock the account (``alternating``: the login being retired).

        Nothing to do if *old* no longer logs in (replaced by ``set``, or already revoked).
        """
        if not self.test(account, old):
            return
        user, host = account.username, self.config.account_host
        with self._admin() as conn:
            if self._version(conn).dual_passwords:
                self._run(conn, "ALTER USER %s@%s DISCARD OLD PASSWORD", user, host)
                if not self.test(account, old):
                    return
            self._run(conn, "ALTER USER %s@%s ACCOUNT LOCK", user, host)

    def ensure(self, account: Account, value: Secret) -> bool:
        """Create the user with *value* (and ``default_role``) unless it exists.

        Without an admin keyturn cannot create users, but one that already accepts *value*
        needs nothing (an admin credential that rotates itself).
        """
        if not self._has_admin(account) and self.test(account, value):
            return False
        user, host = account.username, self.config.account_host
        with self._admin(value) as conn:
            if self._exists(conn, user):
                return False
            version = self._version(conn)
            clause, arg = self._identified(version, value)
            self._run(conn, f"CREATE USER %s@%s {clause}", user, host, arg)
            self._grant_role(conn, version, user)
            return True
