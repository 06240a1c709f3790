"""The authentication-failure predicates, on the drivers' own exceptions."""

from __future__ import annotations

import smtplib

import httpx
import psycopg
import pymysql
import pytest
import redis

from keyturn.client import errors


def _http(status: int) -> httpx.HTTPStatusError:
    request = httpx.Request("GET", "https://api.example/v1")
    return httpx.HTTPStatusError(
        "x", request=request, response=httpx.Response(status, request=request)
    )


PG_REFUSED = psycopg.OperationalError(
    'connection failed: FATAL:  password authentication failed for user "app"'
)
CASES = [
    (errors.psycopg, PG_REFUSED, True),
    (errors.psycopg, psycopg.OperationalError("connection refused"), False),
    (errors.pymysql, pymysql.err.OperationalError(1045, "Access denied for user 'app'"), True),
    (errors.pymysql, pymysql.err.OperationalError(2003, "Can't connect"), False),
    (errors.redis, redis.exceptions.AuthenticationError("invalid username-password pair"), True),
    (errors.redis, redis.exceptions.ResponseError("WRONGPASS invalid username-password"), True),
    (errors.redis, redis.exceptions.ConnectionError("refused"), False),
    (errors.smtplib, smtplib.SMTPAuthenticationError(535, b"5.7.8 failed"), True),
    (errors.smtplib, smtplib.SMTPServerDisconnected("gone"), False),
    (errors.smtplib, smtplib.SMTPAuthenticationError(454, b"4.7.0 Temporary failure"), False),
    (errors.smtplib_temporary, smtplib.SMTPAuthenticationError(454, b"4.7.0 Temporary"), True),
    (errors.smtplib_temporary, smtplib.SMTPAuthenticationError(535, b"5.7.8 failed"), False),
    (errors.smtplib_temporary, smtplib.SMTPAuthenticationError(451, b"4.3.2 rate limit"), False),
    (errors.TEMPORARY, smtplib.SMTPAuthenticationError(454, b"4.7.0 Temporary"), True),
    (errors.TEMPORARY, TimeoutError(), False),
    (errors.http, _http(401), True),
    (errors.http, _http(403), True),
    (errors.http, _http(500), False),
    (errors.ALL, PG_REFUSED, True),
    (errors.ALL, TimeoutError(), False),
]


@pytest.mark.parametrize(("predicate", "exc", "expected"), CASES)
def test_predicate(predicate: errors.Predicate, exc: BaseException, expected: bool) -> None:
    assert predicate(exc) is expected


def test_predicates_follow_the_cause_chain() -> None:
    try:
        try:
            raise smtplib.SMTPAuthenticationError(535, b"failed")
        except smtplib.SMTPException as inner:
            raise RuntimeError("the mailer failed") from inner
    except RuntimeError as outer:
        assert errors.smtplib(outer)
