"""`keyturn scan --rotate-leaked` on a real target: Postfix + Dovecot from Debian packages
(scripts/services). Postfix hands SMTP AUTH to Dovecot, which checks the passwd-files keyturn
writes, so "the old value is refused" is a real SMTP login refused with 535.

Each test uses a fresh random user, removed afterwards, so tests share the files.
"""

from __future__ import annotations

import json
import os
import secrets
import smtplib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from keyturn.db import repo
from keyturn.db.models import AuditEntry
from keyturn.domain.model import Secret
from keyturn.targets.base import TargetContext
from keyturn.targets.dovecot import DovecotTarget
from tests.scan.conftest import sqlite_pass_only
from tests.support.keyturn import Harness


@dataclass(frozen=True)
class Mail:
    host: str
    port: int
    passwd: Path
    passwd2: Path

    def login(self, user: str, value: str) -> bool:
        with smtplib.SMTP(self.host, self.port, timeout=10) as client:
            client.ehlo()
            try:
                client.login(user, value)
            except smtplib.SMTPAuthenticationError as exc:
                assert exc.smtp_code == 535
                return False
            return True


@pytest.fixture(scope="module")
def mail() -> Mail:
    names = ("KEYTURN_TEST_SMTP_HOST", "KEYTURN_TEST_SMTP_PORT", "KEYTURN_TEST_PASSWD_FILE")
    if not all(os.environ.get(n) for n in (*names, "KEYTURN_TEST_PASSWD_FILE2")):
        pytest.fail("Postfix/Dovecot settings missing: run scripts/services, source .test-env")
    return Mail(
        os.environ["KEYTURN_TEST_SMTP_HOST"],
        int(os.environ["KEYTURN_TEST_SMTP_PORT"]),
        Path(os.environ["KEYTURN_TEST_PASSWD_FILE"]),
        Path(os.environ["KEYTURN_TEST_PASSWD_FILE2"]),
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


def setup(kt: Harness, mail: Mail, user: str, strategy: str, grace: str) -> str:
    secondary = f'secondary_path = "{mail.passwd2}"' if strategy == "dual" else ""
    kt.write(
        "keyturn.toml",
        f"""
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
owner = "platform-team"
policy = "smtp"
target = "acme-mail"
strategy = "{strategy}"
username = "{user}"
initial_secret = "env:ACME_SMTP_INITIAL"
""",
    )
    initial = "kt-" + secrets.token_urlsafe(24)
    assert kt.cli("apply", "keyturn.toml", env={"ACME_SMTP_INITIAL": initial}).code == 0
    assert mail.login(user, initial)
    return initial


def value_in(kt: Harness, state: str) -> str:
    with kt.app.db.read() as session:
        version = next(v for v in repo.versions(session, "acme/smtp-admin") if v.state == state)
        return kt.app.vault.reveal(version).reveal()


def audit(kt: Harness) -> list[AuditEntry]:
    with kt.app.db.read() as session:
        return list(session.execute(select(AuditEntry).order_by(AuditEntry.seq)).scalars())


def plant(kt: Harness, value: str) -> None:
    src = kt.home / "app"
    src.mkdir(exist_ok=True)
    (src / "settings.py").write_text(
        'EMAIL_HOST = "smtp.example.com"\nEMAIL_HOST_USER = "admin"\n'
        f'EMAIL_HOST_PASSWORD = "{value}"\n'
    )


def test_current_value_found_is_rotated_and_refused_after(
    kt: Harness, mail: Mail, user: str
) -> None:
    leaked = setup(kt, mail, user, "single", grace="7d")
    plant(kt, leaked)
    result = kt.cli("scan", "app", "--rotate-leaked", "--detector", "keyturn", "--json")
    assert result.code == 1, result.err  # the finding is still in the file
    data = json.loads(result.out)
    [rotation] = data["rotations"]
    assert rotation["status"] == "done" and rotation["versions"] == [1]
    new = value_in(kt, "current")
    assert new != leaked
    assert not mail.login(user, leaked)
    assert mail.login(user, new)

    entries = audit(kt)
    [found] = [e for e in entries if e.action == "credential.leak"]
    assert found.details["locations"][0]["path"] == "app/settings.py"
    assert found.details["locations"][0]["line"] == 3
    assert "app/settings.py:3" in (found.reason or "")
    with kt.app.db.read() as session:
        assert found.fingerprint == repo.version_number(session, "acme/smtp-admin", 1).fingerprint
    [start] = [e for e in entries if e.action == "rotation.start" and e.seq > found.seq]
    assert start.details["trigger"] == "leak" and "app/settings.py:3" in (start.reason or "")
    assert any(e.action == "rotation.revoke" and e.details.get("old_rejected") for e in entries)
    written = json.dumps([[e.reason, e.details] for e in entries], default=str) + result.out
    assert leaked not in written and new not in written and leaked not in result.err


@sqlite_pass_only
def test_previous_value_found_cuts_the_grace_short(kt: Harness, mail: Mail, user: str) -> None:
    initial = setup(kt, mail, user, "dual", grace="7d")
    assert kt.cli("rotate", "acme/smtp-admin", "--reason", "scheduled").code == 0
    current = value_in(kt, "current")
    assert mail.login(user, initial) and mail.login(user, current)  # both, during the grace
    plant(kt, initial)
    result = kt.cli("scan", "app", "--rotate-leaked", "--detector", "keyturn")
    assert result.code == 1, result.err
    assert "grace cut short, previous value revoked" in result.out
    assert not mail.login(user, initial)
    assert mail.login(user, current)  # the current value was not leaked: it stays
    assert value_in(kt, "current") == current
    assert initial not in result.out + result.err
