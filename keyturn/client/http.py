"""keyturn's API as the SDK's source: conditional reads, long polls and consumer reports."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from keyturn.client.values import Bundle, ClientError, Refused, Unreachable, Value

PREFIX = "/api/v1"
# How long a watcher's request is held by the server (its `?wait=`); the read timeout
# leaves room for the answer.
LONG_POLL = 30.0
TIMEOUT = 10.0


def base_url(url: str) -> str:
    """`http://host:port` or `.../api/v1` -> the API's root."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ClientError(f"KEYTURN_URL must be an http(s) URL, not {url!r}")
    path = parts.path.rstrip("/")
    if not path.endswith(PREFIX):
        path += PREFIX
    return f"{parts.scheme}://{parts.netloc}{path}"


def _value(data: dict[str, Any]) -> Value:
    return Value(
        value=str(data["value"]),
        version=int(data["version"]),
        state=str(data["state"]),
        username=data.get("username"),
        on_target=data.get("on_target"),
    )


def bundle(credential_id: str, data: dict[str, Any], tag: str | None) -> Bundle:
    """The API's SecretOut as a Bundle."""
    previous, nxt = data.get("previous"), data.get("next")
    return Bundle(
        credential=credential_id,
        current=_value(data),
        previous=_value(previous) if previous else None,
        next=_value(nxt) if nxt else None,
        tag=tag,
    )


def secret_path(credential_id: str) -> str:
    return f"/credentials/{quote(credential_id, safe='/')}/secret"


def report_path(credential_id: str, consumer: str) -> str:
    return f"/credentials/{quote(credential_id, safe='/')}/consumers/{quote(consumer, safe='')}"


def check(response: httpx.Response, what: str) -> None:
    """Raise the SDK's error for a failed answer (its message from the API's envelope)."""
    if response.status_code < 400:
        return
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.reason_phrase
    error = Unreachable if response.status_code >= 500 else Refused
    raise error(f"{what}: {response.status_code} {message}")


def endpoint(url: str | None, token: str | None) -> tuple[str, str]:
    """keyturn's API base and the token, as given or from KEYTURN_URL / KEYTURN_TOKEN."""
    url = url or os.environ.get("KEYTURN_URL")
    token = token or os.environ.get("KEYTURN_TOKEN")
    if not url or not token:
        raise ClientError("give url and token, or set KEYTURN_URL and KEYTURN_TOKEN")
    return base_url(url), token


def headers(token: str, tag: str | None = None) -> dict[str, str]:
    out = {"Authorization": f"Bearer {token}", "User-Agent": "keyturn-client"}
    if tag:
        out["If-None-Match"] = tag
    return out


class HttpSource:
    """Reads from `keyturn serve` with a token (a `consumer` token scoped to the ids)."""

    reports = True

    def __init__(self, url: str | None = None, token: str | None = None, **httpx_args: Any):
        self.url, self.token = endpoint(url, token)
        self._http = httpx.Client(base_url=self.url, timeout=TIMEOUT, **httpx_args)

    def fetch(self, credential_id: str, tag: str | None = None, wait: float = 0) -> Bundle | None:
        """The credential's values, or None when they are still those named by *tag*
        (after holding up to *wait* seconds for a change)."""
        params = {"wait": f"{wait:g}"} if tag and wait else None
        try:
            response = self._http.get(
                secret_path(credential_id),
                params=params,
                headers=headers(self.token, tag),
                timeout=httpx.Timeout(TIMEOUT, read=TIMEOUT + wait),
            )
        except httpx.HTTPError as exc:
            raise Unreachable(f"keyturn at {self.url}: {type(exc).__name__}") from None
        if response.status_code == 304:
            return None
        check(response, f"read {credential_id}")
        return bundle(credential_id, response.json(), response.headers.get("etag"))

    def report(self, credential_id: str, consumer: str, body: dict[str, Any]) -> None:
        try:
            response = self._http.post(
                report_path(credential_id, consumer), json=body, headers=headers(self.token)
            )
        except httpx.HTTPError as exc:
            raise Unreachable(f"keyturn at {self.url}: {type(exc).__name__}") from None
        check(response, f"report {consumer} on {credential_id}")

    def close(self) -> None:
        self._http.close()


class AsyncHttpSource:
    """HttpSource's asyncio twin (httpx.AsyncClient)."""

    reports = True

    def __init__(self, url: str | None = None, token: str | None = None, **httpx_args: Any):
        self.url, self.token = endpoint(url, token)
        self._http = httpx.AsyncClient(base_url=self.url, timeout=TIMEOUT, **httpx_args)

    async def fetch(
        self, credential_id: str, tag: str | None = None, wait: float = 0
    ) -> Bundle | None:
        params = {"wait": f"{wait:g}"} if tag and wait else None
        try:
            response = await self._http.get(
                secret_path(credential_id),
                params=params,
                headers=headers(self.token, tag),
                timeout=httpx.Timeout(TIMEOUT, read=TIMEOUT + wait),
            )
        except httpx.HTTPError as exc:
            raise Unreachable(f"keyturn at {self.url}: {type(exc).__name__}") from None
        if response.status_code == 304:
            return None
        check(response, f"read {credential_id}")
        return bundle(credential_id, response.json(), response.headers.get("etag"))

    async def report(self, credential_id: str, consumer: str, body: dict[str, Any]) -> None:
        try:
            response = await self._http.post(
                report_path(credential_id, consumer), json=body, headers=headers(self.token)
            )
        except httpx.HTTPError as exc:
            raise Unreachable(f"keyturn at {self.url}: {type(exc).__name__}") from None
        check(response, f"report {consumer} on {credential_id}")

    async def close(self) -> None:
        await self._http.aclose()


__all__ = ["AsyncHttpSource", "HttpSource", "base_url", "bundle"]
