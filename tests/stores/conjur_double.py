"""A small HTTP double of CyberArk Conjur's REST API, for the conjur store's tests.

Conjur cannot run here (it needs its own PostgreSQL and a Rails server). This double follows
the published API (cyberark/conjur `apidocs/src/authentication.md`, `secrets.md`,
`list_resources.md`, `show_resource.md`) for what keyturn uses:

- `POST /authn/{account}/{login}/authenticate`, body the API key: an access token (JSON;
  base64 of it with `Accept-Encoding: base64`), valid 8 minutes; 401 for a wrong key;
- every other route needs `Authorization: Token token="<base64 token>"`, else 401 (an
  expired or unknown token too);
- `POST /secrets/{account}/variable/{id}` adds a version (201; 404 for an undeclared
  variable; the twenty latest kept); `GET` the same path (`?version=N`) reads one (404 when
  the variable has no value);
- `GET /resources/{account}/variable/{id}`: the resource, with `secrets: [{"version": n}]`;
  `GET /resources/{account}?kind=variable&search=&limit=&offset=`: a page of them.

- `POST /policies/{account}/policy/root`: loads a policy; of Conjur's policy language only
  `- !variable NAME` lines are understood (each declares a variable), enough for the docs.

Identifiers arrive URL-encoded (`prod%2Fdb`). Tests declare variables with `declare()`.
`expire_tokens()` makes every token issued so far expire. As a server (for the docs'
example, started by scripts/services.d/conjur.sh):

    python -m tests.stores.conjur_double --port 45190 --login host/keyturn --key-file FILE
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

KEEP = 20
TOKEN_SECONDS = 8 * 60


class ConjurDouble:
    def __init__(self, account: str = "myorg", port: int = 0) -> None:
        self.account = account
        self.api_keys: dict[str, str] = {}
        self.variables: dict[str, list[tuple[int, str]]] = {}
        self.tokens: dict[str, float] = {}  # base64 token -> expiry (monotonic)
        self.authentications = 0
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ConjurDouble:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- what a policy and an admin would do --------------------------------------------------

    def add_host(self, login: str) -> str:
        key = secrets.token_hex(16)
        self.api_keys[login] = key
        return key

    def declare(self, *variables: str) -> None:
        for variable in variables:
            self.variables.setdefault(variable, [])

    def set(self, variable: str, value: str) -> None:
        with self.lock:
            versions = self.variables[variable]
            number = versions[-1][0] + 1 if versions else 1
            versions.append((number, value))
            del versions[:-KEEP]

    def value(self, variable: str) -> str | None:
        versions = self.variables.get(variable) or []
        return versions[-1][1] if versions else None

    def expire_tokens(self) -> None:
        with self.lock:
            self.tokens = dict.fromkeys(self.tokens, 0.0)

    # -- the API ------------------------------------------------------------------------------

    def authenticate(self, login: str, body: bytes, b64: bool) -> tuple[int, bytes]:
        if self.api_keys.get(login) != body.decode(errors="replace"):
            return 401, b""
        token = json.dumps(
            {"protected": "e30", "payload": login, "signature": secrets.token_hex(16)}
        ).encode()
        encoded = base64.b64encode(token).decode()
        with self.lock:
            self.tokens[encoded] = time.monotonic() + TOKEN_SECONDS
            self.authentications += 1
        return 200, encoded.encode() if b64 else token

    def authorized(self, header: str | None) -> bool:
        prefix = 'Token token="'
        if not header or not header.startswith(prefix) or not header.endswith('"'):
            return False
        expiry = self.tokens.get(header[len(prefix) : -1])
        return expiry is not None and expiry > time.monotonic()

    def resource(self, variable: str) -> dict[str, Any]:
        return {
            "id": f"{self.account}:variable:{variable}",
            "owner": f"{self.account}:policy:root",
            "permissions": [],
            "annotations": [],
            "secrets": [{"version": n} for n, _ in self.variables[variable]],
        }


def _handler(double: ConjurDouble) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            return

        def _reply(self, status: int, body: bytes = b"", kind: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _route(self) -> tuple[list[str], dict[str, list[str]]]:
            url = urlsplit(self.path)
            # Split on the raw slashes first: an encoded %2F belongs to an identifier.
            return [unquote(p) for p in url.path.strip("/").split("/")], parse_qs(url.query)

        def do_POST(self) -> None:
            parts, _ = self._route()
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if len(parts) == 4 and parts[0] == "authn" and parts[3] == "authenticate":
                b64 = "base64" in (self.headers.get("Accept-Encoding") or "")
                status, token = double.authenticate(parts[2], body, b64)
                return self._reply(status, token, "text/plain")
            if not double.authorized(self.headers.get("Authorization")):
                return self._reply(401)
            if parts[:3] == ["policies", double.account, "policy"]:
                for line in body.decode(errors="replace").splitlines():
                    kind, _, name = line.strip().removeprefix("- ").partition(" ")
                    if kind == "!variable" and name.strip():
                        double.declare(name.strip())
                return self._reply(201, b'{"created_roles": {}, "version": 1}')
            if len(parts) == 4 and parts[:3] == ["secrets", double.account, "variable"]:
                if parts[3] not in double.variables:
                    return self._reply(404, b'{"error": {"code": "not_found"}}')
                double.set(parts[3], body.decode())
                return self._reply(201)
            return self._reply(404)

        def do_GET(self) -> None:
            parts, query = self._route()
            if not double.authorized(self.headers.get("Authorization")):
                return self._reply(401)
            if len(parts) == 4 and parts[:3] == ["secrets", double.account, "variable"]:
                return self._secret(parts[3], query)
            if len(parts) == 4 and parts[:3] == ["resources", double.account, "variable"]:
                if parts[3] not in double.variables:
                    return self._reply(404)
                return self._reply(200, json.dumps(double.resource(parts[3])).encode())
            if parts == ["resources", double.account]:
                return self._list(query)
            return self._reply(404)

        def _secret(self, variable: str, query: dict[str, list[str]]) -> None:
            versions = dict(double.variables.get(variable) or [])
            if not versions:
                return self._reply(404)
            wanted = int(query["version"][0]) if "version" in query else max(versions)
            if wanted not in versions:
                return self._reply(404)
            return self._reply(200, versions[wanted].encode(), "application/octet-stream")

        def _list(self, query: dict[str, list[str]]) -> None:
            search = (query.get("search") or [""])[0]
            limit = int((query.get("limit") or ["1000"])[0])
            offset = int((query.get("offset") or ["0"])[0])
            names = sorted(v for v in double.variables if search in v)
            page = [double.resource(v) for v in names[offset : offset + limit]]
            return self._reply(200, json.dumps(page).encode())

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description="A double of Conjur's REST API")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--account", default="myorg")
    parser.add_argument("--login", default="host/keyturn")
    parser.add_argument("--key-file", required=True)
    args = parser.parse_args()
    double = ConjurDouble(args.account, args.port)
    key = double.add_host(args.login)
    fd = os.open(args.key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key)
    double.server.serve_forever()


if __name__ == "__main__":
    main()
