"""HashiCorp Vault / OpenBao KV v2 as the SDK's source (what keyturn's `vault` store writes),
read over plain HTTP with httpx: hvac is not needed.

The secret `secret/{tenant}/{name}` holds the current value under `value` and the previous one
under `previous`; its `custom_metadata` names keyturn's version numbers
(`keyturn_version`, `keyturn_previous_version`, and `keyturn_next_version` with `next`).
Vault has no long poll: a waiting reader asks again every few seconds.
"""

from __future__ import annotations

import os
import time
from typing import Any

import httpx

from keyturn.client.values import Bundle, ClientError, Refused, Unreachable, Value

POLL_SECONDS = 2.0


class VaultSource:
    """Reads the KV v2 secret keyturn publishes for each credential."""

    reports = False

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        path: str = "secret/{tenant}/{name}",
        key: str = "value",
        previous_key: str = "previous",
        next_key: str = "next",
        namespace: str | None = None,
        **httpx_args: Any,
    ) -> None:
        url = url or os.environ.get("VAULT_ADDR")
        token = token or os.environ.get("VAULT_TOKEN")
        if not url or not token:
            raise ClientError("give url and token, or set VAULT_ADDR and VAULT_TOKEN")
        self.template, self.keys = path, (key, previous_key, next_key)
        sent = {"X-Vault-Token": token} | ({"X-Vault-Namespace": namespace} if namespace else {})
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=sent, timeout=10, **httpx_args)

    def _where(self, credential_id: str) -> str:
        tenant, _, name = credential_id.partition("/")
        full = self.template.format(id=credential_id, tenant=tenant, name=name or tenant)
        mount, _, rest = full.strip("/").partition("/")
        return f"/v1/{mount}/data/{rest}"

    def _get(self, credential_id: str) -> dict[str, Any]:
        try:
            response = self._http.get(self._where(credential_id))
        except httpx.HTTPError as exc:
            raise Unreachable(f"vault: {type(exc).__name__}") from None
        if response.status_code >= 400:
            error = Unreachable if response.status_code >= 500 else Refused
            raise error(f"vault: read {credential_id}: {response.status_code}")
        data: dict[str, Any] = response.json()["data"]
        return data

    def fetch(self, credential_id: str, tag: str | None = None, wait: float = 0) -> Bundle | None:
        deadline = time.monotonic() + wait
        found = self._get(credential_id)
        while tag is not None and self._tag(found) == tag and time.monotonic() < deadline:
            time.sleep(min(POLL_SECONDS, max(deadline - time.monotonic(), 0)))
            found = self._get(credential_id)
        if tag is not None and self._tag(found) == tag:
            return None
        data, meta = found.get("data") or {}, found.get("metadata") or {}
        custom = meta.get("custom_metadata") or {}
        key, previous_key, next_key = self.keys
        if key not in data:
            raise Refused(f"vault: {credential_id} holds no {key!r}")

        def value(field: str, number: str, state: str) -> Value | None:
            if not field or field not in data:
                return None
            raw = str(custom.get(number, ""))
            return Value(str(data[field]), int(raw) if raw.isdigit() else None, state)

        return Bundle(
            credential=credential_id,
            current=value(key, "keyturn_version", "current"),  # type: ignore[arg-type]
            previous=value(previous_key, "keyturn_previous_version", "previous"),
            next=value(next_key, "keyturn_next_version", "pending"),
            tag=self._tag(found),
        )

    @staticmethod
    def _tag(found: dict[str, Any]) -> str:
        meta = found.get("metadata") or {}
        custom = meta.get("custom_metadata") or {}
        # The store labels the KV version after writing it: a new label is a change too.
        return f"{meta.get('version')}:{custom.get('keyturn_version')}"

    def report(self, credential_id: str, consumer: str, body: dict[str, Any]) -> None:
        """A store cannot carry a report back to keyturn."""

    def close(self) -> None:
        self._http.close()


__all__ = ["VaultSource"]
