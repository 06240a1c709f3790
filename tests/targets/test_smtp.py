"""The shared SMTP verifier against a scripted SMTP server (aiosmtpd) that counts AUTH attempts.

The real Postfix + Dovecot checks are in test_dovecot.py; here the server answers what a test
scripts (accept, refuse, 454, no AUTH), which a real server cannot be made to do on demand.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from keyturn.domain.errors import TargetRejected, TargetUnreachable
from keyturn.domain.model import Secret
from keyturn.targets.smtp import SmtpEndpoint, SmtpSettings
from tests.servers import unused_port

USER = "admin@acme.example"
GOOD = "the-right-Password-123"


@dataclass
class Server:
    port: int = 0
    answer: str | None = None  # a forced reply, e.g. "454 4.7.0 Temporary failure"
    attempts: list[tuple[str, str]] = field(default_factory=list)

    def authenticator(self, server: Any, session: Any, envelope: Any, mech: str, data: Any) -> Any:
        assert isinstance(data, LoginPassword)
        self.attempts.append((mech, data.login.decode()))
        if self.answer:
            return AuthResult(success=False, handled=False, message=self.answer)
        return AuthResult(success=data.password.decode() == GOOD, handled=False)


class _Sink:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 OK"


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server(port=unused_port())
    controller = Controller(
        _Sink(),
        hostname="127.0.0.1",
        port=state.port,
        authenticator=state.authenticator,
        auth_require_tls=False,
    )
    controller.start()
    yield state
    controller.stop()


def endpoint(server: Server, mechanism: str = "plain") -> SmtpEndpoint:
    return SmtpEndpoint("127.0.0.1", server.port, tls="none", mechanism=mechanism)  # type: ignore[arg-type]


@pytest.mark.parametrize("mechanism", ["plain", "login"])
def test_accepted_and_refused_with_one_attempt_each(server: Server, mechanism: str) -> None:
    assert endpoint(server, mechanism).login(USER, Secret(GOOD)) is True
    assert endpoint(server, mechanism).login(USER, Secret("wrong")) is False
    # smtplib's login() would have tried every mechanism on a refusal; one attempt per call.
    assert server.attempts == [(mechanism.upper(), USER)] * 2


@pytest.mark.parametrize(
    ("answer", "error", "fragment"),
    [
        ("454 4.7.0 Temporary authentication failure", TargetUnreachable, "temporarily (SMTP 454)"),
        ("534 5.7.9 Authentication mechanism is too weak", TargetRejected, "refused with SMTP 534"),
        ("538 5.7.11 Encryption required", TargetRejected, "refused with SMTP 538"),
    ],
)
def test_other_answers_are_errors_not_refusals(
    server: Server, answer: str, error: type[Exception], fragment: str
) -> None:
    server.answer = answer
    with pytest.raises(error) as info:
        endpoint(server).login(USER, Secret(GOOD), "password")
    message = str(info.value)
    assert fragment in message and USER in message and f":{server.port}" in message
    assert GOOD not in message
    assert len(server.attempts) == 1


def test_connection_failures_are_unreachable() -> None:
    port = unused_port()
    with pytest.raises(TargetUnreachable, match=f"127.0.0.1:{port}.*cannot connect"):
        SmtpEndpoint("127.0.0.1", port, tls="none").login(USER, Secret(GOOD))


def test_starttls_required_but_not_offered(server: Server) -> None:
    with pytest.raises(TargetRejected, match="does not offer STARTTLS"):
        SmtpEndpoint("127.0.0.1", server.port, tls="starttls").login(USER, Secret(GOOD))
    assert server.attempts == []  # nothing was sent in clear text


def test_a_server_without_auth() -> None:
    port = unused_port()
    controller = Controller(_Sink(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        with pytest.raises(TargetRejected, match="AUTH"):
            SmtpEndpoint("127.0.0.1", port, tls="none").login(USER, Secret(GOOD))
    finally:
        controller.stop()


def test_implicit_tls_to_a_plain_server_is_unreachable(server: Server) -> None:
    with pytest.raises(TargetUnreachable, match="cannot connect"):
        SmtpEndpoint("127.0.0.1", server.port, tls="implicit", timeout=3).login(USER, Secret(GOOD))


@pytest.mark.parametrize(
    ("settings", "ok"),
    [
        ({"smtp_host": "127.0.0.1", "smtp_tls": "none"}, True),
        ({"smtp_host": "localhost", "smtp_tls": "none"}, True),
        ({"smtp_host": "::1", "smtp_tls": "none"}, True),
        ({"smtp_host": "mail.acme.example", "smtp_tls": "none"}, False),
        ({"smtp_host": "10.0.0.5", "smtp_tls": "none"}, False),
        ({"smtp_host": "mail.acme.example", "smtp_tls": "starttls"}, True),
        ({"smtp_host": "mail.acme.example", "smtp_tls": "implicit"}, True),
    ],
)
def test_plain_text_only_on_loopback(settings: dict[str, str], ok: bool) -> None:
    if ok:
        SmtpSettings.model_validate(settings)
    else:
        with pytest.raises(ValueError, match="only on loopback"):
            SmtpSettings.model_validate(settings)
        with pytest.raises(TargetRejected, match="only on loopback"):
            SmtpEndpoint(settings["smtp_host"], 25, tls="none")


def test_default_ports() -> None:
    for tls, port in (("starttls", 587), ("implicit", 465)):
        endpoint = SmtpSettings.model_validate({"smtp_host": "mail.example", "smtp_tls": tls}).smtp(
            "."
        )
        assert endpoint is not None and endpoint.port == port
    assert SmtpSettings().smtp(".") is None


@pytest.mark.parametrize(("content", "fragment"), [(None, "cannot read"), ("junk", "no usable")])
def test_an_unusable_ca_file_is_a_settings_error_not_unreachable(
    server: Server, tmp_path: Path, content: str | None, fragment: str
) -> None:
    """A missing or garbled smtp_ca_file is named, and not retried as a network failure."""
    ca = tmp_path / "ca.pem"
    if content is not None:
        ca.write_text(content)
    for tls in ("starttls", "implicit"):
        point = SmtpEndpoint("127.0.0.1", server.port, tls=tls, ca_file=str(ca))  # type: ignore[arg-type]
        with pytest.raises(TargetRejected, match=fragment) as info:
            point.login(USER, Secret(GOOD))
        assert f"smtp_ca_file {ca}" in str(info.value)
    assert server.attempts == []


def test_a_relative_ca_file_is_taken_from_the_inventory_folder() -> None:
    settings = SmtpSettings.model_validate({"smtp_host": "mail.example", "smtp_ca_file": "ca.pem"})
    endpoint = settings.smtp("/etc/keyturn")
    assert endpoint is not None and endpoint.ca_file == "/etc/keyturn/ca.pem"
    absolute = SmtpSettings.model_validate({"smtp_host": "m.example", "smtp_ca_file": "/x/ca.pem"})
    assert (absolute.smtp("/etc/keyturn") or endpoint).ca_file == "/x/ca.pem"
