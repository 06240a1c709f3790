"""SMTP AUTH as the `test` of every target whose credential logs in to a mail server.

One login per call, with one mechanism (PLAIN or LOGIN): `smtplib.SMTP.login` would try
CRAM-MD5, PLAIN and LOGIN in turn and so burn up to three failed logins on a refusal, and
MailU locks an address range out after five failed logins per hour.

    235            -> accepted (True)
    535            -> refused (False)
    454, 4xx       -> SmtpDeferred, a TargetUnreachable (never taken for a refusal)
    I/O            -> TargetUnreachable (the answer is unknown)
    other 5xx      -> TargetRejected (e.g. 534/538: the server wants TLS or another mechanism)

Messages name the endpoint and the user, never the value. Plain-text SMTP (`smtp_tls = "none"`)
is allowed only on loopback.
"""

from __future__ import annotations

import ipaddress
import os
import smtplib
import ssl
from collections.abc import Callable
from typing import Literal

from pydantic import model_validator

from keyturn.domain.errors import TargetRejected, TargetUnreachable
from keyturn.domain.model import Secret
from keyturn.targets.base import TargetConfig

TlsMode = Literal["starttls", "implicit", "none"]
Mechanism = Literal["plain", "login"]
DEFAULT_PORTS = {"starttls": 587, "implicit": 465, "none": 25}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SmtpSettings(TargetConfig):
    """The SMTP endpoint a target's `test` logs in to (all optional: no host, no SMTP check)."""

    smtp_host: str | None = None
    smtp_port: int | None = None
    smtp_tls: TlsMode = "starttls"
    smtp_auth: Mechanism = "plain"
    # A CA bundle for servers with a private certificate; the system store otherwise.
    smtp_ca_file: str | None = None
    smtp_timeout: float = 10

    @model_validator(mode="after")
    def _plain_only_on_loopback(self) -> SmtpSettings:
        if self.smtp_host and self.smtp_tls == "none" and not is_loopback(self.smtp_host):
            raise ValueError(
                f'smtp_tls = "none" sends the credential in clear text; it is allowed only on '
                f'loopback, not {self.smtp_host}: use "starttls" or "implicit"'
            )
        return self

    def smtp(self, base_dir: str) -> SmtpEndpoint | None:
        """The endpoint, if any; a relative `smtp_ca_file` is taken from *base_dir*."""
        if not self.smtp_host:
            return None
        return SmtpEndpoint(
            host=self.smtp_host,
            port=self.smtp_port or DEFAULT_PORTS[self.smtp_tls],
            tls=self.smtp_tls,
            mechanism=self.smtp_auth,
            ca_file=ca_path(self.smtp_ca_file, base_dir),
            timeout=self.smtp_timeout,
        )


def ca_path(ca_file: str | None, base_dir: str) -> str | None:
    """A CA bundle setting as a path: a relative one is from *base_dir* (the inventory's)."""
    if ca_file is None or os.path.isabs(ca_file):
        return ca_file
    return os.path.join(base_dir, ca_file)


class SmtpEndpoint:
    """Where and how to log in; `login` is the verifier."""

    def __init__(
        self,
        host: str,
        port: int,
        tls: TlsMode = "starttls",
        mechanism: Mechanism = "plain",
        ca_file: str | None = None,
        timeout: float = 10,
    ) -> None:
        if tls == "none" and not is_loopback(host):
            raise TargetRejected(f"SMTP {host}:{port}: plain-text AUTH is allowed only on loopback")
        self.host, self.port, self.tls = host, port, tls
        self.mechanism, self.ca_file, self.timeout = mechanism, ca_file, timeout

    def __repr__(self) -> str:
        return f"<SmtpEndpoint {self}>"

    def __str__(self) -> str:
        return f"smtp://{self.host}:{self.port} ({self.tls})"

    def _context(self) -> ssl.SSLContext:
        """The TLS context; a CA bundle that cannot be used is a settings error, said once
        (not a connection failure to retry)."""
        try:
            return ssl.create_default_context(cafile=self.ca_file)
        except ssl.SSLError as exc:
            raise TargetRejected(
                f"{self}: smtp_ca_file {self.ca_file} holds no usable PEM certificate "
                f"({exc.reason})"
            ) from exc
        except OSError as exc:
            raise TargetRejected(
                f"{self}: cannot read smtp_ca_file {self.ca_file}: {exc.strerror or exc}"
            ) from exc

    def connect(self) -> smtplib.SMTP:
        """An EHLO'd session, encrypted unless `none`. Raises TargetUnreachable."""
        context = self._context() if self.tls != "none" else None
        try:
            if self.tls == "implicit":
                client: smtplib.SMTP = smtplib.SMTP_SSL(
                    self.host, self.port, timeout=self.timeout, context=context
                )
            else:
                client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            client.ehlo()
            if self.tls == "starttls":
                if not client.has_extn("starttls"):
                    client.close()
                    raise TargetRejected(f"{self}: the server does not offer STARTTLS")
                client.starttls(context=context)
                client.ehlo()
        except (OSError, smtplib.SMTPException) as exc:
            raise TargetUnreachable(f"{self}: cannot connect ({type(exc).__name__})") from exc
        return client

    def login(
        self,
        user: str,
        value: Secret,
        what: str = "credential",
        check_source: Callable[[str], None] | None = None,
    ) -> bool:
        """Log in as *user* with *value*: True on 235, False on 535; at most one attempt.

        *check_source*, if given, is called with this side's address of the connection before
        AUTH, and may raise to keep a login that is bound to fail from being made at all.
        """
        client = self.connect()
        try:
            if check_source is not None:
                if client.sock is None:
                    raise TargetUnreachable(f"{self}: the connection closed before AUTH")
                check_source(str(client.sock.getsockname()[0]))
            return self._auth(client, user, value, what)
        finally:
            _quit(client)

    def _auth(self, client: smtplib.SMTP, user: str, value: Secret, what: str) -> bool:
        if not client.has_extn("auth"):
            raise TargetRejected(f"{self}: the server offers no AUTH (is SASL configured?)")
        mech = self.mechanism.upper()
        offered = client.esmtp_features.get("auth", "").upper().split()
        if mech not in offered:
            raise TargetRejected(
                f"{self}: AUTH {mech} is not offered (offered: {' '.join(offered) or 'none'}); "
                "set smtp_auth"
            )
        client.user, client.password = user, value.reveal()
        auth = client.auth_plain if mech == "PLAIN" else client.auth_login
        try:
            code, _ = client.auth(mech, auth, initial_response_ok=True)
        except smtplib.SMTPAuthenticationError as exc:
            return _refusal(self, exc.smtp_code, user, what)
        except (OSError, smtplib.SMTPException) as exc:
            raise TargetUnreachable(
                f"{self}: AUTH as {user} ({what}) got no answer ({type(exc).__name__})"
            ) from exc
        finally:
            client.password = ""
        return code == 235


class SmtpDeferred(TargetUnreachable):
    """The SMTP server deferred the login (a 4xx answer to AUTH); retry later."""

    def __init__(self, message: str, smtp_code: int) -> None:
        super().__init__(message)
        # Which 4xx: a target that knows its server's codes (MailU's 451 rate limit) maps it.
        self.smtp_code = smtp_code


def _refusal(endpoint: SmtpEndpoint, code: int, user: str, what: str) -> bool:
    if code == 535:
        return False
    if 400 <= code < 500:
        raise SmtpDeferred(
            f"{endpoint}: AUTH as {user} ({what}) failed temporarily (SMTP {code}); retry later",
            code,
        )
    raise TargetRejected(f"{endpoint}: AUTH as {user} ({what}) was refused with SMTP {code}")


def _quit(client: smtplib.SMTP) -> None:
    try:
        client.quit()
    except (OSError, smtplib.SMTPException):
        client.close()
