"""A small double of a SaaS API that issues API keys, for the http-api-key target.

No real provider can be reached from the tests, so this follows the shape most key-issuing APIs
share (SendGrid's ``/v3/api_keys``, Datadog's ``/api/v2/api_keys``, Cloudflare's
``/user/tokens``), strict where they are strict:

- management calls need ``Authorization: Bearer <admin token>`` (401 without, 403 wrong);
- ``POST /v1/keys {"name"}`` -> 201 ``{"id", "key", "name", "status", "created"}``: the key is
  shown this once (stored hashed); a third *active* key of one name (the owner, as a user's
  keys at most SaaS) is refused with 409 ``max_active_keys``;
- ``GET /v1/keys`` -> ``{"data": [{"id", "name", "status", "created"}]}``, revoked ones too;
- ``DELETE /v1/keys/<id>`` -> 200 ``{"id", "status": "revoked"}``; an unknown id 404, an
  already revoked one 404 as well (as SendGrid);
- ``GET /v1/whoami`` with ``Authorization: Bearer <key>`` -> 200 ``{"id", "name"}``; a revoked
  key 401 ``{"error": "api_key_revoked"}``, an unknown one 401 ``invalid_api_key``;
- a rate limit: more than ``rate`` requests in one second from anyone get 429 with
  ``Retry-After: 1``.

    python -m tests.support.keyapi_double --port 45180 --admin-token-file FILE
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import secrets
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MAX_ACTIVE = 2


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass
class Key:
    id: str
    name: str
    digest: str
    status: str = "active"
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def public(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name, "status": self.status, "created": self.created}


@dataclass
class KeyApi:
    """The API's state; ``serve()`` starts it on 127.0.0.1 in a thread."""

    admin_token: str = field(default_factory=lambda: "adm_" + secrets.token_urlsafe(24))
    rate: int = 1000
    keys: dict[str, Key] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _window: list[float] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def active(self, name: str | None = None) -> list[str]:
        return [
            k.id
            for k in self.keys.values()
            if k.status == "active" and (name is None or k.name == name)
        ]

    def accepts(self, key: str) -> bool:
        return any(
            hmac.compare_digest(k.digest, _digest(key)) and k.status == "active"
            for k in self.keys.values()
        )

    def limited(self) -> bool:
        now = time.monotonic()
        self._window[:] = [t for t in self._window if now - t < 1.0]
        self._window.append(now)
        return len(self._window) > self.rate

    def handle(self, method: str, path: str, auth: str, body: Any) -> tuple[int, Any]:
        with self.lock:
            self.requests.append((method, path))
            if self.limited():
                return 429, {"error": "rate_limited"}
            if path == "/v1/whoami" and method == "GET":
                return self._whoami(auth)
            if not auth.startswith("Bearer "):
                return 401, {"error": "missing_authorization"}
            if not hmac.compare_digest(auth[7:].encode(), self.admin_token.encode()):
                return 403, {"error": "forbidden"}
            return self._manage(method, path, body)

    def _whoami(self, auth: str) -> tuple[int, Any]:
        digest = _digest(auth.removeprefix("Bearer "))
        for key in self.keys.values():
            if hmac.compare_digest(key.digest, digest):
                if key.status != "active":
                    return 401, {"error": "api_key_revoked"}
                return 200, {"id": key.id, "name": key.name}
        return 401, {"error": "invalid_api_key"}

    def _manage(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if path == "/v1/keys" and method == "GET":
            return 200, {"data": [k.public() for k in self.keys.values()]}
        if path == "/v1/keys" and method == "POST":
            if not isinstance(body, dict) or not isinstance(body.get("name"), str):
                return 400, {"error": "name_required"}
            if len(self.active(body["name"])) >= MAX_ACTIVE:
                return 409, {"error": "max_active_keys", "max": MAX_ACTIVE}
            value = "sk_test_" + secrets.token_urlsafe(32)
            key = Key("key_" + secrets.token_hex(6), body["name"], _digest(value))
            self.keys[key.id] = key
            return 201, {**key.public(), "key": value}
        if path.startswith("/v1/keys/") and method == "DELETE":
            key = self.keys.get(path.rsplit("/", 1)[1])
            if key is None or key.status != "active":
                return 404, {"error": "not_found"}
            key.status = "revoked"
            return 200, {"id": key.id, "status": "revoked"}
        return 404, {"error": "no_such_route"}

    def serve(self, port: int = 0) -> KeyApi:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _go(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                status, data = api.handle(
                    self.command, self.path, self.headers.get("authorization", ""), body
                )
                payload = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                if status == 429:
                    self.send_header("retry-after", "1")
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _go

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=45180)
    parser.add_argument("--admin-token-file", type=Path, required=True)
    args = parser.parse_args()
    api = KeyApi().serve(args.port)
    args.admin_token_file.write_text(api.admin_token)
    args.admin_token_file.chmod(0o600)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    api.close()


if __name__ == "__main__":
    main()
