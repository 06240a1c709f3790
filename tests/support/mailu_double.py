"""A test double of MailU's admin REST API (MailU itself needs Docker, which tests cannot run).

It follows MailU's own API code (core/admin/mailu/api/common.py, v1/user.py, v1/token.py):

- auth: ``Authorization: Bearer <API_TOKEN>``; missing header -> 401
  ``{"message": "A valid Authorization header is mandatory"}``, wrong token -> 403
  ``{"message": "Invalid API token"}`` (and a strike against the client's address: after five,
  every request gets 429 ``Too many attempts from your IP (rate-limit)``, as MailU's limiter).
- ``GET|PATCH /api/v1/user/<email>`` (``{"raw_password": ...}``; 400 invalid e-mail or
  payload, 404 unknown user, 200 ``{"code": 200, "message": "User ... has been updated"}``),
  ``POST /api/v1/user`` (409 duplicate).
- ``POST /api/v1/token`` ``{"email", "comment", "AuthorizedIP"}`` -> 200 ``{"id", "token",
  "email", "comment", "AuthorizedIP", "Created"}`` (the token, 32 hex characters, shown this
  once), ``GET|POST /api/v1/tokenuser/<email>`` (flask-restx joins the namespace ``/token``
  and the route ``user/<email>`` without a slash), ``GET|DELETE /api/v1/token/<id>`` (404
  ``Record cannot be found for id ...``).

Passwords live in a real Dovecot passwd-file (``user:{SHA512-CRYPT}$6$...``, keyturn's
passwd-file format), so the file a real Dovecot would read is what the API changes; tokens are
kept hashed in memory. With ``smtp=True`` it also listens for SMTP (aiosmtpd) and accepts AUTH
with the password or any token of the user, as MailU's front does, counting failed logins.
"""

from __future__ import annotations

import json
import secrets
import socket
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from passlib.hash import sha512_crypt

SCHEME = "{SHA512-CRYPT}"
RATE_LIMIT = 5


def _hash(value: str) -> str:
    return SCHEME + str(sha512_crypt.using(rounds=5000).hash(value))


def _verify(value: str, stored: str | None) -> bool:
    if not stored or not stored.startswith(SCHEME):
        return False
    return bool(sha512_crypt.verify(value, stored[len(SCHEME) :]))


def _valid_email(email: str) -> bool:
    local, at, domain = email.rpartition("@")
    return bool(at and local and "." in domain and not any(c.isspace() for c in email))


@dataclass
class Token:
    id: int
    email: str
    comment: str | None
    ips: list[str]
    hashed: str
    created: str


@dataclass
class Request:
    method: str
    path: str
    authorized: bool
    status: int


@dataclass
class MailuDouble:
    """One MailU (one tenant's VPS). ``url`` is what a keyturn target's ``url`` setting takes."""

    passwd_file: Path
    api_token: str = field(default_factory=lambda: secrets.token_hex(16))
    tokens: dict[int, Token] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    # Tests force a status for the next requests (method or "*", path prefix) -> status.
    faults: dict[tuple[str, str], int] = field(default_factory=dict)
    strikes: int = 0
    failed_logins: int = 0
    smtp_port: int | None = None
    _next_id: int = 1
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _smtp: Any = None

    # -- passwd-file -----------------------------------------------------------------------

    def _users(self) -> dict[str, str]:
        if not self.passwd_file.exists():
            return {}
        users = {}
        for line in self.passwd_file.read_text().splitlines():
            user, sep, rest = line.partition(":")
            if sep:
                users[user] = rest.split(":", 1)[0]
        return users

    def _save(self, users: dict[str, str]) -> None:
        tmp = self.passwd_file.with_name(self.passwd_file.name + ".tmp")
        tmp.write_text("".join(f"{u}:{h}\n" for u, h in users.items()))
        tmp.replace(self.passwd_file)

    def add_user(self, email: str, password: str) -> None:
        with self._lock:
            users = self._users()
            users[email] = _hash(password)
            self._save(users)

    def accepts(self, email: str, value: str) -> bool:
        """What MailU's login check answers: the password, or any token of the user."""
        if _verify(value, self._users().get(email)):
            return True
        return any(t.email == email and _verify(value, t.hashed) for t in self.tokens.values())

    def token_ids(self, email: str) -> list[str]:
        return [str(t.id) for t in self.tokens.values() if t.email == email]

    # -- server ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self, smtp: bool = False) -> MailuDouble:
        double = self

        class Handler(_Handler):
            mailu = double

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        if smtp:
            self._start_smtp()
        return self

    def _start_smtp(self) -> None:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, LoginPassword

        double = self

        def authenticator(
            server: Any, session: Any, envelope: Any, mechanism: str, data: Any
        ) -> Any:
            ok = isinstance(data, LoginPassword) and double.accepts(
                data.login.decode(), data.password.decode()
            )
            if not ok:
                double.failed_logins += 1
            return AuthResult(success=ok, handled=False)

        class Sink:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                return "250 OK"

        self._smtp = Controller(
            Sink(),
            hostname="127.0.0.1",
            port=_free_port(),
            authenticator=authenticator,
            auth_require_tls=False,
            auth_exclude_mechanism=["CRAM-MD5"],
        )
        self._smtp.start()
        self.smtp_port = self._smtp.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._smtp is not None:
            self._smtp.stop()
            self._smtp = None

    # -- the API ---------------------------------------------------------------------------

    def handle(self, method: str, path: str, auth: str | None, body: Any) -> tuple[int, Any]:
        for (m, prefix), status in self.faults.items():
            if m in (method, "*") and path.startswith(prefix):
                return status, {"code": status, "message": "injected by the test"}
        if self.strikes >= RATE_LIMIT:
            return 429, {"message": "Too many attempts from your IP (rate-limit)"}
        if not auth:
            return 401, {"message": "A valid Authorization header is mandatory"}
        if not secrets.compare_digest(auth.removeprefix("Bearer "), self.api_token):
            self.strikes += 1
            return 403, {"message": "Invalid API token"}
        if not path.startswith("/api/v1/"):
            return 404, {"message": "not found"}
        parts = [unquote(p) for p in path[len("/api/v1/") :].split("/")]
        with self._lock:
            return self._route(method, parts, body)

    def _route(self, method: str, parts: list[str], body: Any) -> tuple[int, Any]:
        match method, parts:
            case "GET", ["user", email]:
                return self._get_user(email)
            case "PATCH", ["user", email]:
                return self._patch_user(email, body)
            case "POST", ["user"]:
                return self._post_user(body)
            case "POST", ["token"]:
                return self._post_token(
                    body.get("email", "") if isinstance(body, dict) else "", body
                )
            case "GET", ["token"]:
                return 200, [self._token_view(t) for t in self.tokens.values()]
            case "GET", ["tokenuser", email]:
                return self._user_tokens(email)
            case "POST", ["tokenuser", email]:
                return self._post_token(email, body)
            case "GET", ["token", token_id]:
                token = self._token(token_id)
                return (200, self._token_view(token)) if token else _no_record(token_id)
            case "DELETE", ["token", token_id]:
                token = self._token(token_id)
                if token is None:
                    return _no_record(token_id)
                del self.tokens[token.id]
                return 200, {"code": 200, "message": f"Token with id {token_id} has been deleted"}
        return 404, {"message": "The requested URL was not found on the server."}

    def _get_user(self, email: str) -> tuple[int, Any]:
        if not _valid_email(email):
            return _bad_email(email)
        stored = self._users().get(email)
        if stored is None:
            return _no_user(email)
        return 200, {"email": email, "password": stored, "enabled": True, "global_admin": False}

    def _patch_user(self, email: str, body: Any) -> tuple[int, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("raw_password", ""), str):
            return 400, {
                "errors": {"raw_password": "invalid"},
                "message": "Input payload validation failed",
            }
        if not _valid_email(email):
            return _bad_email(email)
        users = self._users()
        if email not in users:
            return _no_user(email)
        if "raw_password" in body:
            users[email] = _hash(body["raw_password"])
            self._save(users)
        return 200, {"code": 200, "message": f"User {email} has been updated"}

    def _post_user(self, body: Any) -> tuple[int, Any]:
        email = body.get("email", "") if isinstance(body, dict) else ""
        if not _valid_email(email):
            return _bad_email(email)
        users = self._users()
        if email in users:
            return 409, {"code": 409, "message": f"User {email} already exists"}
        users[email] = _hash(str(body.get("raw_password", secrets.token_hex(16))))
        self._save(users)
        return 200, {"code": 200, "message": f"User {email} has been created"}

    def _post_token(self, email: str, body: Any) -> tuple[int, Any]:
        if not _valid_email(email):
            return _bad_email(email)
        if email not in self._users():
            return 404, {"code": 404, "message": f"User {email} cannot be found"}
        body = body if isinstance(body, dict) else {}
        raw = secrets.token_hex(16)
        token = Token(
            id=self._next_id,
            email=email,
            comment=body.get("comment"),
            ips=list(body.get("AuthorizedIP") or []),
            hashed=_hash(raw),
            created=datetime.now(UTC).date().isoformat(),
        )
        self._next_id += 1
        self.tokens[token.id] = token
        return 200, {
            "id": token.id,
            "token": raw,
            "email": email,
            "comment": token.comment,
            "AuthorizedIP": token.ips,
            "Created": token.created,
        }

    def _user_tokens(self, email: str) -> tuple[int, Any]:
        if not _valid_email(email):
            return _bad_email(email)
        if email not in self._users():
            return 404, {"code": 404, "message": f"User {email} cannot be found"}
        return 200, [self._token_view(t) for t in self.tokens.values() if t.email == email]

    def _token(self, token_id: str) -> Token | None:
        return self.tokens.get(int(token_id)) if token_id.isdigit() else None

    @staticmethod
    def _token_view(t: Token) -> dict[str, Any]:
        return {
            "id": t.id,
            "email": t.email,
            "comment": t.comment,
            "AuthorizedIP": t.ips,
            "Created": t.created,
            "Last edit": t.created,
        }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bad_email(email: str) -> tuple[int, Any]:
    return 400, {
        "code": 400,
        "message": f"Provided email address {email} is not a valid email address",
    }


def _no_user(email: str) -> tuple[int, Any]:
    return 404, {"code": 404, "message": f"User {email} cannot be found"}


def _no_record(token_id: str) -> tuple[int, Any]:
    return 404, {
        "code": 404,
        "message": f"Record cannot be found for id {token_id} or invalid id provided",
    }


class _Handler(BaseHTTPRequestHandler):
    mailu: MailuDouble

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            status, payload = (
                400,
                {
                    "message": "The browser (or proxy) sent a request that this server "
                    "could not understand."
                },
            )
        else:
            status, payload = self.mailu.handle(
                self.command, self.path, self.headers.get("Authorization"), body
            )
        self.mailu.requests.append(
            Request(self.command, self.path, status not in (401, 403, 429), status)
        )
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _serve
