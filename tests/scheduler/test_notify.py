"""Notifications really delivered: e-mail over SMTP to a local server, webhooks with a
verified HMAC signature; an endpoint that is down gets retries and nothing is lost."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from keyturn.db.models import Notice, Rotation, utcnow
from keyturn.mailserver import MailServer, free_port
from keyturn.notify import deliver
from tests.support.keyturn import Harness

HOOK_SECRET = "webhook-signing-secret-for-tests"


class Hook:
    """A webhook receiver on loopback that records what it gets."""

    def __init__(self, port: int) -> None:
        self.port, self.received = port, []  # type: ignore[var-annotated]
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.received.append((dict(self.headers), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def inventory(relay: int, hook_port: int) -> str:
    return f"""
[channels.mail]
type = "email"
host = "127.0.0.1"
port = {relay}
tls = "none"
sender = "keyturn@platform.example"

[channels.ops]
type = "webhook"
url = "http://127.0.0.1:{hook_port}/hook"
secret = "env:HOOK_SECRET"

[tenants.acme]
recipients = ["admins@acme.example"]

[policies.smtp]
max_age = "180d"
grace = "0s"
recipients = ["webhook:ops"]

[targets.mail]
type = "passwd-file"
path = "mail.passwd"

[[credentials]]
id = "acme/smtp-admin"
kind = "smtp"
policy = "smtp"
target = "mail"
username = "admin@acme.example"
initial_secret = "env:PW"
"""


@pytest.fixture
def mail(tmp_path: Path):  # type: ignore[no-untyped-def]
    server = MailServer(tmp_path / "mail.passwd", tmp_path / "boxes").start()
    yield server
    server.stop()


def test_email_and_webhook_are_delivered_and_signed(
    kt: Harness, mail: MailServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_SECRET", HOOK_SECRET)
    hook = Hook(free_port())
    try:
        kt.write("keyturn.toml", inventory(mail.relay_port, hook.port))
        assert kt.cli("apply", "keyturn.toml", env={"PW": "initial-password-1"}).code == 0
        assert kt.cli("rotate", "acme/smtp-admin", "--reason", "notify test").code == 0
        drained = deliver.drain(kt.app)
        assert len(drained.sent) == 2 and drained.failed == []
    finally:
        hook.stop()
    (message,) = mail.messages("admins@acme.example")
    assert message["Subject"] == "[keyturn] acme/smtp-admin rotated"
    assert message["From"] == "keyturn@platform.example"
    ((headers, body),) = hook.received
    expected = hmac.new(
        HOOK_SECRET.encode(), headers["X-Keyturn-Timestamp"].encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    assert hmac.compare_digest(headers["X-Keyturn-Signature"], "sha256=" + expected)
    payload = json.loads(body)
    assert payload["text"].startswith("[keyturn] acme/smtp-admin rotated")
    assert payload["kind"] == "rotated" and payload["credential"] == "acme/smtp-admin"
    # No secret in anything sent.
    value = kt.cli("get", "acme/smtp-admin").out.strip()
    assert value not in body.decode() and value not in message.as_string()
    assert "initial-password-1" not in body.decode() + message.as_string()


def test_endpoint_down_is_retried_and_nothing_is_lost(
    kt: Harness, mail: MailServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_SECRET", HOOK_SECRET)
    port = free_port()  # nothing listens here yet
    kt.write("keyturn.toml", inventory(mail.relay_port, port))
    assert kt.cli("apply", "keyturn.toml", env={"PW": "initial-password-1"}).code == 0
    for _ in range(2):
        assert kt.cli("rotate", "acme/smtp-admin", "--reason", "again").code == 0
    first = deliver.drain(kt.app)
    assert len(first.sent) == 2 and len(first.failed) == 2  # e-mails went, webhooks did not
    with kt.app.db.read() as session:
        waiting = session.execute(select(Notice).where(Notice.status == "retrying")).scalars().all()
    assert all(n.attempts == 1 and "webhook" in (n.last_error or "") for n in waiting)
    assert all(n.next_attempt_at and n.next_attempt_at > utcnow() for n in waiting)
    assert deliver.drain(kt.app).sent == []  # backing off
    later = utcnow() + timedelta(minutes=5)
    assert len(deliver.drain(kt.app, now=later).failed) == 2  # still down: attempt 2
    hook = Hook(port)
    try:
        recovered = deliver.drain(kt.app, now=utcnow() + timedelta(hours=2))
    finally:
        hook.stop()
    assert len(recovered.sent) == 2 and len(hook.received) == 2
    with kt.app.db.read() as session:
        statuses = session.execute(select(Notice.status)).scalars().all()
    assert sorted(statuses) == ["sent"] * 4


def test_failure_alerts_name_the_next_retry(
    kt: Harness, mail: MailServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_SECRET", HOOK_SECRET)
    kt.write("keyturn.toml", inventory(mail.relay_port, free_port()))
    assert kt.cli("apply", "keyturn.toml", env={"PW": "initial-password-1"}).code == 0
    (kt.home / "mail.passwd").unlink()
    (kt.home / "mail.passwd").mkdir()  # the target is now broken: set cannot write
    assert kt.cli("rotate", "acme/smtp-admin", "--reason", "x").code == 1
    for _ in range(2):
        kt.cli("resume", "--now")
    with kt.app.db.read() as session:
        failed = (
            session.execute(
                select(Notice).where(
                    Notice.kind == "rotation-failed", Notice.recipient == "admins@acme.example"
                )
            )
            .scalars()
            .all()
        )
        rot = session.execute(select(Rotation)).scalar_one()
    assert rot.attempts == 3 and len(failed) == 1
    assert "Next attempt at" in failed[0].body
    deliver.drain(kt.app)
    assert [m["Subject"] for m in mail.messages("admins@acme.example")] == [failed[0].subject]


@pytest.mark.state_db
def test_a_message_is_queued_once_per_recipient(kt: Harness) -> None:
    """The outbox's one INSERT skips the dedupe keys already there, in this transaction or
    an earlier one, and a recipient named twice gets one row."""
    from keyturn.notify import outbox

    def enqueue(key: str, recipients: list[str] | None) -> int:
        with kt.app.db.write() as session:
            return outbox.enqueue(
                session, kind="notice", dedupe_key=key, subject="s", body="b", recipients=recipients
            )

    assert enqueue("t1", ["a@x.example", "b@x.example", "a@x.example"]) == 2
    assert enqueue("t1", ["b@x.example", "c@x.example"]) == 1
    assert enqueue("t2", []) == 1  # nobody to tell: one row that says so
    assert enqueue("t2", None) == 0  # recipients_for: nobody either
    with kt.app.db.read() as session:
        rows = session.execute(
            select(Notice.dedupe_key, Notice.status).where(Notice.dedupe_key.like("t_|%"))
        ).all()
    assert sorted(rows) == [
        ("t1|a@x.example", "pending"),
        ("t1|b@x.example", "pending"),
        ("t1|c@x.example", "pending"),
        ("t2|", outbox.NO_RECIPIENT),
    ]
