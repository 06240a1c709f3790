"""`keyturn serve`: a real uvicorn server on loopback, as a client reaches it."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from keyturn import auth
from keyturn.cli.serve import build_server, run
from tests.support.keyturn import Harness


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server(kt: Harness) -> Iterator[str]:
    port = free_port()
    srv = build_server(kt.app, "127.0.0.1", port, log_level="warning")
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)
    assert not thread.is_alive()


def test_serve_answers_over_tcp(kt: Harness, server: str) -> None:
    kt.write("inv.toml", '[[credentials]]\nid = "acme/key"\ninitial_secret = "env:V"\n')
    assert kt.cli("apply", "inv.toml", env={"V": "served-Value-0099"}).code == 0
    with kt.app.db.write() as session:
        token = auth.create_token(session, "consumer", ["acme/*"]).token
    with httpx.Client(base_url=server, timeout=10) as client:
        health = client.get("/api/v1/health")
        assert health.status_code == 200 and "server" not in health.headers
        assert client.get("/api/v1/openapi.json").json()["info"]["title"] == "keyturn"
        secret = client.get(
            "/api/v1/credentials/acme/key/secret", headers={"Authorization": f"Bearer {token}"}
        )
        assert secret.json()["value"] == "served-Value-0099"
        denied = client.get("/api/v1/credentials/acme/key/secret")
        assert denied.status_code == 401 and denied.json()["error"]["code"] == "unauthorized"


def test_serve_help_names_its_settings(kt: Harness) -> None:
    out = kt.cli("serve", "--help").out
    assert "KEYTURN_HOST" in out and "KEYTURN_PORT" in out and "127.0.0.1" in out


def test_serve_with_worker_runs_and_stops_the_worker(kt: Harness) -> None:
    srv = build_server(kt.app, "127.0.0.1", free_port(), log_level="warning")
    thread = threading.Thread(target=run, args=(kt.app, srv), kwargs={"with_worker": True})
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    workers = [t for t in threading.enumerate() if t.name == "keyturn-worker"]
    assert srv.started and len(workers) == 1 and workers[0].is_alive()
    srv.should_exit = True
    thread.join(20)
    assert not thread.is_alive() and not workers[0].is_alive()
