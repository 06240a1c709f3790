"""A temporary failure (SMTP 454: the server could not check the value) is tried again with the
same value, a bounded number of times, and spends no failed-login budget; anything else is as
before. The values come from the real `file` store reader; the failures are smtplib's own,
and in the last test a real SMTP server's (aiosmtpd on loopback) answers."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from keyturn.client import AsyncClient, Client, FailureBudget, Retry, Value, errors
from tests.servers import unused_port

NOW = Retry(times=2, delay=0)  # no pause: the test counts tries, not seconds


def _folder(tmp_path: Path) -> Path:
    (tmp_path / "acme").mkdir()
    (tmp_path / "acme" / "mail").write_text("current-value\n")
    (tmp_path / "acme" / "mail.next").write_text("next-value\n")
    return tmp_path


class Server:
    """An SMTP AUTH as a mailer sees it: *answers* in turn (235 once they run out)."""

    def __init__(self, *answers: int) -> None:
        self.answers, self.seen = list(answers), []

    def login(self, value: Value) -> str:
        self.seen.append(value.value)
        if self.answers:
            code = self.answers.pop(0)
            raise smtplib.SMTPAuthenticationError(code, b"4.7.0 Temporary authentication failure")
        return "sent"


def test_a_454_is_tried_again_with_the_same_value(tmp_path: Path) -> None:
    budget = FailureBudget(limit=1, seconds=3600)
    with Client.files(_folder(tmp_path), watch=False, retry=NOW, budget=budget) as client:
        server = Server(454, 454)
        assert client.use("acme/mail", server.login, errors.smtplib) == "sent"
        assert server.seen == ["current-value"] * 3  # never moved to `next` for a 454
        assert client.state.retries == 2 and client.state.fallbacks == 0
        assert client.state.may_fail("acme/mail")  # no failed login was counted


def test_a_454_that_outlasts_the_retries_fails_the_operation(tmp_path: Path) -> None:
    with Client.files(_folder(tmp_path), watch=False, retry=NOW) as client:
        server = Server(454, 454, 454)
        with pytest.raises(smtplib.SMTPAuthenticationError) as caught:
            client.use("acme/mail", server.login, errors.smtplib)
        assert caught.value.smtp_code == 454
        assert server.seen == ["current-value"] * 3


def test_a_refusal_after_a_454_still_falls_back(tmp_path: Path) -> None:
    with Client.files(_folder(tmp_path), watch=False, retry=NOW) as client:
        server = Server(454, 535)
        assert client.use("acme/mail", server.login, errors.smtplib) == "sent"
        assert server.seen == ["current-value", "current-value", "next-value"]
        assert client.state.fallbacks == 1


@pytest.mark.parametrize(
    ("retry", "code"),
    [
        (NOW, 451),  # MailU's rate limit: an hour's window, a retry cannot help
        (None, 454),  # retries turned off
    ],
)
def test_no_retry_when_it_cannot_help(tmp_path: Path, retry: Retry | None, code: int) -> None:
    with Client.files(_folder(tmp_path), watch=False, retry=retry) as client:
        server = Server(code)
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.use("acme/mail", server.login, errors.smtplib)
        assert server.seen == ["current-value"]


def test_the_attempts_loop_retries_too(tmp_path: Path) -> None:
    with Client.files(_folder(tmp_path), watch=False, retry=NOW) as client:
        server = Server(454)
        for attempt in client.attempts("acme/mail", errors.smtplib):
            with attempt as value:
                server.login(value)
        assert server.seen == ["current-value", "current-value"]


def test_the_async_twin_retries_and_stops_as_the_thread_one(tmp_path: Path) -> None:
    async def scenario() -> tuple[list[str], list[str], int]:
        async with AsyncClient.files(_folder(tmp_path), watch=False, retry=NOW) as client:
            once = Server(454)
            assert await client.use("acme/mail", once.login, errors.smtplib) == "sent"
            always = Server(454, 454, 454)
            with pytest.raises(smtplib.SMTPAuthenticationError):
                await client.use("acme/mail", always.login, errors.smtplib)
            return once.seen, always.seen, client.state.retries

    once, always, retries = asyncio.run(scenario())
    assert once == ["current-value"] * 2 and always == ["current-value"] * 3
    assert retries == 3


def test_pauses_double() -> None:
    assert [Retry(delay=0.5).pause(n) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]


class _Deferring:
    """An SMTP server's authenticator: 454 for the first *defer* logins, then the password."""

    def __init__(self, defer: int, password: str) -> None:
        self.defer, self.password, self.seen = defer, password, 0

    def __call__(self, server: SMTP, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        self.seen += 1
        if self.seen <= self.defer:
            return AuthResult(success=False, handled=False, message="454 4.7.0 Temporary failure")
        assert isinstance(data, LoginPassword)
        return AuthResult(success=data.password.decode() == self.password, handled=False)


@pytest.fixture
def deferring() -> Iterator[tuple[int, _Deferring]]:
    auth = _Deferring(defer=2, password="current-value")
    port = unused_port()
    controller = Controller(
        object(), hostname="127.0.0.1", port=port, authenticator=auth, auth_require_tls=False
    )
    controller.start()
    try:
        yield port, auth
    finally:
        controller.stop()


def test_a_real_server_s_454_is_retried_until_it_checks(
    tmp_path: Path, deferring: tuple[int, _Deferring]
) -> None:
    port, auth = deferring

    def login(value: Value) -> int:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as conn:
            conn.ehlo()
            conn.user, conn.password = "app@acme.test", value.value
            return conn.auth("PLAIN", conn.auth_plain)[0]

    with Client.files(_folder(tmp_path), watch=False, retry=NOW) as client:
        assert client.use("acme/mail", login, errors.smtplib) == 235
        assert auth.seen == 3 and client.state.retries == 2 and client.state.fallbacks == 0
