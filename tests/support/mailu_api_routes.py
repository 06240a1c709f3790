"""The REST side of the MailU double: routes, flask-restx payload validation, the API token
check and the bodies of MailU 2024.06.57's ``api/v1/user.py`` and ``api/v1/token.py``.

See tests/support/mailu_double.py for what the double follows and what it leaves out.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import idna

from tests.support.mailu_auth import hash_token

if TYPE_CHECKING:
    from tests.support.mailu_double import MailuDouble

# models.User and api/v1/user.py's user_fields_get: the 23 fields GET /user/<email> returns.
USER_DEFAULTS: dict[str, Any] = {
    "comment": "",
    "quota_bytes": 1000000000,
    "quota_bytes_used": 0,
    "global_admin": False,
    "enabled": True,
    "change_pw_next_login": False,
    "enable_imap": True,
    "enable_pop": True,
    "allow_spoofing": False,
    "forward_enabled": False,
    "forward_destination": [],
    "forward_keep": True,
    "reply_enabled": False,
    "reply_subject": None,
    "reply_body": None,
    "reply_startdate": "1900-01-01",
    "reply_enddate": "2999-12-31",
    "displayed_name": "",
    "spam_enabled": True,
    "spam_mark_as_read": True,
    "spam_threshold": 80,
}
_TYPES = {"comment": "string", "quota_bytes": "integer", "forward_destination": "array"}
_TYPES |= {k: "string" for k in ("reply_subject", "reply_body", "displayed_name")}
_TYPES |= {k: "string" for k in ("reply_startdate", "reply_enddate")}  # fields.Date
_TYPES |= {k: "integer" for k in ("spam_threshold",)}
_TYPES |= {k: "boolean" for k, v in USER_DEFAULTS.items() if isinstance(v, bool)}
USER_UPDATE = {"raw_password": "string", **{k: _TYPES[k] for k in USER_DEFAULTS if k in _TYPES}}
USER_CREATE = {"email": "string", **USER_UPDATE}
TOKEN_POST = {"email": "string", "comment": "string", "AuthorizedIP": "array"}
TOKEN_POST2 = {"comment": "string", "AuthorizedIP": "array"}
_PY_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
}
# validators.email (0.28.1), close enough: dot-atom local part, dotted domain, TLD of letters.
_EMAIL = re.compile(
    r"^[-!#$%&'*+/=?^_`{|}~0-9a-z]+(\.[-!#$%&'*+/=?^_`{|}~0-9a-z]+)*"
    r"@(?=.{1,253}$)([a-z0-9\u00a1-\uffff]([a-z0-9\u00a1-\uffff-]{0,61}[a-z0-9\u00a1-\uffff])?\.)+"
    r"([a-z\u00a1-\uffff]{2,63}|xn--[a-z0-9-]{2,59})$",
    re.IGNORECASE,
)
NOT_FOUND = (
    "<!doctype html>\n<html lang=en>\n<title>404 Not Found</title>\n<h1>Not Found</h1>\n"
    "<p>The requested URL was not found on the server. If you entered the URL manually please "
    "check your spelling and try again.</p>\n"
)
BAD_REQUEST = "The browser (or proxy) sent a request that this server could not understand."


def valid_email(email: str) -> bool:
    return bool(_EMAIL.match(email))


def normalise(email: str) -> str:
    """MailU's IdnaEmail.process_bind_param: lower case, the domain in IDNA."""
    if "@" not in email:
        raise ValueError('invalid email address (no "@")')
    local, domain = email.lower().rsplit("@", 1)
    return f"{local}@{idna.encode(domain).decode('ascii')}"


def display(email: str) -> str:
    local, domain = email.rsplit("@", 1)
    return f"{local}@{idna.decode(domain)}"


@dataclass
class Answer:
    status: int
    body: bytes
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, payload: Any) -> Answer:
        return cls(status, (json.dumps(payload) + "\n").encode(), "application/json")

    @classmethod
    def html(cls, status: int, text: str) -> Answer:
        return cls(status, text.encode(), "text/html; charset=utf-8")

    @classmethod
    def redirect(cls, status: int, location: str) -> Answer:
        answer = cls.html(status, f'<a href="{location}">{location}</a>')
        answer.headers["Location"] = location
        return answer


def _message(status: int, message: str) -> Answer:
    return Answer.json(status, {"code": status, "message": message})


def read_payload(
    headers: dict[str, str], raw: bytes, schema: dict[str, str], required: tuple[str, ...]
) -> tuple[Any, Answer | None]:
    """flask-restx's @expect with validate=True: get_json, then the model's JSON schema."""
    mimetype = headers.get("content-type", "").split(";")[0].strip().lower()
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        return None, Answer.json(
            415,
            {
                "message": (
                    "Did not attempt to load JSON data because the request Content-Type was not "
                    "'application/json'."
                )
            },
        )
    try:
        data = json.loads(raw)
    except ValueError:
        return None, Answer.json(400, {"message": BAD_REQUEST})
    errors: dict[str, str] = {}
    if not isinstance(data, dict):
        errors[""] = f"{data!r} is not of type 'object'"
    else:
        for name, kind in schema.items():
            if name in data and not _PY_TYPES[kind](data[name]):
                errors[name] = f"{data[name]!r} is not of type '{kind}'"
            elif kind == "array" and name in data:
                for i, item in enumerate(data[name]):
                    if not isinstance(item, str):
                        errors[f"{name}.{i}"] = f"{item!r} is not of type 'string'"
        for name in required:
            if name not in data:
                errors[name] = f"{name!r} is a required property"
    if errors:
        body = {"errors": errors, "message": "Input payload validation failed"}
        return None, Answer.json(400, body)
    return data, None


def _bad_networks(ips: list[str]) -> str | None:
    for ip in ips:
        try:
            ipaddress.ip_network(ip, False)
        except ValueError:
            return f"Provided AuthorizedIP {ip} in {ips} is invalid"
    return None


@dataclass
class Route:
    parts: tuple[str, ...]  # literal segments, "*" for one <string:...> segment
    methods: dict[str, str]  # method -> Routes handler name
    schemas: dict[str, tuple[dict[str, str], tuple[str, ...]]] = field(default_factory=dict)

    def match(self, parts: list[str]) -> list[str] | None:
        if len(parts) != len(self.parts):
            return None
        args = []
        for want, got in zip(self.parts, parts, strict=True):
            if want == "*":
                if not got:
                    return None
                args.append(got)
            elif want != got:
                return None
        return args


ROUTES = [
    Route(
        ("user",),
        {"GET": "users", "POST": "create_user"},
        {"POST": (USER_CREATE, ("email", "raw_password"))},
    ),
    Route(
        ("user", "*"),
        {"GET": "user", "PATCH": "patch_user", "DELETE": "delete_user"},
        {"PATCH": (USER_UPDATE, ())},
    ),
    Route(
        ("token",),
        {"GET": "all_tokens", "POST": "create_token"},
        {"POST": (TOKEN_POST, ("email",))},
    ),
    Route(
        ("tokenuser", "*"),
        {"GET": "user_tokens", "POST": "create_user_token"},
        {"POST": (TOKEN_POST2, ())},
    ),
    Route(
        ("token", "*"),
        {"GET": "token", "PATCH": "patch_token", "DELETE": "delete_token"},
        {"PATCH": (TOKEN_POST2, ())},
    ),
]


class Routes:
    """api/v1 of one MailU double."""

    def __init__(self, mailu: MailuDouble) -> None:
        self.mailu = mailu

    def dispatch(
        self, method: str, path: str, headers: dict[str, str], raw: bytes, client: str
    ) -> Answer:
        parts = path[1:].split("/")
        for route in ROUTES:
            args = route.match(parts)
            if args is None:
                continue
            if method not in route.methods:
                return Answer.json(
                    405, {"message": "The method is not allowed for the requested URL."}
                )
            payload = None
            if method in route.schemas:
                schema, required = route.schemas[method]
                payload, error = read_payload(headers, raw, schema, required)
                if error is not None:
                    return error
            denied = self.authorize(headers, client)
            if denied is not None:
                return denied
            handler = getattr(self, route.methods[method])
            return handler(*args, payload) if method in route.schemas else handler(*args)
        return Answer.html(404, NOT_FOUND)

    def authorize(self, headers: dict[str, str], client: str) -> Answer | None:
        """api/common.api_token_authorization."""
        limiter, token = self.mailu.limiter, self.mailu.api_token
        if limiter.should_limit_ip(client):
            return Answer.json(429, {"message": "Too many attempts from your IP (rate-limit)"})
        auth = headers.get("authorization")
        if not auth:
            return Answer.json(401, {"message": "A valid Authorization header is mandatory"})
        if token is None:  # len(None) raises: Flask's 500
            return Answer.json(500, {"message": "Internal Server Error"})
        given = auth.removeprefix("Bearer ").encode()
        if len(token) < 4 or not hmac.compare_digest(given, token.encode()):
            limiter.limit_ip(client)
            return Answer.json(403, {"message": "Invalid API token"})
        return None

    # -- users -------------------------------------------------------------------------------

    def _view(self, user: dict[str, Any]) -> dict[str, Any]:
        view = {"email": display(user["email"]), "password": user["password"]}
        return {**view, **{k: user.get(k, v) for k, v in USER_DEFAULTS.items()}}

    def users(self) -> Answer:
        rows = self.mailu.sql("SELECT email FROM user ORDER BY email")
        views = [self._view(self.mailu.find_user(email) or {}) for (email,) in rows]
        return Answer.json(200, [{k: v for k, v in u.items() if v is not None} for u in views])

    def user(self, email: str) -> Answer:
        if not valid_email(email):
            return _message(400, f"Provided email address {email} is not a valid email address")
        found = self.mailu.find_user(email)
        if found is None:
            return _message(404, f"User {email} cannot be found")
        return Answer.json(200, self._view(found))

    def create_user(self, data: dict[str, Any]) -> Answer:
        email = data["email"]
        if not valid_email(email):
            return _message(400, f"Provided email address {email} is not a valid email address")
        if self.mailu.find_user(email) is not None:
            return _message(409, f"User {email} already exists")
        fields = {k: v for k, v in data.items() if k in USER_DEFAULTS}
        self.mailu.add_user(email, data["raw_password"], **fields)
        return _message(200, f"User {email} has been created")

    def patch_user(self, email: str, data: dict[str, Any]) -> Answer:
        if not valid_email(email):
            return _message(400, f"Provided email address {email} is not a valid email address")
        found = self.mailu.find_user(email)
        if found is None:
            return _message(404, f"User {email} cannot be found")
        if "raw_password" in data:
            self.mailu.set_stored(found["email"], self.mailu.hash_password(data["raw_password"]))
        changes = {k: v for k, v in data.items() if k in USER_DEFAULTS}
        if changes:
            self.mailu.update_user(found["email"], **changes)
        return _message(200, f"User {email} has been updated")

    def delete_user(self, email: str) -> Answer:
        if not valid_email(email):
            return _message(400, f"Provided email address {email} is not a valid email address")
        found = self.mailu.find_user(email)
        if found is None:
            return _message(404, f"User {email} cannot be found")
        self.mailu.sql("DELETE FROM token WHERE user_email = ?", found["email"])
        self.mailu.sql("DELETE FROM user WHERE email = ?", found["email"])
        return _message(200, f"User {email} has been deleted")

    # -- tokens ------------------------------------------------------------------------------

    def _token_row(self, token_id: str) -> dict[str, Any] | None:
        if not token_id.isdigit():
            return None
        rows = self.mailu.sql(
            "SELECT id, user_email, ip, comment, created_at, updated_at FROM token WHERE id = ?",
            int(token_id),
        )
        if not rows:
            return None
        keys = ("id", "email", "ip", "comment", "created", "updated")
        return dict(zip(keys, rows[0], strict=True))

    @staticmethod
    def _token_view(row: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": row["id"],
            "email": row["email"],
            "comment": row["comment"],
            "AuthorizedIP": [n for n in (row["ip"] or "").split(",") if n],
            "Created": row["created"],
            "Last edit": str(row["updated"]),
        }

    def all_tokens(self) -> Answer:
        """marshal_with(token_user_fields, skip_none=True): string ids, no None fields."""
        rows = self.mailu.sql("SELECT id FROM token ORDER BY id")
        out = []
        for (token_id,) in rows:
            row = self._token_row(str(token_id))
            assert row is not None
            view = {**self._token_view(row), "id": str(row["id"])}
            if row["updated"] is None:
                del view["Last edit"]
            out.append(view)
        return Answer.json(200, out)

    def create_token(self, data: dict[str, Any]) -> Answer:
        return self._create_token(data["email"], data)

    def create_user_token(self, email: str, data: dict[str, Any]) -> Answer:
        return self._create_token(email, data)

    def _create_token(self, email: str, data: dict[str, Any]) -> Answer:
        if not valid_email(email):
            return _message(400, f"Provided email address {email} is not a valid email address")
        if self.mailu.find_user(email) is None:
            return _message(404, f"User {email} cannot be found")
        ips = list(data.get("AuthorizedIP", []))
        bad = _bad_networks(ips)
        if bad:
            return _message(400, bad)
        raw = secrets.token_hex(16)
        created = self.mailu.now().date().isoformat()
        self.mailu.sql(
            "INSERT INTO token (user_email, password, ip, comment, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            email,  # as sent: MailU's token.user_email is a plain String column
            hash_token(raw),
            ",".join(sorted(set(ips))),
            data.get("comment", ""),
            created,
        )
        ((token_id,),) = self.mailu.sql("SELECT last_insert_rowid()")
        row = self._token_row(str(token_id))
        assert row is not None
        view = self._token_view(row)
        return Answer.json(
            200,
            {
                "id": view["id"],
                "token": raw,
                "email": view["email"],
                "comment": view["comment"],
                "AuthorizedIP": view["AuthorizedIP"],
                "Created": view["Created"],
            },
        )

    def user_tokens(self, email: str) -> Answer:
        if not valid_email(email):
            return _message(400, f"Provided email address {email} is not a valid email address")
        found = self.mailu.find_user(email)
        if found is None:
            return _message(404, f"User {email} cannot be found")
        rows = self.mailu.sql(
            "SELECT id FROM token WHERE user_email = ? ORDER BY id", found["email"]
        )
        views = [self._token_view(self._token_row(str(i)) or {}) for (i,) in rows]
        return Answer.json(200, views)

    def token(self, token_id: str) -> Answer:
        row = self._token_row(token_id)
        if row is None:
            return _no_record(token_id)
        return Answer.json(200, self._token_view(row))

    def patch_token(self, token_id: str, data: dict[str, Any]) -> Answer:
        row = self._token_row(token_id)
        if row is None:
            return _no_record(token_id)
        if "AuthorizedIP" in data:
            bad = _bad_networks(list(data["AuthorizedIP"]))
            if bad:
                return _message(400, bad)
        comment = data.get("comment", row["comment"])
        ips = ",".join(
            sorted(set(data.get("AuthorizedIP", [n for n in (row["ip"] or "").split(",") if n])))
        )
        today = self.mailu.now().date().isoformat()
        self.mailu.sql(
            "UPDATE token SET comment = ?, ip = ?, updated_at = ? WHERE id = ?",
            comment,
            ips,
            today,
            row["id"],
        )
        return _message(200, f"Token with id {token_id} has been updated")

    def delete_token(self, token_id: str) -> Answer:
        row = self._token_row(token_id)
        if row is None:
            return _no_record(token_id)
        self.mailu.sql("DELETE FROM token WHERE id = ?", row["id"])
        return _message(200, f"Token with id {token_id} has been deleted")


def _no_record(token_id: str) -> Answer:
    return _message(404, f"Record cannot be found for id {token_id} or invalid id provided")
