"""`keyturn serve`: a real uvicorn server on loopback, as a client reaches it."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import func, select

from keyturn import auth
from keyturn.audit import log as audit
from keyturn.cli.serve import build_server, check_port, run
from keyturn.db.models import AuditEntry
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


def _wait_health(url: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("keyturn serve --workers did not come up")


def test_serve_workers_share_one_port_and_stop_together(kt: Harness) -> None:
    """`--workers 2`: two processes answer on one port, their audit entries form one
    chain, and SIGTERM to `serve` stops both (the port is free again)."""
    kt.write("inv.toml", '[[credentials]]\nid = "acme/key"\ninitial_secret = "env:V"\n')
    assert kt.cli("apply", "inv.toml", env={"V": "served-Value-0099"}).code == 0
    with kt.app.db.write() as session:
        token = auth.create_token(session, "consumer", ["acme/*"]).token
    port = free_port()
    proc = kt.popen("serve", "--port", str(port), "--workers", "2", "--log-level", "warning")
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_health(url, proc)
        headers = {"Authorization": f"Bearer {token}"}

        def read(_i: int) -> str:
            with httpx.Client(base_url=url, timeout=30, headers=headers) as client:
                return str(client.get("/api/v1/credentials/acme/key/secret").json()["value"])

        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(read, range(40))) == {"served-Value-0099"}
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    check_port("127.0.0.1", port)  # nobody listens any more: both children are gone
    with kt.app.db.read() as session:
        assert audit.verify(session, []).ok
        reads = session.scalar(
            select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "secret.read")
        )
    assert reads == 40


def test_a_request_head_past_the_bound_is_refused_and_closed(kt: Harness, server: str) -> None:
    """Headers that grow without end (no token needed to send them) get a 431 JSON error
    once they pass keyturn.api.http.HEAD_LIMIT, and the connection is closed: the server
    does not buffer them for as long as the client likes. A request with ordinary headers
    on the same server is served, also after a large but bounded one."""
    from keyturn.api.http import HEAD_LIMIT

    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")
        filler = b"X-A: " + b"a" * 65536 + b"\r\n"
        answer = b""
        try:
            for _ in range(2 * HEAD_LIMIT // len(filler) + 2):
                sock.sendall(filler)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed on us, as it should be
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:80]
    assert b'"code": "headers_too_large"' in answer
    big = {f"x-h{i}": "v" * 4000 for i in range(10)}  # 40 KB of headers: served
    assert httpx.get(f"{server}/api/v1/health", headers=big).status_code == 200
    assert httpx.get(f"{server}/api/v1/health").status_code == 200


def test_a_stop_answers_held_reads_instead_of_cancelling_them(kt: Harness) -> None:
    """An SDK watcher holds `?wait=60` open: SIGTERM to `serve` answers it (304, nothing
    changed) and the server exits 0 without logging a cancelled request's traceback (it
    used to wait out the graceful timeout, then cancel it: `Exception in ASGI application`)."""
    kt.write("inv.toml", '[[credentials]]\nid = "acme/key"\ninitial_secret = "env:V"\n')
    assert kt.cli("apply", "inv.toml", env={"V": "served-Value-0099"}).code == 0
    with kt.app.db.write() as session:
        token = auth.create_token(session, "consumer", ["acme/*"]).token
    port = free_port()
    proc = kt.popen("serve", "--port", str(port), "--log-level", "info")
    url = f"http://127.0.0.1:{port}/api/v1/credentials/acme/key/secret"
    headers = {"Authorization": f"Bearer {token}"}
    try:
        _wait_health(f"http://127.0.0.1:{port}", proc)
        etag = httpx.get(url, headers=headers).headers["ETag"]
        held: list[httpx.Response] = []

        def hold() -> None:
            watch = {**headers, "If-None-Match": etag}
            held.append(httpx.get(url, params={"wait": 60}, headers=watch, timeout=90))

        watcher = threading.Thread(target=hold)
        watcher.start()
        time.sleep(1)  # the request is in the server's loop
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)  # as systemd or Kubernetes stops it
        watcher.join(30)
        answered = time.monotonic() - began
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert held and held[0].status_code == 304, held
    assert answered < 20, answered  # not the minute it asked for (a bound, not a timing)
    # uvicorn hands the signal back to its default action once it has stopped cleanly.
    assert proc.returncode in (0, -signal.SIGTERM), err
    assert "Application shutdown complete" in err
    assert "Traceback" not in err and "Exception in ASGI" not in err and "Cancel" not in err, err


def test_an_address_not_of_this_machine_points_at_the_host() -> None:
    from keyturn.domain.errors import UsageError

    for host in ("999.1.1.1", "192.0.2.1"):  # not an address at all; TEST-NET-1, not ours
        with pytest.raises(UsageError, match=r"not an address of this machine.*--host"):
            check_port(host, free_port())
