"""MailU targets: a mailbox's password, or its app tokens, through MailU's admin REST API.

Two plugins, because they are two different kinds of secret (and the engine reads
`issues_secrets` and `password_rules` from the class):

- ``mailu`` (strategy ``single``): keyturn generates the password and sets it with
  ``PATCH /api/v1/user/{email}`` ``{"raw_password": ...}``. MailU keeps one password per user.
- ``mailu-token`` (strategy ``dual``): MailU issues app tokens that authenticate SMTP/IMAP next
  to the password. ``create`` is ``POST /api/v1/token`` (MailU returns the value once),
  ``revoke`` is ``DELETE /api/v1/token/{id}``, ``list_active`` is
  ``GET /api/v1/tokenuser/{email}``, filtered on the token comment (``token_comment``,
  default "keyturn") so that tokens people made for their phones are never touched; the
  engine's create step removes keyturn's orphans (tokens of a crashed run) before it issues.

One target per tenant: ``url`` is the tenant's MailU (its VPS), ``api_token`` a reference to
its admin API token (``API_TOKEN`` in mailu.env), sent as ``Authorization: Bearer``.

`test` asks the API first (the user's password hash, or whether the token still exists) and
logs in over SMTP (``smtp_host``) only when the API says the value is accepted: a refusal never
costs one of the five failed logins per hour MailU allows an address range. Errors name the
tenant URL and the user, never a value, and never MailU's response body (its validation
errors can quote the input).
"""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

from pydantic import field_validator

from keyturn.domain.errors import PluginMissing, TargetRejected, TargetUnreachable
from keyturn.domain.model import Secret
from keyturn.targets.base import Account, IssuedSecret, Target, TargetContext
from keyturn.targets.postgres import check_reference
from keyturn.targets.smtp import SmtpSettings, is_loopback

# What each refusal means for a keyturn user: (error class, what to do).
STATUS_ERRORS: dict[int, tuple[type[Exception], str]] = {
    400: (
        TargetRejected,
        "MailU refused the request as invalid (400): is the username the full e-mail address?",
    ),
    401: (
        TargetRejected,
        "no Authorization header reached MailU (401): is a proxy stripping "
        "it? api_token must resolve to MailU's API_TOKEN",
    ),
    403: (
        TargetRejected,
        "MailU refused the API token (403): check that api_token references "
        "the API_TOKEN of this tenant's mailu.env (each refusal counts against MailU's "
        "rate limit)",
    ),
    404: (
        TargetRejected,
        "not found (404): the user does not exist on this MailU, or its API "
        "is disabled (API=true in mailu.env)",
    ),
    409: (
        TargetRejected,
        "MailU reports a conflict (409): the user is being changed "
        "concurrently or is a duplicate; retry",
    ),
    429: (
        TargetUnreachable,
        "MailU rate-limited this address (429) after failed logins or "
        "API tokens; keyturn retries later",
    ),
}


class MailuConfig(SmtpSettings):
    """Settings of a MailU target (one per tenant)."""

    # The tenant's MailU, e.g. https://mail.acme.example (keyturn appends api_path).
    url: str
    api_token: str  # a reference: env:NAME, file:PATH, keyturn:ID
    api_path: str = "/api/v1"
    timeout: float = 15
    # A CA bundle for a MailU with a private certificate; the system store otherwise.
    ca_file: str | None = None
    # mailu-token: the comment that marks keyturn's tokens, and their allowed source networks.
    token_comment: str = "keyturn"  # noqa: S105 - a label, not a secret
    token_ips: list[str] = []

    _ref = field_validator("api_token")(check_reference)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("url must look like https://mail.example.com")
        if parts.scheme == "http" and not is_loopback(parts.hostname):
            raise ValueError(
                f"url {value} is plain http: the API token would travel in clear text; "
                "use https (http is allowed only on loopback)"
            )
        return value.rstrip("/")


class MailuApi:
    """The few admin API calls keyturn needs; driver errors mapped here, once."""

    def __init__(self, config: MailuConfig, context: TargetContext) -> None:
        self.config = config
        self.context = context
        self.url = config.url
        self._client: Any = None

    def _http(self) -> Any:
        if self._client is None:
            try:
                import httpx
            except ImportError as exc:  # pragma: no cover - httpx is a core dependency
                raise PluginMissing("the mailu target needs httpx: pip install httpx") from exc
            token = self.context.resolve(self.config.api_token)
            self._client = httpx.Client(
                base_url=self.url + self.config.api_path,
                headers={"Authorization": f"Bearer {token.reveal()}"},
                timeout=self.config.timeout,
                verify=self.config.ca_file or True,
                follow_redirects=False,
            )
        return self._client

    def call(
        self, method: str, path: str, user: str, json: Any = None, missing_ok: bool = False
    ) -> Any:
        """One request; the decoded JSON body on 2xx (None on a 404 if *missing_ok*), a
        keyturn error otherwise."""
        import httpx

        what = f"MailU {self.url}: {method} {path.split('/')[1]} for {user}"
        try:
            response = self._http().request(method, path, json=json)
        except httpx.HTTPError as exc:
            raise TargetUnreachable(f"{what}: cannot connect ({type(exc).__name__})") from exc
        if missing_ok and response.status_code == 404:
            return None
        if response.is_success:
            try:
                return response.json()
            except ValueError as exc:
                raise TargetRejected(
                    f"{what}: the answer is not JSON: is url the MailU base address?"
                ) from exc
        raise status_error(what, response.status_code)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def status_error(what: str, status: int) -> Exception:
    """The keyturn error for a MailU status (never quoting the body)."""
    if status in STATUS_ERRORS:
        cls, hint = STATUS_ERRORS[status]
        return cls(f"{what}: {hint}")
    if status >= 500:
        return TargetUnreachable(f"{what}: MailU failed with HTTP {status}; keyturn retries later")
    if 300 <= status < 400:
        return TargetRejected(
            f"{what}: redirected (HTTP {status}): is url the MailU base, e.g. https://mail.example.com?"
        )
    return TargetRejected(f"{what}: MailU answered HTTP {status}")


def email_path(user: str) -> str:
    if "@" not in user or any(c in user for c in "/ \t\r\n"):
        raise TargetRejected(f"MailU: {user!r} is not an e-mail address; use the full address")
    return quote(user, safe="")


def hash_accepts(value: Secret, stored: str | None, where: str) -> bool:
    """Check *value* against the hash MailU reports ({SCHEME} prefixes of old MailU allowed)."""
    if not stored:
        return False
    if stored.startswith("{") and "}" in stored:
        stored = stored.split("}", 1)[1]
    from passlib.context import CryptContext
    from passlib.exc import MissingBackendError

    context = CryptContext(
        schemes=["bcrypt_sha256", "bcrypt", "sha512_crypt", "sha256_crypt", "pbkdf2_sha256"]
    )
    try:
        return bool(context.verify(value.reveal(), stored))
    except MissingBackendError as exc:
        raise TargetRejected(
            f"{where}: cannot check MailU's bcrypt hash: pip install bcrypt (or set smtp_host)"
        ) from exc
    except (ValueError, TypeError) as exc:
        raise TargetRejected(
            f"{where}: MailU's password hash has a scheme keyturn does not know; set smtp_host "
            "to test by SMTP login"
        ) from exc


class _MailuBase(Target):
    config_model = MailuConfig
    config: MailuConfig

    def __init__(self, config: Any, context: TargetContext) -> None:
        super().__init__(config, context)
        self.api = MailuApi(self.config, context)

    def _smtp_login(self, user: str, value: Secret, what: str) -> bool:
        endpoint = self.config.smtp()
        return True if endpoint is None else endpoint.login(user, value, what)

    def close(self) -> None:
        self.api.close()


class MailuTarget(_MailuBase):
    """A MailU mailbox password (strategy `single`)."""

    name = "mailu"
    max_active_secrets = 1
    strategies = ("single",)

    def _accepts(self, user: str, value: Secret) -> bool:
        data = self.api.call("GET", f"/user/{email_path(user)}", user)
        stored = data.get("password") if isinstance(data, dict) else None
        return hash_accepts(value, stored, f"MailU {self.api.url}: user {user}")

    def test(self, account: Account, value: Secret) -> bool:
        """Accepted if MailU's hash matches and (with smtp_host) an SMTP login succeeds."""
        user = account.username
        if not self._accepts(user, value):
            return False
        return self._smtp_login(user, value, "password")

    def set(self, account: Account, new: Secret, current: Secret | None) -> None:
        """PATCH the user's raw_password, unless MailU already holds *new*."""
        user = account.username
        if self._accepts(user, new):
            return
        self.api.call("PATCH", f"/user/{email_path(user)}", user, {"raw_password": new.reveal()})

    def revoke(self, account: Account, old: Secret) -> None:
        """Nothing to do: `set` replaced the only password MailU keeps."""


class MailuTokenTarget(_MailuBase):
    """MailU app tokens of a mailbox (strategy `dual`): MailU issues them, keyturn tracks ids."""

    name = "mailu-token"
    max_active_secrets = 2
    strategies = ("dual",)
    issues_secrets: ClassVar[bool] = True

    def _tokens(self, user: str) -> list[dict[str, Any]]:
        data = self.api.call("GET", f"/tokenuser/{email_path(user)}", user)
        return [t for t in data if isinstance(t, dict)] if isinstance(data, list) else []

    def list_active(self, account: Account) -> list[str]:
        """Ids of the user's tokens that carry keyturn's comment."""
        return [
            str(t.get("id"))
            for t in self._tokens(account.username)
            if t.get("comment") == self.config.token_comment
        ]

    def create(self, account: Account) -> IssuedSecret:
        """POST /token: MailU generates the token and shows it this once."""
        user = account.username
        email_path(user)
        body: dict[str, Any] = {"email": user, "comment": self.config.token_comment}
        if self.config.token_ips:
            body["AuthorizedIP"] = list(self.config.token_ips)
        data = self.api.call("POST", "/token", user, body)
        if not isinstance(data, dict) or not data.get("token") or data.get("id") is None:
            raise TargetRejected(f"MailU {self.api.url}: POST token for {user}: no token returned")
        return IssuedSecret(key_id=str(data["id"]), value=Secret(str(data["token"])))

    def set(self, account: Account, new: Secret, current: Secret | None) -> None:
        """Nothing to do: MailU made the token active when it issued it."""

    def test(self, account: Account, value: Secret) -> bool:
        """Refused if MailU no longer holds the token; else (with smtp_host) an SMTP login."""
        user = account.username
        if account.key_id is None:
            if self.config.smtp() is None:
                raise TargetRejected(_no_key_id(self.api.url, user))
        elif account.key_id not in {str(t.get("id")) for t in self._tokens(user)}:
            return False
        return self._smtp_login(user, value, f"app token {account.key_id or '?'}")

    def revoke(self, account: Account, old: Secret) -> None:
        """DELETE /token/{id}; a token that is already gone is fine."""
        if account.key_id is None:
            raise TargetRejected(_no_key_id(self.api.url, account.username))
        path = f"/token/{quote(account.key_id, safe='')}"
        self.api.call("DELETE", path, account.username, missing_ok=True)


def _no_key_id(url: str, user: str) -> str:
    return (
        f"MailU {url}: a version of {user} has no token id (imported with initial_secret?); "
        "mailu-token credentials start without initial_secret and keyturn issues every token"
    )
