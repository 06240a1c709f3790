"""CyberArk Conjur as a store, through its REST API (httpx).

keyturn logs in as a Conjur host or user with its API key (`POST /authn/{account}/{login}/
authenticate`) for a short-lived access token (8 minutes), renewed before it runs out and
again whenever Conjur answers 401. Each credential is one variable (`{tenant}/{name}`),
declared beforehand in a Conjur policy (keyturn does not write policy); publishing adds a
secret version (`POST /secrets/{account}/variable/{id}`) and reads it back.

Conjur keeps the twenty latest versions of a variable but has no check-and-set: keyturn's
mark is the version number it last wrote (`GET /resources/...` lists them without values),
and a newer version that holds something else is drift, reported and not overwritten. The
check and the write are two requests, so a write landing between them is seen at the next
verify rather than refused.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import field_validator

from keyturn.domain.model import Secret
from keyturn.stores.base import (
    Found,
    Held,
    Published,
    PublishView,
    Store,
    StoreConfig,
    StoreConflict,
    StoreRefused,
    StoreUnreachable,
    reference,
)

# Conjur's tokens last 8 minutes; keyturn renews a little before.
TOKEN_SECONDS = 7 * 60


class ConjurConfig(StoreConfig):
    url: str
    account: str
    login: str
    api_key: str
    variable: str = "{tenant}/{name}"
    ca_bundle: str | None = None
    timeout: float = 10.0

    @field_validator("api_key")
    @classmethod
    def _reference(cls, value: str) -> str:
        return reference(value, "conjur store", "api_key") or ""


class ConjurStore(Store):
    """Publishes to Conjur variables; see the module docstring."""

    name = "conjur"
    config_model = ConjurConfig
    config: ConjurConfig
    _http: httpx.Client | None = None
    _token: str | None = None
    _token_at = 0.0

    # -- plumbing --------------------------------------------------------------------------

    def variable(self, credential_id: str, tenant: str) -> str:
        head, _, rest = credential_id.partition("/")
        name = rest if head == tenant and rest else credential_id
        return self.config.variable.format(id=credential_id, tenant=tenant, name=name)

    def http(self) -> httpx.Client:
        if self._http is None:
            ca = self.config.ca_bundle
            verify: str | bool = self.context.path(ca) if ca else True
            self._http = httpx.Client(
                base_url=self.config.url.rstrip("/"), timeout=self.config.timeout, verify=verify
            )
        return self._http

    def _where(self) -> str:
        return f"{self.context.name or 'conjur'} ({self.config.url})"

    def _authenticate(self) -> str:
        """A fresh access token (base64, as the Authorization header carries it)."""
        api_key = self.context.resolve(self.config.api_key)
        path = f"/authn/{quote(self.config.account, safe='')}/{quote(self.config.login, safe='')}"
        response = self._send(
            "log in",
            "POST",
            f"{path}/authenticate",
            content=api_key.reveal().encode(),
            headers={"Accept-Encoding": "base64", "Content-Type": "text/plain"},
        )
        if response.status_code == 401:
            raise StoreRefused(
                f"{self._where()}: Conjur refused the API key of {self.config.login}"
            )
        self._check(response, "log in")
        self._token, self._token_at = response.text.strip(), time.monotonic()
        return self._token

    def _send(self, doing: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return self.http().request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise StoreUnreachable(
                f"{self._where()}: cannot {doing}: {type(exc).__name__}"
            ) from exc

    def _check(self, response: httpx.Response, doing: str) -> None:
        if response.status_code >= 500:
            raise StoreUnreachable(f"{self._where()}: cannot {doing}: HTTP {response.status_code}")
        if response.status_code >= 400:
            hint = (
                "; declare the variable in a Conjur policy first"
                if response.status_code == 404
                else ""
            )
            raise StoreRefused(
                f"{self._where()}: cannot {doing}: HTTP {response.status_code}{hint}"
            )

    def _call(self, doing: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """An authenticated request; a 401 (the token expired early) logs in again once."""
        if self._token is None or time.monotonic() - self._token_at > TOKEN_SECONDS:
            self._authenticate()
        for attempt in (1, 2):
            headers = {"Authorization": f'Token token="{self._token}"'}
            response = self._send(doing, method, url, headers=headers, **kwargs)
            if response.status_code != 401 or attempt == 2:
                return response
            self._authenticate()
        raise AssertionError("unreachable")

    def _path(self, kind: str, variable: str) -> str:
        account = quote(self.config.account, safe="")
        return f"/{kind}/{account}/variable/{quote(variable, safe='')}"

    def _latest(self, variable: str) -> int | None:
        """The newest version number of a variable (0: declared, no value yet)."""
        response = self._call(f"look up {variable}", "GET", self._path("resources", variable))
        if response.status_code == 404:
            return None
        self._check(response, f"look up {variable}")
        versions = [s["version"] for s in response.json().get("secrets", [])]
        return max(versions, default=0)

    def _value(self, variable: str) -> Secret | None:
        response = self._call(f"read {variable}", "GET", self._path("secrets", variable))
        if response.status_code == 404:
            return None
        self._check(response, f"read {variable}")
        return Secret(response.text)

    # -- verbs -----------------------------------------------------------------------------

    def publish(self, view: PublishView, mark: str | None) -> str | None:
        """Add the current value as a new secret version, unless it is there already."""
        variable = self.variable(view.credential_id, view.tenant)
        latest = self._latest(variable)
        if latest is None:
            raise StoreRefused(
                f"{self._where()}: no variable {variable}; declare it in a Conjur policy first"
            )
        held = self._value(variable) if latest else None
        if held is not None and held.reveal() == view.current.value.reveal():
            return str(latest)  # a replay: it is there already
        if latest and str(latest) != mark:
            previous = view.previous.value.reveal() if view.previous else None
            if mark is not None or held is None or held.reveal() != previous:
                raise StoreConflict(
                    f"{self._where()}: {variable} is at version {latest}, not "
                    f"{mark or 'one keyturn wrote'}: someone else wrote it; keyturn does not "
                    f"overwrite it. Check who did, then run `keyturn verify --repair "
                    f"{view.credential_id}`"
                )
        response = self._call(
            f"set {variable}",
            "POST",
            self._path("secrets", variable),
            content=view.current.value.reveal().encode(),
        )
        self._check(response, f"set {variable}")
        back = self._value(variable)
        if back is None or back.reveal() != view.current.value.reveal():
            raise StoreRefused(f"{self._where()}: {variable} did not read back as written")
        return str(self._latest(variable))

    def held(self, credential_id: str, tenant: str) -> Held | None:
        variable = self.variable(credential_id, tenant)
        latest = self._latest(variable)
        value = self._value(variable) if latest else None
        if value is None:
            return None
        return Held(None, mark=str(latest), value=value)

    def read(self, credential_id: str) -> tuple[Published, Secret] | None:
        held = self.held(credential_id, credential_id.partition("/")[0])
        if held is None or held.value is None:
            return None
        return Published(None), held.value

    def scan(self, prefix: str) -> Iterator[Found]:
        """Every variable whose id starts with *prefix* and has a value."""
        offset, page = 0, 100
        account = quote(self.config.account, safe="")
        while True:
            params: dict[str, Any] = {"kind": "variable", "limit": page, "offset": offset}
            if prefix:
                params["search"] = prefix
            response = self._call("list variables", "GET", f"/resources/{account}", params=params)
            self._check(response, "list variables")
            found = response.json()
            for resource in found:
                variable = resource["id"].split(":", 2)[2]
                if variable.startswith(prefix) and resource.get("secrets"):
                    value = self._value(variable)
                    if value is not None:
                        yield Found(variable, value)
            if len(found) < page:
                return
            offset += page

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
