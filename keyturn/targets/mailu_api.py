"""The few calls of MailU's admin REST API that keyturn makes, and what MailU's answers mean.

MailU's admin (``core/admin/mailu/api``, releases 1.9 to 2024.06) answers in these ways, each
mapped here, once, to the keyturn error that names the cause:

- ``429 {"message": "Too many attempts from your IP (rate-limit)"}``: more than 5 failed logins
  or wrong API tokens within an hour (``AUTH_RATELIMIT_IP = 5/hour``) from keyturn's /24
  network; then every request gets it, even with the right token. MailU sends no
  ``Retry-After``: keyturn waits ``ratelimit_window`` (the window of that limit), and makes no
  further request in the same attempt.
- ``401`` (no ``Authorization`` header), ``403 {"message": "Invalid API token"}`` (each one
  counts against the same limit).
- ``400`` either ``{"code": 400, "message": ...}`` (an invalid e-mail or ``AuthorizedIP``) or
  flask-restx's ``{"errors": {field: message}, "message": "Input payload validation
  failed"}``; ``404 {"code": 404, "message": "User ... cannot be found"}`` (or ``Record cannot
  be found for id ...``), while an unknown route is an HTML 404 page; ``405`` for a method a
  route lacks; ``415`` for a body that is not JSON.
- ``500`` with the HTML ``<p>Error: API_TOKEN is not configured</p>`` when ``API_TOKEN`` is
  empty, or ``{"message": "Internal Server Error"}`` when it is unset; behind MailU's front,
  an API that is off (``API=false``) redirects to the login page (``/sso/login``) or is an
  nginx 404.

MailU's messages quote e-mails, ids and networks, and its validation errors quote the input:
keyturn repeats them only with every value it sent blotted out.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from keyturn.domain.durations import format_duration
from keyturn.domain.errors import (
    KeyturnError,
    PluginMissing,
    TargetRateLimited,
    TargetRejected,
    TargetUnreachable,
)
from keyturn.domain.model import Secret
from keyturn.targets.base import TargetContext, redact

if TYPE_CHECKING:
    import httpx

__all__ = ["MailuApi", "answer_error"]

_MESSAGE_LIMIT = 300
# What a validation error about a field means for the keyturn settings that fill it.
_FIELDS = {
    "comment": "token_comment",
    "AuthorizedIP": "token_ips",
    "email": "username",
    "raw_password": "the generated password",
}


class MailuApi:
    """One tenant's MailU admin API, with the Bearer API token; driver errors mapped here."""

    def __init__(
        self,
        url: str,
        api_path: str,
        api_token: str,
        context: TargetContext,
        *,
        timeout: float,
        ca_file: str | None,
        window: timedelta,
    ) -> None:
        self.url = url
        self._base = url + api_path
        self._token_ref = api_token
        self._context = context
        self._timeout, self._ca_file = timeout, ca_file
        self.window = window
        self._client: httpx.Client | None = None
        # Once MailU rate-limits us, this attempt sends nothing more (monotonic deadline).
        self._limited_until: float | None = None

    def _http(self) -> httpx.Client:
        if self._client is None:
            try:
                import httpx
            except ImportError as exc:  # pragma: no cover - httpx is a core dependency
                raise PluginMissing("the mailu target needs httpx: pip install httpx") from exc
            token = self._context.resolve(self._token_ref)
            self._client = httpx.Client(
                base_url=self._base,
                headers={"Authorization": f"Bearer {token.reveal()}"},
                timeout=self._timeout,
                verify=self._ca_file or True,
                follow_redirects=False,
            )
        return self._client

    def call(
        self,
        method: str,
        path: str,
        user: str,
        body: Any = None,
        *,
        missing_ok: bool = False,
        sent: tuple[Secret, ...] = (),
    ) -> Any:
        """One request: the decoded JSON of a 2xx answer (None for a 404 of a record that is
        gone, with *missing_ok*), a keyturn error otherwise. *sent* are the values in *body*,
        blotted out of any MailU message keyturn repeats."""
        import httpx

        what = f"MailU {self.url}: {method} {path.split('/')[1]} for {user}"
        self._check_limited(what)
        try:
            response = self._http().request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise TargetUnreachable(f"{what}: cannot connect ({type(exc).__name__})") from exc
        if response.is_success:
            try:
                return response.json()
            except ValueError as exc:
                raise TargetRejected(
                    f"{what}: the answer is not JSON (an HTML page?): is url the MailU base "
                    "address, e.g. https://mail.example.com, and api_path its API (/api/v1)?"
                ) from exc
        if missing_ok and response.status_code == 404 and _json(response) is not None:
            return None
        error = answer_error(what, response, sent, self.window)
        if isinstance(error, TargetRateLimited):
            self.limited(error.retry_after)
        raise error

    def limited(self, wait: timedelta) -> None:
        """MailU rate-limits keyturn's address: send nothing more for *wait*."""
        self._limited_until = time.monotonic() + wait.total_seconds()

    def _check_limited(self, what: str) -> None:
        if self._limited_until is None:
            return
        left = self._limited_until - time.monotonic()
        if left > 0:
            raise TargetRateLimited(
                f"{what}: not sent: MailU rate-limited keyturn's address in this attempt "
                f"(429); waiting {format_duration(timedelta(seconds=int(left) + 1))}",
                timedelta(seconds=left),
            )

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _json(response: httpx.Response) -> Any:
    if "json" not in response.headers.get("content-type", ""):
        return None
    try:
        return response.json()
    except ValueError:
        return None


def _mailu_message(body: Any, sent: tuple[Secret, ...]) -> str:
    """MailU's message (and per-field errors), with the values keyturn sent blotted out."""
    if not isinstance(body, dict):
        return ""
    parts = []
    errors = body.get("errors")
    if isinstance(errors, dict):
        for field, message in errors.items():
            name = str(field).split(".")[0]
            setting = _FIELDS.get(name)
            hint = f" (from {setting})" if setting else ""
            parts.append(f"field {field or '(body)'}{hint}: {message}")
    elif body.get("message"):
        parts.append(str(body["message"]))
    text = redact("; ".join(parts), sent)
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 3] + "..."


def answer_error(
    what: str, response: httpx.Response, sent: tuple[Secret, ...], window: timedelta
) -> KeyturnError:
    """The keyturn error for a MailU answer that is not a success."""
    status, body = response.status_code, _json(response)
    said = _mailu_message(body, sent)
    if status == 429:
        wait = _retry_after(response) or window
        at = datetime.now(UTC) + wait
        return TargetRateLimited(
            f"{what}: MailU rate-limited keyturn's address (429: more than 5 failed logins or "
            "wrong API tokens in an hour from its /24 network); keyturn sends nothing more and "
            f"tries again in {format_duration(wait)}, at {at:%Y-%m-%d %H:%M} UTC",
            wait,
        )
    if 300 <= status < 400:
        return _redirect_error(what, status, response.headers.get("location", ""))
    if status >= 500:
        return _server_error(what, status, response.text, body)
    if status == 404 and body is None:
        return TargetRejected(
            f"{what}: MailU has no such API route (an HTML 404 page): is url the MailU base "
            "address and api_path /api/v1, and is the API on (API=true and API_TOKEN in "
            "mailu.env)?"
        )
    cls, hint = _CLIENT_ERRORS.get(status, (TargetRejected, f"MailU answered HTTP {status}"))
    return cls(f"{what}: {hint}" + (f"; MailU says: {said}" if said else ""))


_CLIENT_ERRORS: dict[int, tuple[type[KeyturnError], str]] = {
    400: (TargetRejected, "MailU refused the request as invalid (400)"),
    401: (
        TargetRejected,
        "no Authorization header reached MailU (401): is a proxy stripping it?",
    ),
    403: (
        TargetRejected,
        "MailU refused the API token (403): api_token must resolve to the API_TOKEN of this "
        "tenant's mailu.env; each refusal counts against MailU's limit of 5 an hour from "
        "keyturn's network, after which MailU refuses every request (429) for up to an hour",
    ),
    404: (TargetRejected, "not found on this MailU (404)"),
    405: (
        TargetRejected,
        "MailU does not offer this method here (405): keyturn needs MailU 1.9 or later "
        "(2024.06 tested)",
    ),
    409: (TargetRejected, "MailU reports a conflict (409)"),
    415: (TargetRejected, "MailU wants a JSON body (415)"),
}


def _redirect_error(what: str, status: int, location: str) -> KeyturnError:
    if "/sso/" in location or "/webmail" in location:
        return TargetRejected(
            f"{what}: MailU redirected to its login page (HTTP {status}): its API is off; "
            "set API=true and API_TOKEN in mailu.env (and check url and api_path)"
        )
    return TargetRejected(
        f"{what}: redirected (HTTP {status}): is url the MailU base address, e.g. "
        "https://mail.example.com, with api_path /api/v1?"
    )


def _server_error(what: str, status: int, text: str, body: Any) -> KeyturnError:
    if "API_TOKEN is not configured" in text:
        return TargetRejected(
            f"{what}: MailU's API is on but API_TOKEN is empty in mailu.env (HTTP {status}): "
            "set API_TOKEN there, and api_token to a reference to it"
        )
    hint = ""
    if status == 500 and isinstance(body, dict):
        # What MailU 2024.06 answers to every authorised request when API_TOKEN is unset.
        hint = " (if API=true while API_TOKEN is unset in mailu.env, MailU fails this way)"
    return TargetUnreachable(
        f"{what}: MailU failed with HTTP {status}{hint}; keyturn retries later"
    )


def _retry_after(response: httpx.Response) -> timedelta | None:
    """A Retry-After header (a proxy in front of MailU may add one; MailU does not)."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return timedelta(seconds=int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(when - datetime.now(UTC), timedelta(0))
