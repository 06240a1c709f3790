"""API keys of any SaaS that issues them over HTTP (``http-api-key``), described in the inventory.

Automating a key's rotation needs two abilities through an API (seed 004): create a key and
check that a key is valid; removing the old one and listing the keys make it safe. Each is one
request declared in the target's settings, so a new provider needs no code::

    [targets.acme-api]
    type = "http-api-key"
    base_url = "https://api.example.com"
    max_active = 2                       # what the API allows at once
    secrets = { admin = "env:ACME_ADMIN_TOKEN" }
    headers = { Authorization = "Bearer ${secrets.admin}" }

    [targets.acme-api.create]            # -> the new key and its id
    method = "POST"
    url = "/v1/keys"
    body = { name = "keyturn ${username}" }
    key = "$.key"
    id = "$.id"

    [targets.acme-api.validate]          # 2xx: accepted; refused_status: refused
    url = "/v1/whoami"
    headers = { Authorization = "Bearer ${key}" }

    [targets.acme-api.list]              # ids of the keys keyturn made (orphans, capacity)
    url = "/v1/keys"
    ids = "$.data[?(@.status == 'active' & @.name == 'keyturn ${username}')].id"

    [targets.acme-api.revoke]            # 404 counts as already gone
    method = "DELETE"
    url = "/v1/keys/${key_id}"

Templates use ``${name}``: ``username`` (the credential's), ``key_id`` and ``key`` (validate
and revoke), ``secrets.NAME`` (references in ``secrets``, resolved when a request is sent). In
a URL the values are percent-encoded; in a JSON body a string that is only ``${name}`` becomes
that value. Extraction uses JSONPath (jsonpath-ng, with filters).

The strategy is ``dual``: the API must allow two active keys (``max_active`` >= 2); ``create``
refuses to go past ``max_active``. A 429 answer is waited out (``Retry-After``, at most
``max_retry_wait`` seconds, three times) before the step is retried later; 5xx and network
errors are TargetUnreachable. No error quotes a response body, which may echo a key.
"""

from __future__ import annotations

import re
import ssl
import string
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, ClassVar, Literal
from urllib.parse import quote, urlsplit

from pydantic import ConfigDict, Field, field_validator, model_validator

from keyturn.domain.errors import (
    ConfigInvalid,
    PluginMissing,
    TargetRateLimited,
    TargetRejected,
    TargetUnreachable,
)
from keyturn.domain.model import Secret
from keyturn.refs import SecretRef
from keyturn.targets.base import Account, IssuedSecret, Target, TargetConfig, TargetContext, redact
from keyturn.targets.smtp import is_loopback

RETRIES_429 = 3


class _Template(string.Template):
    """Only ``${name}`` is a placeholder (dots allowed: ``${secrets.admin}``); a lone ``$``
    stays as it is, so JSONPaths (``$.key``) pass through. No attribute access, no format."""

    # string.Template compiles it (re.VERBOSE: no spaces in it)
    pattern = (
        r"\$(?:(?P<escaped>\$)|\{(?P<braced>[a-z][a-z0-9_]*(?:\.[A-Za-z0-9_-]+)?)\}"  # type: ignore[assignment]
        r"|(?P<named>(?!))|(?P<invalid>(?!)))"
    )


_PLACEHOLDER = re.compile(r"\$\{(?P<braced>[a-z][a-z0-9_]*(?:\.[A-Za-z0-9_-]+)?)\}")


def placeholders(value: Any) -> set[str]:
    """Every ``${name}`` in a string, or in the strings of a JSON-like value."""
    found: set[str] = set()
    if isinstance(value, str):
        for match in _PLACEHOLDER.finditer(value):
            found.add(match.group("braced"))
    elif isinstance(value, dict):
        for item in value.values():
            found |= placeholders(item)
    elif isinstance(value, list):
        for item in value:
            found |= placeholders(item)
    return found


class RequestSpec(TargetConfig):
    """One HTTP request of the provider's API."""

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    url: str
    headers: dict[str, str] = {}
    body: dict[str, Any] | list[Any] | None = None
    # JSONPath into the response: the new key and its id (create), the ids (list).
    key: str | None = None
    id: str | None = None
    ids: str | None = None
    # validate: a JSONPath that must hold true in a 2xx answer (e.g. "$.valid").
    valid: str | None = None
    refused_status: list[int] = [401, 403]
    missing_status: list[int] = [404]


ALLOWED = {
    "create": {"username"},
    "validate": {"username", "key", "key_id"},
    "list": {"username"},
    "revoke": {"username", "key", "key_id"},
}


class HttpApiKeyConfig(TargetConfig):
    """Settings of an http-api-key target: the API, its keyturn identity, four requests."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    base_url: str
    secrets: dict[str, SecretRef] = {}
    headers: dict[str, str] = {}
    max_active: int = Field(2, ge=1, le=100)
    create_request: RequestSpec = Field(alias="create")
    validate_request: RequestSpec = Field(alias="validate")
    list_request: RequestSpec | None = Field(None, alias="list")
    revoke_request: RequestSpec = Field(alias="revoke")
    timeout: float = 15
    max_retry_wait: float = 30
    ca_file: str | None = None

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("base_url must look like https://api.example.com")
        if parts.scheme == "http" and not is_loopback(parts.hostname):
            raise ValueError("base_url is plain http: keys would travel in clear; use https")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _templates(self) -> HttpApiKeyConfig:
        secret_names = {f"secrets.{name}" for name in self.secrets}
        for verb, spec in self.requests().items():
            used = placeholders(self.headers) | placeholders(spec.url)
            used |= placeholders(spec.headers) | placeholders(spec.body)
            if placeholders(spec.ids) - {"username"} or placeholders(spec.valid):
                raise ValueError(f"{verb}: ids may use ${{username}} only, valid no placeholder")
            unknown = used - ALLOWED[verb] - secret_names
            if unknown:
                raise ValueError(
                    f"{verb}: unknown placeholder ${{{sorted(unknown)[0]}}}; {verb} may use "
                    + ", ".join(f"${{{n}}}" for n in sorted(ALLOWED[verb] | secret_names))
                )
        if not (self.create_request.key and self.create_request.id):
            raise ValueError('create needs key and id: JSONPaths such as "$.key" and "$.id"')
        if self.list_request is not None and not self.list_request.ids:
            raise ValueError('list needs ids: a JSONPath such as "$.data[*].id"')
        return self

    def requests(self) -> dict[str, RequestSpec]:
        found = {
            "create": self.create_request,
            "validate": self.validate_request,
            "revoke": self.revoke_request,
        }
        if self.list_request is not None:
            found["list"] = self.list_request
        return found


def jsonpath(expression: str, data: Any) -> list[Any]:
    try:
        from jsonpath_ng.ext.parser import parse
    except ImportError as exc:
        raise PluginMissing(
            "the http-api-key target needs jsonpath-ng: pip install 'keyturn[apikey]'"
        ) from exc
    try:
        return [match.value for match in parse(expression).find(data)]
    except Exception as exc:  # jsonpath-ng raises bare Exceptions for syntax errors
        raise ConfigInvalid(f"invalid JSONPath {expression!r}") from exc


class HttpApiKeyTarget(Target):
    """API keys a SaaS issues (strategy `dual`), through requests declared in the inventory."""

    name = "http-api-key"
    max_active_secrets = 2
    strategies = ("dual",)
    issues_secrets: ClassVar[bool] = True
    config_model: ClassVar[type[TargetConfig]] = HttpApiKeyConfig
    config: HttpApiKeyConfig

    def __init__(self, config: Any, context: TargetContext) -> None:
        super().__init__(config, context)
        if self.config.max_active < 2:
            raise ConfigInvalid(
                f"http-api-key {self.config.base_url}: max_active = {self.config.max_active}: "
                "rotating without downtime needs an API that accepts two active keys"
            )
        self._client: Any = None
        self._secrets: list[Secret] = []
        self.sleep: Callable[[float], None] = time.sleep

    # -- requests ----------------------------------------------------------------------------

    def _http(self) -> Any:
        if self._client is None:
            import httpx

            plain = self.config.base_url.startswith("http:")  # loopback only; no TLS to set up
            self._client = httpx.Client(
                base_url=self.config.base_url,
                timeout=self.config.timeout,
                verify=False
                if plain
                else _trust(
                    self.context.path(self.config.ca_file) if self.config.ca_file else None
                ),
                follow_redirects=False,
            )
        return self._client

    def _values(self, fields: dict[str, str]) -> dict[str, str]:
        values = dict(fields)
        for name, ref in self.config.secrets.items():
            secret = self.context.resolve(ref)
            self._secrets.append(secret)
            values[f"secrets.{name}"] = secret.reveal()
        return values

    def _send(self, verb: str, spec: RequestSpec, fields: dict[str, str]) -> Any:
        """The request *verb* with *fields* filled in; the response (429 waited out)."""
        import httpx

        values = self._values(fields)
        url = _Template(spec.url).substitute({k: quote(v, safe="") for k, v in values.items()})
        headers = {
            k: _Template(v).substitute(values)
            for k, v in {**self.config.headers, **spec.headers}.items()
        }
        body = _fill(spec.body, values) if spec.body is not None else None
        what = f"{self.config.base_url}: {verb} ({spec.method} {spec.url})"
        for attempt in range(RETRIES_429 + 1):
            try:
                response = self._http().request(spec.method, url, headers=headers, json=body)
            except httpx.HTTPError as exc:
                raise TargetUnreachable(f"{what}: cannot connect ({type(exc).__name__})") from exc
            if response.status_code != 429:
                return response
            wait = _retry_after(response.headers.get("retry-after"))
            if attempt == RETRIES_429 or wait > self.config.max_retry_wait:
                break
            self.sleep(wait)
        raise TargetRateLimited(
            f"{what}: rate-limited (HTTP 429); keyturn retries later",
            retry_after=timedelta(seconds=wait),
        )

    def _json(self, verb: str, response: Any) -> Any:
        try:
            return response.json()
        except ValueError:
            raise TargetRejected(
                f"{self.config.base_url}: {verb}: the answer (HTTP {response.status_code}) is "
                "not JSON"
            ) from None

    def _fail(self, verb: str, response: Any) -> Exception:
        what = f"{self.config.base_url}: {verb} answered HTTP {response.status_code}"
        if response.status_code >= 500:
            return TargetUnreachable(f"{what}; keyturn retries later")
        return TargetRejected(redact(what, self._secrets))

    # -- verbs -------------------------------------------------------------------------------

    def list_active(self, account: Account) -> list[str]:
        """The ids the list request's JSONPath finds ([] without a list request)."""
        spec = self.config.list_request
        if spec is None:
            return []
        response = self._send("list", spec, {"username": account.username})
        if not response.is_success:
            raise self._fail("list", response)
        assert spec.ids is not None
        if re.search(r"['\"\\\[\]()]", account.username):
            raise TargetRejected(
                f"{self.config.base_url}: username {account.username!r} cannot go into the list "
                "request's JSONPath (quotes, brackets or backslashes)"
            )
        expression = _Template(spec.ids).substitute(username=account.username)
        return [str(v) for v in jsonpath(expression, self._json("list", response))]

    def create(self, account: Account) -> IssuedSecret:
        """The create request; its answer holds the key (shown once) and the key's id."""
        held = self.list_active(account)
        if len(held) >= self.config.max_active:
            raise TargetRejected(
                f"{self.config.base_url}: {account.username} already holds {len(held)} keys "
                f"({', '.join(held)}), the API's max_active; keyturn never deletes a key it "
                "does not track: finish the previous rotation or revoke one by hand"
            )
        spec = self.config.create_request
        response = self._send("create", spec, {"username": account.username})
        if not response.is_success:
            raise self._fail("create", response)
        data = self._json("create", response)
        assert spec.key is not None and spec.id is not None
        keys, ids = jsonpath(spec.key, data), jsonpath(spec.id, data)
        if len(keys) != 1 or len(ids) != 1 or not keys[0] or ids[0] in (None, ""):
            raise TargetRejected(
                f"{self.config.base_url}: create: the answer has no single key at {spec.key} "
                f"and id at {spec.id}"
            )
        return IssuedSecret(key_id=str(ids[0]), value=Secret(str(keys[0])))

    def set(self, account: Account, new: Secret, current: Secret | None) -> None:
        """Nothing to do: the API made the key active when it issued it."""

    def test(self, account: Account, value: Secret) -> bool:
        """The validate request with the key: 2xx (and `valid` true) is accepted, a
        `refused_status` (401, 403) refused; anything else is an error."""
        spec = self.config.validate_request
        fields = {
            "username": account.username,
            "key": value.reveal(),
            "key_id": account.key_id or "",
        }
        self._secrets.append(value)
        response = self._send("validate", spec, fields)
        if response.status_code in spec.refused_status:
            return False
        if not response.is_success:
            raise self._fail("validate", response)
        if spec.valid is None:
            return True
        return jsonpath(spec.valid, self._json("validate", response)) == [True]

    def revoke(self, account: Account, old: Secret) -> None:
        """The revoke request; a `missing_status` (404) answer means it is already gone."""
        spec = self.config.revoke_request
        if account.key_id is None:
            raise TargetRejected(
                f"{self.config.base_url}: a version of {account.username} has no key id "
                "(imported with initial_secret?); keyturn can revoke only keys it issued"
            )
        if "key" in placeholders(spec.url) | placeholders(spec.body) and not old.reveal():
            raise TargetRejected(
                f"{self.config.base_url}: revoke needs the key's value, which keyturn does not "
                f"hold for {account.key_id} (an orphan); revoke it by hand"
            )
        self._secrets.append(old)
        fields = {"username": account.username, "key": old.reveal(), "key_id": account.key_id}
        response = self._send("revoke", spec, fields)
        if response.status_code in spec.missing_status or response.is_success:
            return
        raise self._fail("revoke", response)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _fill(value: Any, values: dict[str, str]) -> Any:
    if isinstance(value, str):
        whole = re.fullmatch(r"\$\{([^}]+)\}", value)
        return values[whole.group(1)] if whole else _Template(value).substitute(values)
    if isinstance(value, dict):
        return {k: _fill(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, values) for v in value]
    return value


def _trust(ca_file: str | None) -> ssl.SSLContext | bool:
    return ssl.create_default_context(cafile=ca_file) if ca_file else True


def _retry_after(header: str | None) -> float:
    """Seconds from a Retry-After header (a number; dates are rare and taken as 1 s)."""
    try:
        return max(float(header or 1), 0.0)
    except ValueError:
        return 1.0
