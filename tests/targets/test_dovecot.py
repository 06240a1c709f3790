"""Postfix + Dovecot from Debian packages (scripts/services): rotate through keyturn, then log
in over SMTP AUTH and send a message that must land in the test Maildir.

Postfix (127.0.0.1:KEYTURN_TEST_SMTP_PORT) hands AUTH to Dovecot SASL, which checks
KEYTURN_TEST_PASSWD_FILE, then KEYTURN_TEST_PASSWD_FILE2 (the `dual` passdb). Each test uses a
fresh random user, so tests share the files without seeing each other.
"""

from __future__ import annotations

import json
import os
import secrets
import smtplib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from email import message_from_bytes
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import update

from keyturn.db import repo
from keyturn.db.models import Rotation, utcnow
from keyturn.domain.model import Secret
from keyturn.targets.base import Account, TargetContext
from keyturn.targets.dovecot import DovecotTarget
from tests.support.keyturn import Harness

WORKER = {"KEYTURN_WORKER_ID": "worker-1"}


@dataclass
class Mail:
    host: str
    port: int
    passwd: Path
    passwd2: Path
    maildir: Path

    def login(self, user: str, value: str) -> bool:
        with smtplib.SMTP(self.host, self.port, timeout=10) as client:
            client.ehlo()
            try:
                client.login(user, value)
            except smtplib.SMTPAuthenticationError as exc:
                assert exc.smtp_code == 535
                return False
            return True

    def send(self, user: str, value: str) -> str:
        """Send a message as *user* to itself; returns its unique subject."""
        subject = f"keyturn test {secrets.token_hex(8)}"
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = user, user, subject
        msg.set_content("sent with the rotated credential")
        with smtplib.SMTP(self.host, self.port, timeout=10) as client:
            client.login(user, value)
            client.send_message(msg)
        return subject

    def delivered(self, subject: str, to: str, timeout: float = 20) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for path in (self.maildir / "new").glob("*"):
                message = message_from_bytes(path.read_bytes())
                if message["Subject"] == subject and message["To"] == to:
                    return True
            time.sleep(0.2)
        return False


@pytest.fixture(scope="session")
def mail() -> Mail:
    names = ["HOST", "PORT", "PASSWD_FILE", "PASSWD_FILE2", "MAILDIR"]
    values = {
        n: os.environ.get(
            f"KEYTURN_TEST_SMTP_{n}" if n in ("HOST", "PORT") else f"KEYTURN_TEST_{n}"
        )
        for n in names
    }
    if not all(values.values()):
        pytest.fail("Postfix/Dovecot settings missing: run scripts/services, then source .test-env")
    return Mail(
        host=str(values["HOST"]),
        port=int(str(values["PORT"])),
        passwd=Path(str(values["PASSWD_FILE"])),
        passwd2=Path(str(values["PASSWD_FILE2"])),
        maildir=Path(str(values["MAILDIR"])),
    )


@pytest.fixture
def user(mail: Mail) -> Iterator[str]:
    name = f"u{secrets.token_hex(5)}@acme.test"
    yield name
    target = DovecotTarget.from_settings(
        {"path": str(mail.passwd), "secondary_path": str(mail.passwd2)},
        TargetContext(resolve=lambda ref: Secret("")),
    )
    assert isinstance(target, DovecotTarget)
    with target._locked():
        for path in target.files:
            entries = target._read(path)
            if entries.pop(name, None) is not None:
                target._write(path, entries)


def inventory(mail: Mail, user: str, strategy: str, grace: str) -> str:
    secondary = f'secondary_path = "{mail.passwd2}"' if strategy == "dual" else ""
    return f"""
[policies.smtp]
max_age = "180d"
grace = "{grace}"

[targets.acme-mail]
type = "dovecot"
path = "{mail.passwd}"
{secondary}
smtp_host = "{mail.host}"
smtp_port = {mail.port}
smtp_tls = "none"

[[credentials]]
id = "acme/smtp-admin"
tenant = "acme"
kind = "smtp"
policy = "smtp"
target = "acme-mail"
strategy = "{strategy}"
username = "{user}"
initial_secret = "env:ACME_SMTP_INITIAL"
"""


def setup(kt: Harness, mail: Mail, user: str, strategy: str, grace: str = "0s") -> str:
    initial = "kt-" + secrets.token_urlsafe(24)
    kt.write("keyturn.toml", inventory(mail, user, strategy, grace))
    result = kt.cli("apply", "keyturn.toml", env={"ACME_SMTP_INITIAL": initial})
    assert result.code == 0, result.err
    assert mail.login(user, initial), "apply should have provisioned the user"
    return initial


def rotate(kt: Harness) -> dict:  # type: ignore[type-arg]
    result = kt.cli("rotate", "acme/smtp-admin", "--reason", "180 days", "--json")
    assert result.out.strip(), result.err
    return json.loads(result.out)[0]  # type: ignore[no-any-return]


def current(kt: Harness) -> str:
    with kt.app.db.read() as session:
        version = next(v for v in repo.versions(session, "acme/smtp-admin") if v.state == "current")
        return kt.app.vault.reveal(version).reveal()


def test_single_rotation_new_value_sends_mail_old_is_refused(
    kt: Harness, mail: Mail, user: str
) -> None:
    initial = setup(kt, mail, user, "single")
    assert rotate(kt)["status"] == "done"
    new = current(kt)
    assert new != initial
    assert mail.login(user, new)
    assert not mail.login(user, initial)
    subject = mail.send(user, new)
    assert mail.delivered(subject, user)
    with pytest.raises(smtplib.SMTPAuthenticationError):
        mail.send(user, initial)


def test_dual_both_work_until_revoke_then_only_the_new(kt: Harness, mail: Mail, user: str) -> None:
    initial = setup(kt, mail, user, "dual", grace="7d")
    assert rotate(kt)["status"] == "waiting"
    new = current(kt)
    # The new value went into the second passdb; Dovecot tries it after the first.
    assert user in mail.passwd2.read_text() and user in mail.passwd.read_text()
    assert mail.login(user, new) and mail.login(user, initial)
    assert mail.delivered(mail.send(user, initial), user)
    assert mail.delivered(mail.send(user, new), user)

    with kt.app.db.write() as session:
        session.execute(update(Rotation).values(wait_until=utcnow() - timedelta(seconds=1)))
    assert kt.cli("resume", "acme/smtp-admin").code == 0
    assert mail.login(user, new)
    assert not mail.login(user, initial)
    assert mail.delivered(mail.send(user, new), user)


def test_dual_crash_before_revoke_then_resume(kt: Harness, mail: Mail, user: str) -> None:
    """SIGKILL right before revoke: both values still log in; the restarted worker revokes."""
    initial = setup(kt, mail, user, "dual")
    crashed = kt.spawn(
        "rotate",
        "acme/smtp-admin",
        "--reason",
        "crash",
        env={**WORKER, "KEYTURN_TEST_CRASH_AT": "revoke:before"},
    )
    assert crashed.code < 0, crashed.err
    new = current(kt)
    assert mail.login(user, new) and mail.login(user, initial)
    assert kt.cli("resume", "--now", env=WORKER).code == 0
    assert mail.login(user, new) and not mail.login(user, initial)


def test_target_test_is_a_real_smtp_login(mail: Mail, user: str) -> None:
    target = DovecotTarget.from_settings(
        {
            "path": str(mail.passwd),
            "smtp_host": mail.host,
            "smtp_port": mail.port,
            "smtp_tls": "none",
        },
        TargetContext(resolve=lambda ref: Secret("")),
    )
    value = Secret("kt-" + secrets.token_urlsafe(24))
    assert target.ensure(Account(user), value)
    assert target.test(Account(user), value)
    assert not target.test(Account(user), Secret("wrong"))
    # With Postfix down the answer is unknown, not "refused".
    stopped = DovecotTarget.from_settings(
        {"path": str(mail.passwd), "smtp_host": "127.0.0.1", "smtp_port": 1, "smtp_tls": "none"},
        TargetContext(resolve=lambda ref: Secret("")),
    )
    from keyturn.domain.errors import TargetUnreachable

    with pytest.raises(TargetUnreachable, match=r"127\.0\.0\.1:1\b"):
        stopped.test(Account(user), value)
