"""`keyturn demo`: seed 000 end to end on the embedded default, with no server to set up.

Three tenants each have an SMTP admin password on a local mail server that really checks
passwords (a Dovecot passwd-file behind a loopback SMTP listener). The clock is moved so that
one credential is past its 180 days and one is inside its 7-day notice window; the daily
02:00 pass runs; the notice and completion e-mails land in local mailboxes; a message is sent
with the rotated password; the audit trail is printed and verified.
"""

from __future__ import annotations

import os
import secrets
import shutil
import smtplib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path

from sqlalchemy import update

from keyturn.app import Keyturn, initialise
from keyturn.audit import log as audit
from keyturn.db import repo
from keyturn.db.models import Version, utcnow
from keyturn.domain.errors import UsageError
from keyturn.domain.model import Secret, VersionState
from keyturn.inventory import apply as applier
from keyturn.inventory.spec import parse
from keyturn.mailserver import MailServer
from keyturn.runtime import value_of
from keyturn.scheduler.worker import TickResult, Worker
from keyturn.settings import Settings

MARKER = ".keyturn-demo"
TENANTS = {"acme": 181, "globex": 175, "initech": 20}  # days since the last rotation

INVENTORY = """\
[channels.mail]
type = "email"
host = "127.0.0.1"
port = {relay_port}
tls = "none"
sender = "keyturn@platform.example"

[tenants.acme]
recipients = ["admins@acme.example"]
[tenants.globex]
recipients = ["admins@globex.example"]
[tenants.initech]
recipients = ["admins@initech.example"]

[policies.smtp]
max_age = "180d"
notice = "7d"
grace = "0s"
recipients = ["platform-admins@platform.example"]

[targets.mail]
type = "passwd-file"
path = "mail/passwd"
"""

CREDENTIAL = """
[[credentials]]
id = "{tenant}/smtp-admin"
tenant = "{tenant}"
kind = "smtp"
owner = "{tenant}-it"
purpose = "SMTP admin account of {tenant}'s MailU server"
policy = "smtp"
target = "mail"
username = "admin@{tenant}.example"
strategy = "single"
initial_secret = "env:DEMO_{upper}_PASSWORD"
"""


@dataclass
class DemoResult:
    tick: TickResult
    rotated: list[str]
    noticed: list[str]
    mails: dict[str, list[str]]
    sent_with_new: bool
    old_refused: bool
    audit_ok: bool
    audit_entries: int


def prepare_dir(path: Path) -> Path:
    if path.exists() and any(path.iterdir()):
        if not (path / MARKER).exists():
            raise UsageError(
                f"{path} exists and is not a keyturn demo directory; choose another with --dir"
            )
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / MARKER).write_text("made by `keyturn demo`; safe to delete\n")
    return path.resolve()


def smtp_login(port: int, user: str, value: Secret) -> bool:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        try:
            smtp.login(user, value.reveal())
        except smtplib.SMTPAuthenticationError:
            return False
    return True


def send_with(port: int, user: str, value: Secret, to: str) -> None:
    message = EmailMessage()
    message["From"], message["To"] = user, to
    message["Subject"] = "Hello from the rotated account"
    message.set_content("Sent after keyturn rotated this account's password.\n")
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.login(user, value.reveal())
        smtp.send_message(message)


def run(directory: Path, say: Callable[[str], None]) -> tuple[Keyturn, MailServer, DemoResult]:
    home = prepare_dir(directory)
    settings = Settings(
        db=f"sqlite:///{home / 'keyturn.db'}",
        master_key_file=str(home / "keyturn.key"),
        lease_seconds=30,
    )
    initialise(Settings(db=settings.db))
    app = Keyturn.open(settings)
    (home / "mail").mkdir(exist_ok=True)  # the passwd-file target makes no folders
    server = MailServer(home / "mail" / "passwd", home / "mail" / "boxes").start()
    say(
        f"mail server on 127.0.0.1:{server.submission_port} (AUTH against mail/passwd), "
        f"relay on :{server.relay_port}"
    )

    text = INVENTORY.format(relay_port=server.relay_port) + "".join(
        CREDENTIAL.format(tenant=t, upper=t.upper()) for t in TENANTS
    )
    (home / "keyturn.toml").write_text(text)
    initial = {t: Secret(secrets.token_urlsafe(24)) for t in TENANTS}
    for tenant, value in initial.items():
        os.environ[f"DEMO_{tenant.upper()}_PASSWORD"] = value.reveal()
    try:
        applied = applier.apply(app, parse(text, "keyturn.toml"), home, actor="demo")
    finally:
        for tenant in TENANTS:
            os.environ.pop(f"DEMO_{tenant.upper()}_PASSWORD", None)
    say(
        f"applied keyturn.toml: {len(applied.changes)} changes, "
        f"{len(applied.provisioned)} accounts provisioned on the mail server"
    )

    _age(app, say)
    tick = Worker(app).tick()
    rotated = sorted(o.credential_id for o in tick.outcomes if o.status == "done")
    noticed = sorted({c for p in tick.passes for c in p.noticed})

    with app.db.read() as session:
        new = value_of(app, session, "acme/smtp-admin")
    send_with(server.submission_port, "admin@acme.example", new, "admins@globex.example")
    old_refused = not smtp_login(server.submission_port, "admin@acme.example", initial["acme"])
    mails = {box: [str(m["Subject"]) for m in server.messages(box)] for box in server.mailboxes()}
    with app.db.read() as session:
        verified = audit.verify(session)
    return (
        app,
        server,
        DemoResult(tick, rotated, noticed, mails, True, old_refused, verified.ok, verified.count),
    )


def _age(app: Keyturn, say: Callable[[str], None]) -> None:
    """Move the clock: pretend each tenant's password was set N days ago."""
    now = utcnow()
    with app.db.write() as session:
        for tenant, days in TENANTS.items():
            cred_id = f"{tenant}/smtp-admin"
            session.execute(
                update(Version)
                .where(Version.credential_id == cred_id, Version.state == VersionState.CURRENT)
                .values(
                    activated_at=now - timedelta(days=days), created_at=now - timedelta(days=days)
                )
            )
            session.flush()
            session.expire_all()
            repo.refresh_due(session, repo.get_credential(session, cred_id))
            audit.append(
                session,
                actor="demo",
                action="demo.clock",
                credential_id=cred_id,
                tenant_id=tenant,
                details={"age_days": days},
            )
    say("clock moved: " + ", ".join(f"{t} {d} days old" for t, d in TENANTS.items()))
