"""PostgreSQL target: rotate the password of a login role.

Strategies:

- ``single``: ``ALTER ROLE <login> PASSWORD <verifier>``.
- ``alternating``: two logins (``app``, ``app_clone``) that are both members of one ``NOLOGIN``
  owner role (``owner_role``), which owns the objects and holds the grants; each login runs
  ``SET role = <owner_role>`` at login, so what it creates belongs to the owner role too. A
  rotation sets the password of the inactive login and enables it (``LOGIN``); revoke disables
  the login that held the old value (``NOLOGIN``). Sessions that are open stay open.

The password never travels in clear: keyturn computes the SCRAM-SHA-256 verifier itself
(RFC 5802 / RFC 7677) and sends only the verifier, so a server logging every statement
(``log_statement = 'all'``) logs no secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import select
import stringprep
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal

from pydantic import model_validator

from keyturn.domain.errors import (
    ConfigInvalid,
    PluginMissing,
    TargetRejected,
    TargetUnreachable,
)
from keyturn.domain.model import PasswordRules, Secret
from keyturn.refs import SecretRef
from keyturn.targets.base import Account, Target, TargetConfig, redact
from keyturn.targets.common import DSN_UNSAFE, require_admin_password
from keyturn.targets.pool import IdlePool, digest

if TYPE_CHECKING:
    import psycopg

_REFUSED = (
    "password authentication failed",
    "is not permitted to log in",
    "role has expired",  # VALID UNTIL in the past
)


class PostgresConfig(TargetConfig):
    """Settings of a PostgreSQL target."""

    host: str
    port: int = 5432
    dbname: str = "postgres"
    # The role that changes passwords (superuser, or CREATEROLE with ADMIN on the logins).
    # Without it, `single` logs in as the login itself with its current password.
    admin_user: str | None = None
    admin_password: SecretRef | None = None  # a reference: env:NAME, file:PATH, keyturn:ID
    # alternating: the NOLOGIN role both logins belong to; it owns objects and holds grants.
    owner_role: str | None = None
    connect_timeout: int = 10
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = "prefer"
    sslrootcert: str | None = None
    scram_iterations: int = 4096

    _admin = model_validator(mode="after")(require_admin_password)


# -- SCRAM-SHA-256 verifiers ---------------------------------------------------------------


def saslprep(password: str) -> str:
    """RFC 4013 SASLprep as PostgreSQL applies it: on a prohibited input, use it unchanged."""
    if password.isascii() and password.isprintable():
        # Printable ASCII is mapped to itself, NFKC leaves it so, and none of it is
        # prohibited or bidirectional: the tables below would return it unchanged.
        return password
    mapped = "".join(
        " " if stringprep.in_table_c12(ch) else ch
        for ch in password
        if not stringprep.in_table_b1(ch)
    )
    normal = unicodedata.normalize("NFKC", mapped)
    prohibited = (
        stringprep.in_table_c12,
        stringprep.in_table_c21_c22,
        stringprep.in_table_c3,
        stringprep.in_table_c4,
        stringprep.in_table_c5,
        stringprep.in_table_c6,
        stringprep.in_table_c7,
        stringprep.in_table_c8,
        stringprep.in_table_c9,
        stringprep.in_table_a1,
    )
    if any(test(ch) for ch in normal for test in prohibited):
        return password
    if any(stringprep.in_table_d1(ch) for ch in normal):
        if any(stringprep.in_table_d2(ch) for ch in normal):
            return password
        if not (stringprep.in_table_d1(normal[0]) and stringprep.in_table_d1(normal[-1])):
            return password
    return normal


def _stored_and_server_key(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    salted = hashlib.pbkdf2_hmac("sha256", saslprep(password).encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    return hashlib.sha256(client_key).digest(), server_key


class _Made:
    """Verifiers this process made, each with a keyed tag of the password it was made from
    (issue 23). Whether a verifier keyturn made accepts a password is then a comparison of
    tags, not another PBKDF2 (~2 ms of CPU): a rotation's `set` reads the verifier of the
    value before (made by the rotation before) and `revoke` the one `set` just made. The
    answer is the same: a SCRAM StoredKey matches exactly when the SASLprep'd passwords are
    equal (PBKDF2 would also take a password with trailing NULs, which no PostgreSQL password
    carries). The tag key is random per process and never leaves it; a verifier not made here
    is checked the full way."""

    LIMIT = 4096

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)
        self._tags: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def _tag(self, password: str) -> bytes:
        return hmac.new(self._key, saslprep(password).encode(), "sha256").digest()

    def add(self, verifier: str, password: str) -> None:
        tag = self._tag(password)
        with self._lock:
            self._tags[verifier] = tag
            while len(self._tags) > self.LIMIT:
                self._tags.popitem(last=False)

    def matches(self, verifier: str, password: str) -> bool | None:
        """True/False for a verifier made here, None for one that was not."""
        with self._lock:
            tag = self._tags.get(verifier)
        return None if tag is None else hmac.compare_digest(tag, self._tag(password))


_MADE = _Made()


def scram_verifier(password: str, *, iterations: int = 4096, salt: bytes | None = None) -> str:
    """The ``SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`` string PostgreSQL stores."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    stored, server = _stored_and_server_key(password, salt, iterations)
    b64 = base64.b64encode
    verifier = (
        f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}"
        f"${b64(stored).decode()}:{b64(server).decode()}"
    )
    _MADE.add(verifier, password)
    return verifier


def scram_matches(verifier: str, password: str) -> bool:
    """True if *verifier* (as in pg_authid.rolpassword) was made from *password*."""
    known = _MADE.matches(verifier, password)
    if known is not None:
        return known
    try:
        method, rest = verifier.split("$", 1)
        iter_salt, keys = rest.split("$", 1)
        iterations, salt_b64 = iter_salt.split(":", 1)
        stored_b64, _server = keys.split(":", 1)
        salt, stored = base64.b64decode(salt_b64), base64.b64decode(stored_b64)
        count = int(iterations)
    except ValueError:
        return False
    if method != "SCRAM-SHA-256":
        return False
    return hmac.compare_digest(_stored_and_server_key(password, salt, count)[0], stored)


# -- the target ------------------------------------------------------------------------------


def _driver() -> Any:
    try:
        import psycopg
        import psycopg.sql
    except ImportError as exc:
        raise PluginMissing(
            "the postgres target needs psycopg 3: pip install 'keyturn[postgres]'"
        ) from exc
    return psycopg


def _reason(exc: Exception, *values: Secret | None) -> str:
    """The driver's message, last line only, with any secret value blotted out."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return redact(lines[0] if lines else type(exc).__name__, values)


def _idle_usable(conn: Any) -> bool:
    """Worth giving back or taking: open, not broken, outside any transaction, and nothing
    waiting on its socket (an idle connection the server closed or terminated has its
    goodbye there): checked without a round trip."""
    pg = _driver()
    if conn.closed or conn.broken:
        return False
    if conn.info.transaction_status != pg.pq.TransactionStatus.IDLE:
        return False
    readable, _, _ = select.select([conn.fileno()], [], [], 0)
    return not readable


_ADMINS: IdlePool[Any] = IdlePool(close=lambda conn: conn.close(), usable=_idle_usable)


class _Refused(Exception):
    """The server refused this login's password (internal: test() turns it into False)."""


class PostgresTarget(Target):
    """Rotates the password of a PostgreSQL login role (``single`` or ``alternating``)."""

    name = "postgres"
    max_active_secrets = 1
    strategies = ("single", "alternating")
    password_rules = PasswordRules(length=32, alphabet="urlsafe", forbid=DSN_UNSAFE)
    config_model = PostgresConfig
    config: PostgresConfig
    # May the admin read pg_authid (superusers only)? Learnt at the first look at a role.
    _authid: bool | None = None

    # -- connections ----------------------------------------------------------------------

    def _where(self, user: str) -> str:
        return f"PostgreSQL at {self.config.host}:{self.config.port} (role {user!r})"

    def _open(self, user: str, password: Secret) -> psycopg.Connection[Any]:
        """A new connection as *user*; connection errors mapped to keyturn errors, here."""
        pg = _driver()
        cfg = self.config
        try:
            return pg.connect(  # type: ignore[no-any-return]
                host=cfg.host,
                port=cfg.port,
                dbname=cfg.dbname,
                user=user,
                password=password.reveal(),
                connect_timeout=cfg.connect_timeout,
                sslmode=cfg.sslmode,
                sslrootcert=cfg.sslrootcert,
                application_name="keyturn",
                autocommit=True,
            )
        except pg.OperationalError as exc:
            reason = _reason(exc, password)
            if any(marker in reason for marker in _REFUSED):
                raise _Refused(reason) from None
            if "no pg_hba.conf entry" in reason:
                raise TargetRejected(
                    f"{self._where(user)} does not let this login in: {reason}"
                ) from None
            raise TargetUnreachable(f"cannot reach {self._where(user)}: {reason}") from None

    @contextmanager
    def _connect(
        self, user: str, password: Secret, *, keep: bool = False
    ) -> Iterator[psycopg.Connection[Any]]:
        """A connection as *user*; driver errors mapped to keyturn errors once, here.
        *keep*: an admin connection, taken from and given back to the process's idle pool
        (keyturn.targets.pool); a login that proves a value is always a fresh one."""
        pg = _driver()
        key = self._pool_key(user, password) if keep else None
        conn = _ADMINS.take(key) if key else None
        if conn is None:
            conn = self._open(user, password)
        try:
            yield conn
        except pg.OperationalError as exc:
            conn.close()
            raise TargetUnreachable(f"lost {self._where(user)}: {_reason(exc, password)}") from None
        except pg.Error as exc:
            conn.close()
            raise TargetRejected(
                f"{self._where(user)} refused the change: {_reason(exc, password)}"
            ) from None
        except BaseException:
            conn.close()
            raise
        if key:
            _ADMINS.give(key, conn)
        else:
            conn.close()

    def _pool_key(self, user: str, password: Secret) -> tuple[object, ...]:
        cfg = self.config
        where = (cfg.host, cfg.port, cfg.dbname, cfg.sslmode, cfg.sslrootcert)
        return (*where, user, digest(password.reveal()))

    def _has_admin(self, account: Account | None = None) -> bool:
        """Does an admin change *account*'s password? Not when the admin is that very login
        (the admin credential rotating itself): it then acts with its current value, like a
        login without an admin, so a replay after the change took effect still finds it so.
        """
        cfg = self.config
        if account is not None and cfg.admin_user == account.username:
            return False
        return bool(cfg.admin_user and cfg.admin_password)

    @contextmanager
    def _admin(self, account: Account, current: Secret | None) -> Iterator[psycopg.Connection[Any]]:
        """The connection that changes passwords: the admin, else the login itself."""
        cfg = self.config
        if self._has_admin(account):
            assert cfg.admin_user and cfg.admin_password
            user, password = cfg.admin_user, self.context.resolve(cfg.admin_password)
            hint = f"check admin_password ({cfg.admin_password})"
        elif current is not None:
            user, password, hint = account.username, current, "is the current value still valid?"
        else:
            raise ConfigInvalid(
                f"the postgres target {cfg.host}:{cfg.port} needs admin_user and admin_password "
                f"to change {account.username!r} without its current password"
            )
        try:
            with self._connect(user, password, keep=True) as conn:
                yield conn
        except _Refused as exc:
            raise TargetRejected(f"{self._where(user)} refused the login: {exc}; {hint}") from None

    # -- helpers --------------------------------------------------------------------------

    def _role(self, conn: psycopg.Connection[Any], role: str) -> tuple[bool, str | None] | None:
        """(can log in, stored verifier or None when unreadable), or None if no such role."""
        pg = _driver()
        if self._authid is not False:
            # Only superusers may read pg_authid; without it, keyturn asks the server instead.
            try:
                found = conn.execute(
                    "SELECT rolcanlogin, rolpassword FROM pg_authid WHERE rolname = %s", (role,)
                ).fetchone()
            except pg.errors.InsufficientPrivilege:
                self._authid = False
            else:
                self._authid = True
                return None if found is None else (bool(found[0]), found[1])
        row = conn.execute(
            "SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", (role,)
        ).fetchone()
        return None if row is None else (bool(row[0]), None)

    def _accepts(
        self,
        conn: psycopg.Connection[Any],
        account: Account,
        value: Secret,
        role: tuple[bool, str | None] | Literal["ask"] | None = "ask",
    ) -> bool:
        """Does the role exist, may it log in, and is *value* its password? (*role*: what
        `_role` found already.)"""
        if role == "ask":
            role = self._role(conn, account.username)
        if role is None or not role[0]:
            return False
        if role[1] is not None:
            return scram_matches(role[1], value.reveal())
        return self.test(account, value)

    def _set_password(
        self, conn: psycopg.Connection[Any], role: str, value: Secret, *, create: bool
    ) -> None:
        sql = _driver().sql
        verifier = scram_verifier(value.reveal(), iterations=self.config.scram_iterations)
        verb = "CREATE" if create else "ALTER"
        # A role may change its own password but not its LOGIN attribute.
        login = " LOGIN" if self._has_admin(Account(role)) else ""
        conn.execute(
            sql.SQL(verb + " ROLE {} WITH" + login + " PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(verifier)
            )
        )

    def _join_owner(self, conn: psycopg.Connection[Any], role: str) -> None:
        """Make *role* a member of the owner role that act as it at login (idempotent)."""
        owner = self.config.owner_role
        if not owner:
            return
        sql = _driver().sql
        if self._role(conn, owner) is None:
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(owner)))
        conn.execute(sql.SQL("ALTER ROLE {} INHERIT").format(sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(owner), sql.Identifier(role)))
        conn.execute(
            sql.SQL("ALTER ROLE {} SET role = {}").format(sql.Identifier(role), sql.Literal(owner))
        )

    # -- verbs ----------------------------------------------------------------------------

    def set(self, account: Account, new: Secret, current: Secret | None) -> None:
        """Give the login *new* as its password and let it log in.

        A missing login is created when ``owner_role`` is set (the clone of ``alternating``),
        as a member of that role. Returns at once when the login already accepts *new*.
        """
        # Without an admin keyturn logs in with the current value, which a replay no longer
        # has: ask with the new one first.
        if not self._has_admin(account) and self.test(account, new):
            return
        with self._admin(account, current) as conn:
            role = self._role(conn, account.username)
            if self._has_admin(account) and self._accepts(conn, account, new, role):
                return
            if role is None and not self.config.owner_role:
                raise TargetRejected(
                    f"{self._where(account.username)} has no such role; create it, or set "
                    "owner_role so keyturn creates alternating logins"
                )
            self._set_password(conn, account.username, new, create=role is None)
            self._join_owner(conn, account.username)

    def test(self, account: Account, value: Secret) -> bool:
        """Log in as the login with *value* and run ``SELECT 1``.

        A server that let the login in without asking for a password (pg_hba.conf ``trust``,
        ``peer``, ``ident``) proves nothing about *value*: that is TargetRejected, with the
        reason, rather than a True that would let every value pass.
        """
        try:
            with self._connect(account.username, value) as conn:
                conn.execute("SELECT 1").fetchone()
                checked = conn.pgconn.used_password
        except _Refused:
            return False
        if not checked:
            raise TargetRejected(
                f"{self._where(account.username)} does not check passwords: it let the login "
                "in without asking for one (pg_hba.conf method trust, peer or ident), so no "
                "value can be proven to work or the old one to be refused; use scram-sha-256 "
                "for this login in pg_hba.conf"
            )
        return True

    def test_pair(
        self, new: tuple[Account, Secret], old: tuple[Account, Secret] | None
    ) -> tuple[bool, bool | None]:
        """Both logins at once: each is a fresh connection of its own (``test`` shares
        nothing between calls), and most of a login is waiting on the server's SCRAM work.
        Answers and errors as `Target.test_pair`'s, *new*'s first."""
        if old is None:
            return super().test_pair(new, old)
        try:
            return self._test_both(new, old)
        except TargetUnreachable:
            # Two logins of one role at once may meet a connection limit (the role's
            # CONNECTION LIMIT, the server's max_connections) that one at a time does not:
            # the answer is then the sequential one, as if they had not overlapped.
            return super().test_pair(new, old)

    def _test_both(
        self, new: tuple[Account, Secret], old: tuple[Account, Secret]
    ) -> tuple[bool, bool | None]:
        found: list[bool | BaseException] = []

        def try_old() -> None:
            try:
                found.append(self.test(*old))
            except BaseException as exc:  # given back below, after *new*'s answer
                found.append(exc)

        thread = threading.Thread(target=try_old, name="keyturn-pg-test", daemon=True)
        thread.start()
        try:
            accepted = self.test(*new)
        finally:
            thread.join()
        if not accepted:
            return False, None
        if isinstance(found[0], BaseException):
            raise found[0]
        return True, found[0]

    def revoke(self, account: Account, old: Secret) -> None:
        """Disable the login if it still accepts *old* (``alternating``: ``NOLOGIN``).

        Under ``single`` the old value stopped working when ``set`` replaced it, so there is
        nothing left to do. Open sessions are not terminated.
        """
        if not self._has_admin(account) and not self.test(account, old):
            return  # single without an admin: nothing to check beyond the login itself
        with self._admin(account, None) as conn:
            if not self._accepts(conn, account, old):
                return
            sql = _driver().sql
            conn.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(account.username)))

    def ensure(self, account: Account, value: Secret) -> bool:
        """Create the login with *value* (and join ``owner_role``) unless it exists.

        Without an admin (the admin credential rotating itself) keyturn cannot create a role,
        but a login that already accepts *value* needs nothing: say so instead of failing.
        """
        if not self._has_admin(account) and self.test(account, value):
            return False
        with self._admin(account, None) as conn:
            if self._role(conn, account.username) is not None:
                if self.config.owner_role:  # alternating (owner_role is its setting)
                    self._adopt(conn, account.username)
                return False
            self._set_password(conn, account.username, value, create=True)
            self._join_owner(conn, account.username)
            return True

    # -- alternating: adopting an existing login --------------------------------------------

    def _owned(self, conn: psycopg.Connection[Any], role: str) -> dict[str, int]:
        """Objects *role* owns, counted per database ("" for shared ones: databases)."""
        rows = conn.execute(
            "SELECT coalesce(d.datname, ''), count(*) FROM pg_shdepend s "
            "JOIN pg_roles r ON r.oid = s.refobjid LEFT JOIN pg_database d ON d.oid = s.dbid "
            "WHERE s.deptype = 'o' AND r.rolname = %s GROUP BY 1",
            (role,),
        ).fetchall()
        return {str(db): int(n) for db, n in rows}

    def _adopt(self, conn: psycopg.Connection[Any], login: str) -> None:
        """An existing login joins ``owner_role``, its objects first handed to that role:
        once it acts as the owner role at login, what it owned alone would be out of reach of
        the other login, and of itself. Objects in another database cannot be moved from
        here: refuse, with the statement to run there."""
        owner = self.config.owner_role
        assert owner
        sql = _driver().sql
        reassign = sql.SQL("REASSIGN OWNED BY {} TO {}").format(
            sql.Identifier(login), sql.Identifier(owner)
        )
        owned = self._owned(conn, login)
        elsewhere = sorted(db for db in owned if db not in ("", self.config.dbname))
        if elsewhere:
            raise TargetRejected(
                f"{self._where(login)} owns objects in database(s) {', '.join(elsewhere)}; "
                f"alternating hands them to owner_role {owner!r}: run "
                f"`{reassign.as_string(conn)};` in each of them, then apply again"
            )
        self._join_owner(conn, login)
        if owned:
            conn.execute(reassign)

    def findings(self, logins: list[str], account: Account, value: Secret) -> list[str]:
        """`verify`: objects that belong to a login instead of ``owner_role`` (made under
        ``SET ROLE NONE``, or before the login was adopted), out of the other login's reach."""
        owner = self.config.owner_role
        if not owner:  # only alternating pairs have an owner role
            return []
        out = []
        with self._admin(account, value) as conn:
            for login in logins:
                for db, count in sorted(self._owned(conn, login).items()):
                    where = f"database {db}" if db else "shared objects"
                    out.append(
                        f"{count} object(s) in {where} belong to {login!r}, not {owner!r}: "
                        f'run REASSIGN OWNED BY "{login}" TO "{owner}" there'
                    )
        return out
