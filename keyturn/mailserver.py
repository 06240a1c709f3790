"""A small SMTP server on loopback that really checks passwords, for the demo and tests.

It authenticates AUTH PLAIN/LOGIN against a Dovecot passwd-file (the same file the
passwd-file target rotates) and delivers every accepted message to a Maildir per recipient.
A second listener without AUTH stands in for the platform's relay that keyturn's own
notifications go through.
"""

from __future__ import annotations

import logging
import mailbox
import socket
import warnings
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from keyturn.domain.model import Secret
from keyturn.targets.base import Account, TargetContext
from keyturn.targets.passwd_file import PasswdFileTarget


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Deliver:
    def __init__(self, maildir: Path) -> None:
        self.maildir = maildir

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        for rcpt in envelope.rcpt_tos:
            self.maildir.mkdir(parents=True, exist_ok=True)
            box = mailbox.Maildir(self.maildir / rcpt.lower(), create=True)
            box.add(message_from_bytes(content))
        return "250 delivered"


class _PasswdFileAuth:
    def __init__(self, passwd_file: Path) -> None:
        self.target = PasswdFileTarget.from_settings(
            {"path": str(passwd_file)}, TargetContext(resolve=lambda ref: Secret(""))
        )

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user = auth_data.login.decode(errors="replace")
        ok = self.target.test(Account(user), Secret(auth_data.password.decode(errors="replace")))
        return AuthResult(success=ok, handled=False)


@dataclass
class MailServer:
    """Submission (AUTH required) and relay (no AUTH) listeners on 127.0.0.1."""

    passwd_file: Path
    maildir: Path
    submission_port: int = 0
    relay_port: int = 0

    def start(self) -> MailServer:
        # Loopback only, by design: AUTH without TLS is what a local test server does.
        logging.getLogger("mail.log").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
        handler = _Deliver(self.maildir)
        self.submission_port = self.submission_port or free_port()
        self.relay_port = self.relay_port or free_port()
        self._submission = Controller(
            handler,
            hostname="127.0.0.1",
            port=self.submission_port,
            auth_required=True,
            auth_require_tls=False,
            authenticator=_PasswdFileAuth(self.passwd_file),
        )
        self._relay = Controller(handler, hostname="127.0.0.1", port=self.relay_port)
        self._submission.start()
        self._relay.start()
        return self

    def stop(self) -> None:
        self._submission.stop()
        self._relay.stop()

    def messages(self, recipient: str) -> list[Message]:
        path = self.maildir / recipient.lower()
        if not path.exists():
            return []
        return list(mailbox.Maildir(path, create=False))

    def mailboxes(self) -> list[str]:
        return sorted(p.name for p in self.maildir.iterdir()) if self.maildir.exists() else []
