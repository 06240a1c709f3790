"""The token service the ``http-token`` target drives: a toy, in memory, for tests and docs.

TOKEN_ADMIN=... python -m keyturn_http_token.server --port 8099
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class TokenService(ThreadingHTTPServer):
    def __init__(self, port: int, admin_token: str) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.admin_digest = hashlib.sha256(admin_token.encode()).hexdigest()
        self.tokens: dict[str, set[str]] = {}  # user -> digests
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    server: TokenService

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: a test's output stays its own

    def _bearer(self) -> str:
        header = self.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ")
        return hashlib.sha256(token.encode()).hexdigest()

    def _send(self, status: int, body: object = None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _admin(self) -> list[str] | None:
        if not hmac.compare_digest(self._bearer(), self.server.admin_digest):
            self._send(403, {"error": "admin token required"})
            return None
        parts = self.path.strip("/").split("/")
        if len(parts) < 3 or parts[0] != "users" or parts[2] != "tokens":
            self._send(404, {"error": "no such path"})
            return None
        return parts

    def do_GET(self) -> None:
        if self.path == "/whoami":
            user = self.headers.get("X-User", "")
            ok = self._bearer() in self.server.tokens.get(user, set())
            self._send(200 if ok else 401, {"user": user} if ok else {"error": "refused"})
            return
        parts = self._admin()
        if parts is not None:
            self._send(200, {"tokens": sorted(self.server.tokens.get(parts[1], set()))})

    def do_PUT(self) -> None:
        parts = self._admin()
        if parts is not None and len(parts) == 4:
            with self.server.lock:
                self.server.tokens.setdefault(parts[1], set()).add(parts[3])
            self._send(204)

    def do_DELETE(self) -> None:
        parts = self._admin()
        if parts is not None and len(parts) == 4:
            with self.server.lock:
                self.server.tokens.get(parts[1], set()).discard(parts[3])
            self._send(204)


def start(port: int, admin_token: str) -> TokenService:
    """The service on 127.0.0.1:*port* (0: any free port), served from a thread."""
    service = TokenService(port, admin_token)
    threading.Thread(target=service.serve_forever, daemon=True).start()
    return service


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--admin-token-env", default="TOKEN_ADMIN")
    args = parser.parse_args()
    TokenService(args.port, os.environ[args.admin_token_env]).serve_forever()


if __name__ == "__main__":
    main()
