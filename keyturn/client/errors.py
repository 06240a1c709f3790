"""Is this exception an authentication failure? Ready-made predicates for the usual drivers.

`use()` falls back to another value only on an authentication failure: any other error (a
network outage, a bad query) is raised at once, so a fallback never hides a real problem and
never spends a failed login. A *temporary* failure (`TEMPORARY`: the server could not judge
the value, SMTP 454) is retried with the same value a bounded number of times (`Retry`).
Each predicate looks at the exception's class name and codes only, so none of these drivers
has to be installed.
"""

from __future__ import annotations

from collections.abc import Callable

Predicate = Callable[[BaseException], bool]

# PostgreSQL SQLSTATEs: 28P01 invalid_password, 28000 invalid_authorization_specification.
_PG_STATES = {"28P01", "28000"}
# MySQL / MariaDB: 1045 access denied (bad password), 1698 access denied (no password/plugin).
_MYSQL_CODES = {1045, 1698}


def _chain(exc: BaseException) -> list[BaseException]:
    found, seen = [], set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        found.append(current)
        current = current.__cause__ or current.__context__
    return found


def psycopg(exc: BaseException) -> bool:
    """psycopg 3 (and psycopg2): a refused password is an OperationalError whose sqlstate is
    28P01; psycopg 3 does not always carry the state on connect, so its message is read."""
    for e in _chain(exc):
        state = getattr(e, "sqlstate", None) or getattr(e, "pgcode", None)
        if state in _PG_STATES:
            return True
        if type(e).__name__ == "OperationalError" and "password authentication failed" in str(e):
            return True
    return False


def pymysql(exc: BaseException) -> bool:
    """PyMySQL: OperationalError(1045, "Access denied for user ...")."""
    for e in _chain(exc):
        args = getattr(e, "args", ())
        if type(e).__name__ == "OperationalError" and args and args[0] in _MYSQL_CODES:
            return True
    return False


def redis(exc: BaseException) -> bool:
    """redis-py: AuthenticationError, or WRONGPASS in a ResponseError from AUTH."""
    for e in _chain(exc):
        if type(e).__name__ in ("AuthenticationError", "AuthenticationWrongNumberOfArgsError"):
            return True
        if type(e).__name__ == "ResponseError" and str(e).startswith(("WRONGPASS", "NOAUTH")):
            return True
    return False


def smtplib(exc: BaseException) -> bool:
    """smtplib: SMTPAuthenticationError 535 (credentials invalid). A 454 (temporary
    authentication failure: the server's auth service is down or slow) says nothing about
    the value, so another value is not tried; `smtplib_temporary` has it retried."""
    return any(
        type(e).__name__ == "SMTPAuthenticationError" and getattr(e, "smtp_code", None) == 535
        for e in _chain(exc)
    )


def smtplib_temporary(exc: BaseException) -> bool:
    """smtplib: 454 4.7.0 "Temporary authentication failure" (RFC 4954): the server could not
    check the value now (Dovecot's auth delayed past Postfix's 10 s wait, its auth service
    down). Not MailU's 451 4.3.2 rate limit: its window is an hour, a retry cannot help."""
    return any(
        type(e).__name__ == "SMTPAuthenticationError" and getattr(e, "smtp_code", None) == 454
        for e in _chain(exc)
    )


def http(exc: BaseException) -> bool:
    """An HTTP error whose status is 401 or 403 (httpx.HTTPStatusError, requests'
    HTTPError, urllib's HTTPError)."""
    for e in _chain(exc):
        response = getattr(e, "response", None)
        status = getattr(response, "status_code", None) or getattr(e, "code", None)
        if status in (401, 403):
            return True
    return False


def any_of(*predicates: Predicate) -> Predicate:
    """True when one of *predicates* is."""

    def check(exc: BaseException) -> bool:
        return any(p(exc) for p in predicates)

    return check


ALL = any_of(psycopg, pymysql, redis, smtplib, http)
# Failures worth one more try with the same value (the default of `Retry.on`).
TEMPORARY = any_of(smtplib_temporary)

__all__ = [
    "ALL",
    "TEMPORARY",
    "Predicate",
    "any_of",
    "http",
    "psycopg",
    "pymysql",
    "redis",
    "smtplib",
    "smtplib_temporary",
]
