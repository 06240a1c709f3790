"""MailU targets: a mailbox's password, or its app tokens, through MailU's admin REST API.

Two plugins, because they are two different kinds of secret (and the engine reads
`issues_secrets` and `password_rules` from the class):

- ``mailu`` (strategy ``single``): keyturn generates the password and sets it with
  ``PATCH /api/v1/user/{email}`` ``{"raw_password": ...}``. MailU keeps one password per user.
- ``mailu-token`` (strategy ``dual``): MailU issues app tokens that authenticate SMTP/IMAP next
  to the password. ``create`` is ``POST /api/v1/token`` (MailU returns the value once),
  ``revoke`` is ``DELETE /api/v1/token/{id}``, ``list_active`` reads
  ``GET /api/v1/tokenuser/{email}``. keyturn's tokens carry the comment
  ``"{token_comment} [kt:NONCE]"``, NONCE random per token, and keyturn's key id is
  ``"{id}:{NONCE}"``: MailU on SQLite gives a deleted token's id to the next token, so an id
  alone could name somebody else's token; a token whose id and comment do not both match is
  never tested, counted or deleted as keyturn's. Tokens people made for their phones are never
  touched.

One target per tenant: ``url`` is the tenant's MailU (its VPS), ``api_token`` a reference to
its admin API token (``API_TOKEN`` in mailu.env), sent as ``Authorization: Bearer``.

`test` asks the API first (the user's password hash, checked as MailU checks it, see
:mod:`keyturn.targets.mailu_hash`; or whether the token is still there) and logs in over SMTP
(``smtp_host``) only when the API says the value is accepted, or when the hash is of a kind
keyturn cannot check. MailU counts failed logins per /24 network (5 an hour) and then refuses
everything from it: a target object (one rotation attempt, or one `verify`) makes at most one
failing SMTP AUTH (after it, the API's answer alone counts), and a 429 (or SMTP 451) stops
it for ``ratelimit_window``.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

import idna  # a dependency of httpx, which keyturn requires
from pydantic import field_validator

from keyturn.domain.durations import parse_duration
from keyturn.domain.errors import (
    PolicyInvalid,
    TargetRateLimited,
    TargetRejected,
    TargetUnreachable,
)
from keyturn.domain.model import Secret
from keyturn.refs import SecretRef
from keyturn.targets.base import Account, IssuedSecret, Target, TargetContext
from keyturn.targets.mailu_api import MailuApi
from keyturn.targets.mailu_hash import Uncheckable, accepts
from keyturn.targets.smtp import SmtpDeferred, SmtpSettings, is_loopback

__all__ = ["MailuConfig", "MailuTarget", "MailuTokenTarget", "mailu_email"]

# MailU's front answers AUTH with this while an address range is rate-limited.
SMTP_RATE_LIMITED = 451
_TOKEN = re.compile(r"[0-9a-f]{32}")
_COMMENT_LIMIT = 200  # MailU's column holds 255; the " [kt:NONCE]" tag takes 14


class MailuConfig(SmtpSettings):
    """Settings of a MailU target (one per tenant)."""

    # The tenant's MailU, e.g. https://mail.acme.example (keyturn appends api_path).
    url: str
    api_token: SecretRef  # a reference: env:NAME, file:PATH, keyturn:ID
    api_path: str = "/api/v1"
    timeout: float = 15
    # A CA bundle for a MailU with a private certificate; the system store otherwise.
    ca_file: str | None = None
    # mailu-token: the comment that marks keyturn's tokens, and their allowed source networks.
    token_comment: str = "keyturn"  # noqa: S105 - a label, not a secret
    token_ips: list[str] = []
    # How long MailU's rate limit lasts (the window of its AUTH_RATELIMIT_IP, 5/hour).
    ratelimit_window: str = "1h"
    # The address MailU sees keyturn's SMTP logins come from, when it is not this host's own
    # address on the connection (NAT); checked against a token's AuthorizedIP before AUTH.
    source_address: str | None = None

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

    @field_validator("token_comment")
    @classmethod
    def _comment(cls, value: str) -> str:
        if not value.strip():
            # MailU gives tokens made without a comment "", so "" would claim them all.
            raise ValueError("token_comment must not be empty: it tells keyturn's tokens apart")
        if len(value) > _COMMENT_LIMIT or "[kt:" in value:
            raise ValueError(f"token_comment must be at most {_COMMENT_LIMIT} characters")
        return value

    @field_validator("token_ips")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        # MailU's own check (ipaddress.ip_network(ip, False)); it would answer 400 at issue.
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(
                    f"token_ips: {item!r} is not an IP address or network "
                    '(e.g. "203.0.113.0/24" or "2001:db8::/48")'
                ) from None
        return value

    @field_validator("ratelimit_window")
    @classmethod
    def _window(cls, value: str) -> str:
        try:
            parse_duration(value, "ratelimit_window")
        except PolicyInvalid as exc:
            raise ValueError(exc.message) from None
        return value

    @field_validator("source_address")
    @classmethod
    def _source(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ipaddress.ip_address(value)
            except ValueError:
                raise ValueError(f"source_address: {value!r} is not an IP address") from None
        return value


def mailu_email(user: str, url: str) -> str:
    """The address as MailU stores it: lower case, the domain in IDNA (its IdnaEmail type).

    MailU finds users whatever the case, but stores a token's owner as sent: a token issued
    for ``Admin@Acme.example`` belongs to nobody and never logs in."""
    local, at, domain = user.rpartition("@")
    if not at or not local or not domain or any(c in user for c in "/ \t\r\n"):
        raise TargetRejected(
            f"MailU {url}: {user!r} is not an e-mail address; use the full address"
        )
    try:
        ascii_domain = idna.encode(domain.lower()).decode("ascii")
    except idna.IDNAError:
        raise TargetRejected(f"MailU {url}: the domain of {user!r} is not a valid name") from None
    return f"{local.lower()}@{ascii_domain}"


class _MailuBase(Target):
    config_model = MailuConfig
    config: MailuConfig

    def __init__(self, config: Any, context: TargetContext) -> None:
        super().__init__(config, context)
        self.window = parse_duration(self.config.ratelimit_window)
        self.api = MailuApi(
            self.config.url,
            self.config.api_path,
            self.config.api_token,
            context,
            timeout=self.config.timeout,
            ca_file=context.path(self.config.ca_file) if self.config.ca_file else None,
            window=self.window,
        )
        self._failed_login = False

    def _email(self, account: Account) -> str:
        return mailu_email(account.username, self.api.url)

    def _path(self, route: str, email: str) -> str:
        return f"/{route}/{quote(email, safe='@')}"

    def _user(self, email: str) -> dict[str, Any]:
        """MailU's record of the user; a disabled user is an error (MailU refuses its logins
        whatever the value, so a refusal would prove nothing)."""
        data = self.api.call("GET", self._path("user", email), email)
        if not isinstance(data, dict):
            raise TargetRejected(f"MailU {self.api.url}: GET user for {email}: not a user record")
        if data.get("enabled") is False:
            raise TargetRejected(
                f"MailU {self.api.url}: {email} is disabled (enabled=false): MailU refuses its "
                "logins whatever the password; enable the user in MailU"
            )
        return data

    def _login(
        self, email: str, value: Secret, what: str, networks: list[str] | None = None
    ) -> bool | None:
        """One SMTP AUTH, or None when the API's answer must do: no smtp_host, or this target
        object (one rotation attempt) already made its one failing login."""
        endpoint = self.config.smtp(self.context.base_dir)
        if endpoint is None or self._failed_login:
            return None

        def check_source(local: str) -> None:
            _check_source(self.config.source_address or local, networks, endpoint, email, what)

        try:
            ok = endpoint.login(email, value, what, check_source=check_source if networks else None)
        except SmtpDeferred as exc:
            if exc.smtp_code != SMTP_RATE_LIMITED:
                raise
            self.api.limited(self.window)
            raise TargetRateLimited(
                f"{endpoint}: MailU rate-limited keyturn's address (SMTP 451 4.3.2 at AUTH as "
                f"{email}): too many failed logins from its /24 network; keyturn tries again in "
                f"{self.config.ratelimit_window}",
                self.window,
            ) from exc
        self._failed_login = self._failed_login or not ok
        return ok

    def close(self) -> None:
        self.api.close()
        self._failed_login = False


def _check_source(
    source: str, networks: list[str] | None, endpoint: object, email: str, what: str
) -> None:
    """Refuse to log in with a token from outside its AuthorizedIP: MailU would answer
    `badip` as a failed login, and count it."""
    if not networks:
        return
    address = ipaddress.ip_address(source)
    try:
        # MailU's utils.is_ip_in_subnet: one item it cannot parse refuses the token outright.
        if any(address in ipaddress.ip_network(item, strict=False) for item in networks):
            return
    except ValueError:
        pass
    raise TargetRejected(
        f"{endpoint}: not logging in as {email} ({what}): the token's AuthorizedIP "
        f"({', '.join(networks)}) does not include {source}, the address keyturn logs in from, "
        "so MailU would refuse it (badip) and count a failed login; add that address to "
        "token_ips, set source_address to the address MailU sees (behind NAT), or remove "
        "smtp_host to check tokens through the API only"
    )


class MailuTarget(_MailuBase):
    """A MailU mailbox password (strategy `single`)."""

    name = "mailu"
    max_active_secrets = 1
    strategies = ("single",)

    def _verdict(self, email: str, value: Secret) -> bool | Uncheckable:
        """Does MailU's stored hash accept *value*? (or why keyturn cannot tell)"""
        stored = self._user(email).get("password")
        if not isinstance(stored, str) or not stored:
            raise TargetRejected(
                f"MailU {self.api.url}: GET user for {email} has no password hash: keyturn "
                "needs MailU 1.9 or later"
            )
        try:
            return accepts(value, stored)
        except Uncheckable as exc:
            return exc

    def test(self, account: Account, value: Secret) -> bool:
        """Accepted if MailU's hash matches and (with smtp_host) an SMTP login succeeds.

        A refusal by the hash costs no login. A hash keyturn cannot check is settled by an
        SMTP login when smtp_host is set, and is a TargetRejected saying why otherwise. After
        one failed login in this attempt, the hash alone answers (MailU's own check).
        """
        email = self._email(account)
        verdict = self._verdict(email, value)
        if verdict is False:
            return False
        ok = self._login(email, value, "password")
        if ok is not None:
            return ok
        if verdict is True:
            return True
        if self._failed_login:
            raise TargetUnreachable(
                f"MailU {self.api.url}: cannot check {email}'s password hash ({verdict.scheme}) "
                "and keyturn already made one failed login in this attempt (MailU locks an "
                "address range out after 5 an hour); the next attempt logs in again"
            )
        raise TargetRejected(_uncheckable(self.api.url, email, verdict))

    def set(self, account: Account, new: Secret, current: Secret | None) -> None:
        """PATCH the user's raw_password, unless MailU's hash shows it already holds *new*.

        A hash keyturn cannot check never blocks `set`: setting the same password again is
        harmless (MailU hashes it anew), so restoring the old value is always possible.
        """
        email = self._email(account)
        if self._verdict(email, new) is True:
            return
        self.api.call(
            "PATCH", self._path("user", email), email, {"raw_password": new.reveal()}, sent=(new,)
        )

    def revoke(self, account: Account, old: Secret) -> None:
        """Nothing to do: `set` replaced the only password MailU keeps."""


def _uncheckable(url: str, email: str, why: Uncheckable) -> str:
    if why.mailu_refuses:
        return (
            f"MailU {url}: {email}'s password hash is {why.scheme}, a form MailU itself "
            "refuses at login (no passlib scheme recognises it), so no password works for "
            f"{email} until one is set again (keyturn rotate sets one); set smtp_host to "
            "have keyturn log in instead of reading the hash"
        )
    return (
        f"MailU {url}: cannot check {email}'s password hash ({why.scheme}): {why.why}; "
        "or set smtp_host so that keyturn logs in over SMTP instead"
    )


class MailuTokenTarget(_MailuBase):
    """MailU app tokens of a mailbox (strategy `dual`): MailU issues them, keyturn tracks
    them by id and by the nonce in their comment."""

    name = "mailu-token"
    max_active_secrets = 2
    strategies = ("dual",)
    issues_secrets: ClassVar[bool] = True

    def _key_id(self, token: dict[str, Any]) -> str | None:
        """keyturn's key id of *token*, or None when it is not keyturn's."""
        comment, token_id = token.get("comment"), token.get("id")
        if token_id is None or not isinstance(comment, str):
            return None
        base = self.config.token_comment
        if comment == base:  # issued before key ids carried a nonce
            return str(token_id)
        prefix = f"{base} [kt:"
        nonce = comment[len(prefix) : -1] if comment.startswith(prefix) else ""
        if comment.endswith("]") and re.fullmatch(r"[0-9a-f]{8}", nonce):
            return f"{token_id}:{nonce}"
        return None

    def _tokens(self, email: str) -> list[dict[str, Any]]:
        data = self.api.call("GET", self._path("tokenuser", email), email)
        return [t for t in data if isinstance(t, dict)] if isinstance(data, list) else []

    def _find(self, email: str, key_id: str) -> dict[str, Any] | None:
        return next((t for t in self._tokens(email) if self._key_id(t) == key_id), None)

    def list_active(self, account: Account) -> list[str]:
        """Key ids of the user's tokens that keyturn issued."""
        found = (self._key_id(t) for t in self._tokens(self._email(account)))
        return [key_id for key_id in found if key_id is not None]

    def create(self, account: Account) -> IssuedSecret:
        """POST /token: MailU generates the token and shows it this once."""
        email = self._email(account)
        nonce = secrets.token_hex(4)
        body: dict[str, Any] = {
            "email": email,
            "comment": f"{self.config.token_comment} [kt:{nonce}]",
        }
        if self.config.token_ips:
            body["AuthorizedIP"] = list(self.config.token_ips)
        data = self.api.call("POST", "/token", email, body)
        token = data.get("token") if isinstance(data, dict) else None
        token_id = data.get("id") if isinstance(data, dict) else None
        if not isinstance(token, str) or not _TOKEN.fullmatch(token) or token_id is None:
            raise TargetRejected(
                f"MailU {self.api.url}: POST token for {email}: MailU returned no app token "
                "(32 hex characters) and id"
            )
        return IssuedSecret(key_id=f"{token_id}:{nonce}", value=Secret(token))

    def set(self, account: Account, new: Secret, current: Secret | None) -> None:
        """Nothing to do: MailU made the token active when it issued it."""

    def test(self, account: Account, value: Secret) -> bool:
        """Refused if MailU no longer holds keyturn's token (by id and comment); else (with
        smtp_host) an SMTP login, made only from inside the token's AuthorizedIP."""
        email = self._email(account)
        self._user(email)
        if account.key_id is None:
            if self.config.smtp(self.context.base_dir) is None:
                raise TargetRejected(_no_key_id(self.api.url, email))
            ok = self._login(email, value, "app token (no id)")
            if ok is None:
                raise TargetUnreachable(
                    f"MailU {self.api.url}: cannot check {email}'s token without a login, and "
                    "keyturn already made one failed login in this attempt; the next attempt "
                    "logs in again"
                )
            return ok
        token = self._find(email, account.key_id)
        if token is None:
            return False
        networks = token.get("AuthorizedIP")
        networks = [str(n) for n in networks] if isinstance(networks, list) else []
        ok = self._login(email, value, f"app token {token.get('id')}", networks)
        return True if ok is None else ok

    def revoke(self, account: Account, old: Secret) -> None:
        """DELETE /token/{id} if that id is still keyturn's token; gone (or its id given to
        another token) is fine."""
        email = self._email(account)
        if account.key_id is None:
            raise TargetRejected(_no_key_id(self.api.url, email))
        token = self._find(email, account.key_id)
        if token is not None:
            path = f"/token/{quote(str(token['id']), safe='')}"
            self.api.call("DELETE", path, email, missing_ok=True)


def _no_key_id(url: str, user: str) -> str:
    return (
        f"MailU {url}: a version of {user} has no token id (imported with initial_secret?); "
        "mailu-token credentials start without initial_secret and keyturn issues every token"
    )
