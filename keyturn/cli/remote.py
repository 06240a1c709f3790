"""Remote mode: the CLI talks to a `keyturn serve` over its API instead of the database.

Set `KEYTURN_URL` (the server, e.g. `https://keyturn.internal` or `http://127.0.0.1:8080`)
and `KEYTURN_TOKEN` (an API token). The commands in COMMANDS then send the API request that
does the same thing and print what it answers, in the same shapes as locally (`--json`
included). Everything else (init, apply, rekey, run-due, worker, serve, demo, audit) needs
the database and refuses in remote mode with one line.

The token travels in an `Authorization` header, never on a command line; plain `http://` is
accepted only for a loopback server, since the token and secrets would cross the network in
clear. API errors arrive as keyturn's JSON envelope and are raised as the keyturn error of
the same code, so the CLI prints them as it prints its own.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import sys
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import typer

from keyturn import __version__
from keyturn.domain import errors as e
from keyturn.domain.ids import validate_id

if TYPE_CHECKING:  # httpx is imported only in remote mode: every local command starts faster
    import httpx

COMMANDS = (
    "list, show, get, consumers, delete, rotate, resume, abort, verify, token create/list/revoke, "
    "doctor, run, report, metrics"
)
REMOTE = frozenset(
    {
        "list",
        "show",
        "get",
        "consumers",
        "delete",
        "rotate",
        "resume",
        "abort",
        "verify",
        "token",
        "doctor",
        "run",
        "report",
        "metrics",
    }
)
PREFIX = "/api/v1"
CONNECT_SECONDS, READ_SECONDS = 10.0, 300.0  # a rotation runs while the request waits
PAGE = 1000


def configured() -> bool:
    return bool(os.environ.get("KEYTURN_URL"))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def base_url(url: str) -> str:
    """KEYTURN_URL checked and normalised to the API's root (…/api/v1)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise e.UsageError(
            "KEYTURN_URL must be the server's address, e.g. https://keyturn.internal or "
            "http://127.0.0.1:8080"
        )
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise e.UsageError(
            f"KEYTURN_URL uses plain http to {parts.hostname}: the token and secrets would "
            "cross the network in clear; use https:// (a TLS proxy in front of keyturn serve)"
        )
    path = parts.path.rstrip("/").removesuffix(PREFIX)
    return f"{parts.scheme}://{parts.netloc}{path}{PREFIX}"


def _error_classes() -> dict[str, type[e.KeyturnError]]:
    found: dict[str, type[e.KeyturnError]] = {}
    pending: list[type[e.KeyturnError]] = [e.KeyturnError]
    while pending:
        cls = pending.pop()
        found.setdefault(cls.code, cls)
        pending.extend(cls.__subclasses__())
    return found


_CLASSES = _error_classes()


# Loaded with httpx for what a sync client never runs: httpcore imports trio when it is
# installed (its async locks under trio), and httpx imports its own command line (`httpx._main`,
# with Rich and Pygments) when click and Rich are installed, as they are beside keyturn.
# Together 100-150 ms of a remote command's start.
_UNUSED = ("trio", "httpx._main")


@contextlib.contextmanager
def _lean_httpx() -> Iterator[None]:
    """While httpx loads and builds the client, those imports fail as if the packages were
    absent (both libraries expect that and carry on without them). Afterwards `import trio`
    and `import httpx._main` work again, but httpx and httpcore keep what they found: httpx's
    own `main` says it needs httpx[cli], and httpcore refuses to run under trio, for the rest
    of the process. Nothing in the CLI does either (the SDK in keyturn.client is asyncio only).
    """
    # With httpcore loaded already there is nothing left to save.
    loaded = "httpcore" in sys.modules
    hidden = [] if loaded else [name for name in _UNUSED if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        for name in hidden:
            if sys.modules.get(name, ...) is None:  # still our placeholder
                del sys.modules[name]


class Remote:
    """A client of one keyturn server's API, with the CLI's token."""

    def __init__(self, url: str, token: str, transport: httpx.BaseTransport | None = None):
        with _lean_httpx():
            import httpx

            self.url = base_url(url)
            self._transport_error = httpx.TransportError
            self.client = httpx.Client(
                base_url=self.url,
                headers={
                    "Authorization": f"Bearer {token}",
                    "User-Agent": f"keyturn-cli/{__version__}",
                },
                timeout=httpx.Timeout(CONNECT_SECONDS, read=READ_SECONDS),
                transport=transport,
                follow_redirects=False,
            )

    def close(self) -> None:
        self.client.close()

    # -- transport -------------------------------------------------------------------------

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One request; the answer's JSON, or the keyturn error the server reported."""
        response = self._send(method, path, **kwargs)
        return None if response.status_code == 204 else response.json()

    def text(self, path: str, **kwargs: Any) -> str:
        """A GET whose answer is text (CSV, HTML, Prometheus's exposition)."""
        return self._send("GET", path, **kwargs).text

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.client.request(method, path, **kwargs)
        except self._transport_error as exc:
            raise e.KeyturnError(
                f"cannot reach keyturn at {self.url} ({exc.__class__.__name__}): is "
                "`keyturn serve` running there, and is KEYTURN_URL right?"
            ) from None
        if response.is_success:
            return response
        raise self._error(response)

    def _error(self, response: httpx.Response) -> e.KeyturnError:
        try:
            body = response.json()["error"]
            code, message = str(body["code"]), str(body["message"])
        except (ValueError, KeyError, TypeError):
            return e.KeyturnError(
                f"keyturn at {self.url} answered {response.status_code} without keyturn's "
                "error envelope: is KEYTURN_URL a keyturn server?"
            )
        if response.status_code == 401:
            message = f"{message} (KEYTURN_TOKEN was refused: unknown, expired or revoked)"
        return _CLASSES.get(code, e.KeyturnError)(message)

    # -- credentials -----------------------------------------------------------------------

    def credentials(self, tenant: str | None, kind: str | None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": PAGE}
        params.update({k: v for k, v in (("tenant", tenant), ("kind", kind)) if v})
        rows: list[dict[str, Any]] = []
        offset: int | None = 0
        while offset is not None:
            page = self.call("GET", "/credentials", params={**params, "offset": offset})
            rows += page["credentials"]
            offset = page["next_offset"]
        return rows

    def credential(self, credential_id: str) -> dict[str, Any]:
        return dict(self.call("GET", f"/credentials/{validate_id(credential_id)}"))

    def versions(self, credential_id: str) -> list[dict[str, Any]]:
        return list(self.call("GET", f"/credentials/{validate_id(credential_id)}/versions"))

    def consumers(self, credential_id: str) -> list[dict[str, Any]]:
        return list(self.call("GET", f"/credentials/{validate_id(credential_id)}/consumers"))

    def secret(self, credential_id: str, which: str | None) -> dict[str, Any]:
        """*which* version alone, or (None) the current one with the previous and next."""
        path = f"/credentials/{validate_id(credential_id)}/secret"
        return dict(self.call("GET", path, params={"version": which} if which else {}))

    def delete(self, credential_id: str, reason: str) -> None:
        self.call("DELETE", f"/credentials/{validate_id(credential_id)}", params={"reason": reason})

    # -- rotations -------------------------------------------------------------------------

    def rotate(self, credential_id: str, reason: str, emergency: bool) -> dict[str, Any]:
        body = {"reason": reason, "emergency": emergency}
        return dict(
            self.call("POST", f"/credentials/{validate_id(credential_id)}/rotate", json=body)
        )

    def resume(self, credential_id: str, now: bool) -> list[dict[str, Any]]:
        path = f"/credentials/{validate_id(credential_id)}/resume"
        return list(self.call("POST", path, params={"now": str(now).lower()}))

    def abort(self, credential_id: str, reason: str) -> dict[str, Any]:
        path = f"/credentials/{validate_id(credential_id)}/abort"
        return dict(self.call("POST", path, json={"reason": reason}))

    def verify(self, credential_id: str) -> dict[str, Any]:
        return dict(self.call("POST", f"/credentials/{validate_id(credential_id)}/verify"))

    def audit(self, credential_id: str, since: datetime | None) -> Iterator[dict[str, Any]]:
        """The credential's audit entries (oldest first) from *since*."""
        params: dict[str, Any] = {"credential": validate_id(credential_id), "limit": PAGE}
        if since is not None:
            params["since"] = since.isoformat()
        after = 0
        while True:
            page = self.call("GET", "/audit", params={**params, "after": after})
            yield from page["entries"]
            if page["next_after"] is None:
                return
            after = page["next_after"]

    # -- tokens and health -----------------------------------------------------------------

    def create_token(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self.call("POST", "/tokens", json=body))

    def tokens(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "/tokens"))

    def revoke_token(self, token_id: str) -> None:
        self.call("DELETE", f"/tokens/{token_id}")

    def health(self) -> dict[str, Any]:
        return dict(self.call("GET", "/health"))

    # -- compliance ------------------------------------------------------------------------

    def report(self, params: dict[str, Any]) -> dict[str, Any]:
        """The JSON report (GET /report with *params*: at, tenant, kind, owner, ...)."""
        return dict(self.call("GET", "/report", params={**params, "format": "json"}))

    def report_text(self, form: str, params: dict[str, Any]) -> str:
        return self.text("/report", params={**params, "format": form})

    def metrics(self) -> str:
        """`/metrics`, beside the API's root rather than under it."""
        return self.text(self.url.removesuffix(PREFIX) + "/metrics")


def connect(ctx: typer.Context) -> Remote | None:
    """The API client when remote mode is on (closed with the command), else None."""
    if not configured():
        return None
    token = os.environ.get("KEYTURN_TOKEN", "").strip()
    if not token:
        raise e.UsageError(
            "KEYTURN_URL is set but KEYTURN_TOKEN is not: export an API token "
            "(`keyturn token create` on the server's host)"
        )
    client = Remote(os.environ["KEYTURN_URL"], token)
    ctx.call_on_close(client.close)
    return client
