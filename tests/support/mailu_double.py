"""A test double of MailU's admin application (MailU needs Docker, which tests cannot run).

It follows MailU 2024.06.57's code (``core/admin/mailu/api/``, ``models.py``, ``limiter.py``,
``utils.py``, ``internal/``), checked against that release run from its pinned requirements
(Flask 3.0.3, flask-restx 1.3.0, passlib 1.7.4, bcrypt 4.1.3) on SQLite with Redis:

- **Data**: users and tokens live in a real SQLite database with MailU's key columns, so ids
  are SQLite's: a token id, once deleted, is given to the next token when it was the highest.
  Addresses are stored lower-cased with an IDNA domain and found whatever the case; a token's
  owner is stored as sent, and a user's tokens are those whose owner matches exactly.
- **Passwords** (tests/support/mailu_auth.py): ``bcrypt_sha256`` at ``credential_rounds``
  (MailU's ``CREDENTIAL_ROUNDS`` is 12; tests use 4 to stay fast), every legacy scheme MailU
  accepts, the hash upgraded on a successful login; tokens ``pbkdf2_sha256``, 32 hex
  characters.
- **Auth** (``api/common.py``): the client is ``X-Real-IP`` or the peer; a rate-limited
  network gets ``429 {"message": "Too many attempts from your IP (rate-limit)"}`` whatever the
  token; no ``Authorization`` -> 401; a wrong token (``Bearer`` prefix optional) -> 403 and a hit
  against the network; ``api_token=None`` (unset) -> a JSON 500 for every request that carries
  a token; ``api_token=""`` -> MailU's HTML 500 ``<p>Error: API_TOKEN is not configured</p>``
  for everything under ``/api``.
- **flask-restx**: payloads of routes that take one are read before auth: a body that is not
  ``application/json`` -> 415, malformed JSON -> 400, schema errors -> 400
  ``{"errors": {field: "<repr> is not of type 'string'"}, "message": "Input payload validation
  failed"}`` (``comment: null`` included; unknown fields are accepted); a method a route lacks
  -> JSON 405; an unknown route (``%2F`` decodes to ``/``) -> Flask's HTML 404 page;
  ``/api/v1/`` -> the Swagger HTML page, ``/api/v1`` -> 308, ``/api/`` -> 302 to ``/api/v1/``.
- **Routes** (``api/v1/user.py``, ``token.py``): ``GET /user`` (skip_none), ``POST /user``,
  ``GET|PATCH|DELETE /user/<email>`` (the 23 fields of ``user_fields_get``); ``GET /token``
  (string ids, no ``Last edit`` while it is None), ``POST /token``, ``GET|POST
  /tokenuser/<email>`` and ``GET|PATCH|DELETE /token/<id>`` (int ids, ``"Last edit": "None"``),
  with MailU's messages and its ``AuthorizedIP`` check.
- **Front** (``core/nginx``): ``api_enabled=False`` (``API=false``) sends ``/api`` to the
  login page (``302 /sso/login?url=...``), as MailU's nginx does.
- **SMTP** (``smtp=True``): an aiosmtpd listener for AUTH PLAIN/LOGIN that answers as MailU's
  front does after asking the admin (235, 535, ``451 4.3.2`` when rate-limited), logging
  every attempt in ``logins``.

Left out: domains (every domain exists), aliases, relays, quotas, users' web sessions, the
Redis store of the limiter and the credential cache (see mailu_auth), IMAP/POP3, TLS.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import socket
import sqlite3
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from tests.support.mailu_api_routes import NOT_FOUND, Answer, Routes, normalise
from tests.support.mailu_auth import (
    CheckFailed,
    Limiter,
    Login,
    authenticate,
    check_password,
    check_token,
    hash_token,
    is_app_token,
    password_context,
    smtp_reply,
)

SWAGGER = "<!DOCTYPE html>\n<html>\n<head>\n    <title>Mailu API</title>\n</head></html>\n"
SCHEMA = """
CREATE TABLE user (email VARCHAR(255) PRIMARY KEY, password VARCHAR(255) NOT NULL,
                   data TEXT NOT NULL);
CREATE TABLE token (id INTEGER PRIMARY KEY, user_email VARCHAR(255) NOT NULL,
                    password VARCHAR(255) NOT NULL, ip VARCHAR(4096), comment VARCHAR(255),
                    created_at DATE NOT NULL, updated_at DATE);
"""


@dataclass
class Request:
    method: str
    path: str
    client: str
    status: int


@dataclass
class MailuDouble:
    """One MailU (one tenant's VPS). ``url`` is what a keyturn target's ``url`` setting takes."""

    api_token: str | None = field(default_factory=lambda: secrets.token_hex(16))
    credential_rounds: int = 4
    require_tokens: bool = False  # AUTH_REQUIRE_TOKENS
    api_enabled: bool = True  # API in mailu.env, as MailU's nginx front applies it
    # Test hooks: statuses forced on (method or "*", path prefix); the address the front
    # reports for SMTP clients (Client-Ip), the peer's by default.
    faults: dict[tuple[str, str], int] = field(default_factory=dict)
    smtp_client_ip: str | None = None
    requests: list[Request] = field(default_factory=list)
    logins: list[Login] = field(default_factory=list)
    smtp_port: int | None = None
    offset: timedelta = timedelta(0)  # the double's clock runs this far ahead
    limiter: Limiter = field(init=False)
    _db: sqlite3.Connection = field(init=False)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _server: ThreadingHTTPServer | None = None
    _smtp: Any = None

    def __post_init__(self) -> None:
        self.limiter = Limiter(clock=self.now)
        self.ctx = password_context(self.credential_rounds)
        self._db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        self._db.executescript(SCHEMA)
        self.routes = Routes(self)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, delta: timedelta) -> None:
        self.offset += delta

    # -- the database (what tests and the routes share) --------------------------------------

    def sql(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(query, args).fetchall()

    def hash_password(self, password: str) -> str:
        return str(self.ctx.hash(password))

    def add_user(
        self, email: str, password: str | None = None, *, stored: str | None = None, **data: Any
    ) -> None:
        """A user with *password* (hashed as MailU does) or a raw *stored* hash."""
        value = stored if stored is not None else self.hash_password(password or "")
        self.sql("INSERT INTO user VALUES (?, ?, ?)", normalise(email), value, json.dumps(data))

    def find_user(self, email: str) -> dict[str, Any] | None:
        try:
            key = normalise(email)
        except ValueError:
            return None
        rows = self.sql("SELECT email, password, data FROM user WHERE email = ?", key)
        if not rows:
            return None
        email_, password, data = rows[0]
        return {**json.loads(data), "email": email_, "password": password}

    def stored_hash(self, email: str) -> str:
        user = self.find_user(email)
        assert user is not None, email
        return str(user["password"])

    def set_stored(self, email: str, stored: str) -> None:
        self.sql("UPDATE user SET password = ? WHERE email = ?", stored, email.lower())

    def update_user(self, email: str, **data: Any) -> None:
        user = self.find_user(email)
        assert user is not None
        fields = {k: v for k, v in user.items() if k not in ("email", "password")}
        self.sql(
            "UPDATE user SET data = ? WHERE email = ?",
            json.dumps({**fields, **data}),
            user["email"],
        )

    def tokens(self, email: str) -> list[dict[str, Any]]:
        """The user's tokens as MailU's relationship finds them (owner matched exactly)."""
        rows = self.sql(
            "SELECT id, user_email, password, ip, comment, created_at, updated_at FROM token "
            "WHERE user_email = ? ORDER BY id",
            email,
        )
        keys = ("id", "email", "hash", "ip", "comment", "created", "updated")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def token_ids(self, email: str) -> list[str]:
        return [str(t["id"]) for t in self.tokens(email)]

    def issue_token(
        self, email: str, comment: str = "", ips: list[str] | None = None
    ) -> tuple[int, str]:
        """A token made the way MailU's UI or API makes one: (id, value)."""
        value = secrets.token_hex(16)
        self.sql(
            "INSERT INTO token (user_email, password, ip, comment, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            email,
            hash_token(value),
            ",".join(sorted(set(ips or []))),
            comment,
            self.now().date().isoformat(),
        )
        (token_id,) = self.sql("SELECT last_insert_rowid()")[0]
        return int(token_id), value

    def delete_token(self, token_id: int) -> None:
        self.sql("DELETE FROM token WHERE id = ?", token_id)

    # -- MailU's login checks ----------------------------------------------------------------

    def check_credentials(self, user: dict[str, Any] | None, password: str, ip: str) -> str:
        """internal/nginx.check_credentials: "password"/"token" on success, else why not."""
        if user is None or not user.get("enabled", True):
            return "disabled"
        if is_app_token(password):
            for token in self.tokens(user["email"]):
                ok, new_hash = check_token(password, token["hash"])
                if not ok:
                    continue
                if new_hash:
                    self.sql("UPDATE token SET password = ? WHERE id = ?", new_hash, token["id"])
                nets = [n for n in (token["ip"] or "").split(",") if n]
                address = ipaddress.ip_address(ip)
                inside = any(address in ipaddress.ip_network(n, strict=False) for n in nets)
                return "token" if not nets or inside else "badip"
        ok, new_hash = check_password(self.ctx, password, user["password"])
        if ok and new_hash:
            self.set_stored(user["email"], new_hash)
        if ok:
            return "badauth" if self.require_tokens else "password"
        return "badauth"

    def accepts(self, email: str, value: str, ip: str = "127.0.0.1") -> bool:
        """Whether a login as *email* with *value* would succeed now (no limiter, no rehash)."""
        user = self.find_user(email)
        if user is None or not user.get("enabled", True):
            return False
        if is_app_token(value):
            for token in self.tokens(user["email"]):
                if check_token(value, token["hash"])[0]:
                    return True
        try:
            return check_password(self.ctx, value, user["password"])[0]
        except CheckFailed:
            return False

    @property
    def failed_logins(self) -> int:
        return sum(1 for login in self.logins if not login.ok)

    # -- servers -----------------------------------------------------------------------------

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
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        if smtp:
            self._start_smtp()
        return self

    def _start_smtp(self) -> None:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, LoginPassword

        double = self

        def authenticator(server: Any, session: Any, envelope: Any, mech: str, data: Any) -> Any:
            if not isinstance(data, LoginPassword):
                return AuthResult(success=False, handled=False)
            ip = double.smtp_client_ip or str(session.peer[0])
            login = authenticate(double, data.login.decode(), data.password.decode(), ip)
            double.logins.append(login)
            return AuthResult(success=login.ok, handled=False, message=smtp_reply(login))

        class Sink:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                return "250 OK"

        self._smtp = Controller(
            Sink(),
            hostname="127.0.0.1",
            port=free_port(),
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
        self._db.close()

    # -- one HTTP request --------------------------------------------------------------------

    def handle(
        self, method: str, target: str, headers: dict[str, str], raw: bytes, peer: str
    ) -> Answer:
        path = unquote(urlsplit(target).path)
        client = headers.get("x-real-ip") or peer
        for (m, prefix), status in self.faults.items():
            if m in (method, "*") and path.startswith(prefix):
                return Answer.json(status, {"message": "injected by the test"})
        if path.startswith("/api") and not self.api_enabled:
            # MailU's front with API=false: /api falls through to the webmail, whose
            # auth_request sends the client to the login page.
            return Answer.redirect(302, f"/sso/login?url={target}")
        if path.startswith("/api") and self.api_token == "":
            return Answer.html(500, "<p>Error: API_TOKEN is not configured</p>")
        redirect = {"/api": "/api/", "/api/": "/api/v1/", "/api/v1": "/api/v1/"}.get(path)
        if redirect:
            return Answer.redirect(308 if path != "/api/" else 302, redirect)
        if path == "/api/v1/":
            return Answer.html(200, SWAGGER)
        if not path.startswith("/api/v1/"):
            return Answer.html(404, NOT_FOUND)
        with self._lock:
            return self.routes.dispatch(method, path[len("/api/v1") :], headers, raw, client)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Handler(BaseHTTPRequestHandler):
    mailu: MailuDouble

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        answer = self.mailu.handle(self.command, self.path, headers, raw, self.client_address[0])
        client = headers.get("x-real-ip") or self.client_address[0]
        self.mailu.requests.append(Request(self.command, self.path, client, answer.status))
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        self.wfile.write(answer.body)

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _serve
