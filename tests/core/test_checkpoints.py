"""Checkpoints leave the database on the worker's schedule (`run-due`, `worker`): files in a
directory, and a webhook a real HTTP receiver on loopback keeps; either proves later that the
log was not cut back."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, update

from keyturn.audit import log as audit
from keyturn.db.models import AuditEntry, AuditHead
from tests.support.keyturn import Harness


def _grow(kt: Harness, count: int = 2) -> None:
    with kt.app.db.write() as session:
        for i in range(count):
            audit.append(session, actor="test", action=f"grow.{i}")


def _cut_back(kt: Harness, to: int) -> None:
    with kt.app.db.write() as session:
        session.execute(delete(AuditEntry).where(AuditEntry.seq > to))
        last = session.get(AuditEntry, to)
        assert last is not None
        session.execute(update(AuditHead).values(seq=to, hash=last.hash))


def _run_due(kt: Harness, **env: str) -> dict[str, Any]:
    result = kt.cli("run-due", "--json", env=env)
    assert result.code == 0, result.err
    data: dict[str, Any] = json.loads(result.out)
    return data


def test_run_due_writes_a_checkpoint_when_the_log_grew(kt: Harness, tmp_path: Path) -> None:
    folder = tmp_path / "elsewhere"
    env = {"KEYTURN_AUDIT_CHECKPOINT_DIR": str(folder)}
    first = _run_due(kt, **env)["audit_checkpoint"]
    assert first and len(list(folder.glob("checkpoint-*.json"))) == 1
    assert _run_due(kt, **env)["audit_checkpoint"] is None  # nothing new since
    _grow(kt)
    later = _run_due(kt, **env)["audit_checkpoint"]
    assert later == first + 2
    assert kt.cli("audit", "verify", "--checkpoint", str(folder)).code == 0
    _cut_back(kt, first)
    assert kt.cli("audit", "verify").code == 0  # the database alone cannot tell
    cut = kt.cli("audit", "verify", "--checkpoint", str(folder))
    assert cut.code == 1 and f"entries {first + 1}-{later} were removed" in cut.err


def test_an_unwritable_directory_is_an_error_not_a_silence(kt: Harness, tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    result = kt.cli("run-due", "--json", env={"KEYTURN_AUDIT_CHECKPOINT_DIR": str(blocked / "x")})
    assert result.code == 1
    assert "audit checkpoint not exported" in json.loads(result.out)["errors"][0]


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    got: list[tuple[dict[str, str], bytes]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append((dict(self.headers), body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", got
    server.shutdown()
    server.server_close()


def test_the_worker_sends_checkpoints_to_a_webhook(
    kt: Harness, tmp_path: Path, receiver: tuple[str, list[tuple[dict[str, str], bytes]]]
) -> None:
    url, got = receiver
    kt.write(
        "channels.toml",
        f'[channels.vault-room]\ntype = "webhook"\nurl = "{url}"\nsecret = "env:HOOK_SECRET"\n',
    )
    secret = "hook-Secret-for-tests-0001"
    assert kt.cli("apply", "channels.toml").code == 0
    env = {"KEYTURN_AUDIT_CHECKPOINT_TO": "webhook:vault-room", "HOOK_SECRET": secret}
    seq = _run_due(kt, **env)["audit_checkpoint"]
    ((headers, body),) = got
    mac = hmac.new(
        secret.encode(), headers["X-Keyturn-Timestamp"].encode() + b"." + body, hashlib.sha256
    )
    assert headers["X-Keyturn-Signature"] == "sha256=" + mac.hexdigest()
    payload = json.loads(body)
    assert payload["kind"] == "audit-checkpoint" and payload["data"]["seq"] == seq
    kept = tmp_path / "received.json"  # what the receiver keeps: the notification as sent
    kept.write_bytes(body)
    assert kt.cli("audit", "verify", "--checkpoint", str(kept)).code == 0
    _grow(kt, 1)
    _cut_back(kt, seq - 1)
    assert kt.cli("audit", "verify", "--checkpoint", str(kept)).code == 1
    missing = kt.cli("run-due", "--json", env={"KEYTURN_AUDIT_CHECKPOINT_TO": "webhook:nobody"})
    assert "no channel delivers there" in json.loads(missing.out)["errors"][0]
