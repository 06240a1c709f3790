"""The login side of the MailU double: MailU 2024.06.57's password and token checks, and its
rate limiter, as the admin application runs them (see tests/support/mailu_double.py).

Followed from MailU's code:

- ``models.User.check_password``: an empty password is refused; the prefixes ``{PBKDF2}``,
  ``{BLF-CRYPT}``, ``{SHA512-CRYPT}``, ``{SHA256-CRYPT}``, ``{MD5-CRYPT}``, ``{CRYPT}`` are
  stripped; a ``CryptContext`` of every passlib crypt handler but ``scrypt`` and the plaintext
  ones (default ``bcrypt_sha256`` at ``CREDENTIAL_ROUNDS``, ``deprecated="auto"``) verifies,
  and a successful login with any other scheme replaces the hash with a ``bcrypt_sha256`` one
  (``verify_and_update``). A hash no handler claims is refused (passlib 1.7.4's
  ``unix_fallback``, which libpass dropped, refused it there).
- ``models.Token.check_password``: ``pbkdf2_sha256`` at 1 round (``$5$`` tokens of older MailU
  are checked with ``sha256_crypt`` and rehashed).
- ``internal/nginx.check_credentials`` and ``internal/views/auth.nginx_authentication`` (what
  MailU's front asks for every SMTP AUTH): a disabled user is refused; a 32-hex-character
  password is tried as an app token first, and a matching token used from outside its
  ``AuthorizedIP`` is refused (``badip``); ``AUTH_REQUIRE_TOKENS`` refuses passwords; a
  rate-limited address gets ``451 4.3.2``; a success exempts the exact address from every
  limit for ``AUTH_RATELIMIT_EXEMPTION_LENGTH`` (24 h).
- ``limiter.LimitWraperFactory``: a moving window of ``AUTH_RATELIMIT_IP`` (5/hour) per /24
  (IPv6: /48) network and of ``AUTH_RATELIMIT_USER`` (50/day) per user name, with MailU's
  de-duplication (one hit per network and user an hour; one per user and wrong password a
  day) and ``AUTH_RATELIMIT_EXEMPTION`` networks.

Left out: MailU keeps the counts in Redis (they survive an admin restart; here they live in
the double's memory), its in-process credential cache, webmail and port-25 logins, IMAP/POP3.
"""

from __future__ import annotations

import hmac
import ipaddress
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from passlib.context import CryptContext
from passlib.exc import MissingBackendError
from passlib.hash import pbkdf2_sha256, sha256_crypt
from passlib.registry import list_crypt_handlers

LEGACY = ("{PBKDF2}", "{BLF-CRYPT}", "{SHA512-CRYPT}", "{SHA256-CRYPT}", "{MD5-CRYPT}", "{CRYPT}")
RATE_LIMITED = "451 4.3.2 Temporary authentication failure (rate-limit)"
INVALID = "535 5.7.8 Authentication credentials invalid"
# What nginx answers when MailU's auth endpoint fails with a 500 (an error while checking).
AUTH_ERROR = "454 4.7.0 Temporary authentication failure"


def password_context(rounds: int) -> CryptContext:
    """MailU's models.User.get_password_context."""
    schemes = [s for s in list_crypt_handlers() if not (s == "scrypt" or s.endswith("plaintext"))]
    return CryptContext(
        schemes=schemes,
        default="bcrypt_sha256",
        bcrypt_sha256__rounds=rounds,
        deprecated="auto",
    )


class CheckFailed(Exception):
    """MailU's check raised (a missing backend, a scheme that needs a user name): its auth
    endpoint answers 500 and the front defers the login."""


def check_password(ctx: CryptContext, password: str, stored: str) -> tuple[bool, str | None]:
    """(accepted, the new hash MailU would store instead, or None)."""
    if password == "":
        return False, None
    reference = stored.split("}", 1)[1] if stored.startswith(LEGACY) else stored
    if ctx.identify(reference, required=False) is None:
        return False, None
    try:
        ok, new_hash = ctx.verify_and_update(password, reference)
    except (MissingBackendError, TypeError, ValueError) as exc:
        raise CheckFailed(type(exc).__name__) from exc
    return bool(ok), new_hash


def check_token(password: str, stored: str) -> tuple[bool, str | None]:
    if stored.startswith("$5$"):
        if sha256_crypt.verify(password, stored):
            return True, hash_token(password)
        return False, None
    return bool(pbkdf2_sha256.verify(password, stored)), None


def hash_token(value: str) -> str:
    return str(pbkdf2_sha256.using(rounds=1).hash(value))


def is_app_token(candidate: str) -> bool:
    return len(candidate) == 32 and all(c in "0123456789abcdef" for c in candidate)


@dataclass
class Limit:
    amount: int
    window: timedelta


@dataclass
class Limiter:
    """MailU's rate limiter over an in-memory store, on the double's clock."""

    clock: Callable[[], datetime]
    ip_limit: Limit = field(default_factory=lambda: Limit(5, timedelta(hours=1)))
    user_limit: Limit = field(default_factory=lambda: Limit(50, timedelta(days=1)))
    exemption_length: timedelta = timedelta(hours=24)
    exempt_networks: list[str] = field(default_factory=list)  # AUTH_RATELIMIT_EXEMPTION
    v4_mask: int = 24
    v6_mask: int = 48
    _hits: dict[str, list[datetime]] = field(default_factory=dict)
    _keys: dict[str, tuple[int, datetime]] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)

    # -- the store (limits' storage: counters with an elastic expiry, moving windows) ------

    def _get(self, key: str) -> int:
        value, expires = self._keys.get(key, (0, self.clock()))
        return value if expires > self.clock() else 0

    def _incr(self, key: str, expiry: timedelta) -> None:
        self._keys[key] = (self._get(key) + 1, self.clock() + expiry)

    def _window(self, key: str, limit: Limit) -> list[datetime]:
        since = self.clock() - limit.window
        hits = [t for t in self._hits.get(key, []) if t > since]
        self._hits[key] = hits
        return hits

    def _test(self, key: str, limit: Limit) -> bool:
        return len(self._window(key, limit)) + 1 <= limit.amount

    def _hit(self, key: str, limit: Limit) -> None:
        if self._test(key, limit):
            self._hits[key].append(self.clock())

    # -- MailU's LimitWraperFactory ----------------------------------------------------------

    def network(self, ip: str) -> str:
        address = ipaddress.ip_address(ip)
        mask = self.v4_mask if address.version == 4 else self.v6_mask
        return str(ipaddress.ip_network(f"{ip}/{mask}", strict=False).network_address)

    def subject(self, ip: str) -> bool:
        address = ipaddress.ip_address(ip)
        if any(address in ipaddress.ip_network(n, strict=False) for n in self.exempt_networks):
            return False
        return not self._get(f"exempt-{ip}") > 0

    def exempt(self, ip: str) -> None:
        with self._lock:
            self._incr(f"exempt-{ip}", self.exemption_length)

    def should_limit_ip(self, ip: str) -> bool:
        with self._lock:
            return self.subject(ip) and not self._test(f"auth-ip/{self.network(ip)}", self.ip_limit)

    def limit_ip(self, ip: str, username: str | None = None) -> None:
        with self._lock:
            net = self.network(ip)
            if not self.subject(ip):
                return
            if username and self._get(f"dedup-{net}-{username}") > 0:
                return
            self._incr(f"dedup-{net}-{username}", timedelta(hours=1))
            self._hit(f"auth-ip/{net}", self.ip_limit)

    def should_limit_user(self, username: str, ip: str) -> bool:
        with self._lock:
            return self.subject(ip) and not self._test(f"auth-user/{username}", self.user_limit)

    def limit_user(self, username: str, ip: str, password: str = "") -> None:
        with self._lock:
            if not self.subject(ip):
                return
            digest = hmac.new(username.encode(), password.encode(), "sha256").hexdigest()[-6:]
            if password and self._get(f"dedup2-{username}-{digest}") > 0:
                return
            self._incr(f"dedup2-{username}-{digest}", timedelta(days=1))
            self._hit(f"auth-user/{username}", self.user_limit)
            self.limit_ip(ip, username)

    def hits(self, ip: str) -> int:
        """Hits counted against *ip*'s network in the current window (for tests)."""
        with self._lock:
            return len(self._window(f"auth-ip/{self.network(ip)}", self.ip_limit))


@dataclass
class Login:
    """One SMTP AUTH the front answered, as MailU logs it."""

    user: str
    ip: str
    result: str  # success: password|token; failed: badauth|badip|disabled|ratelimit|error
    code: int

    @property
    def ok(self) -> bool:
        return self.code == 235


def authenticate(mailu: Any, user: str, password: str, ip: str) -> Login:
    """MailU's nginx_authentication for an SMTP submission AUTH (never port 25)."""
    limiter: Limiter = mailu.limiter
    token = is_app_token(password)
    if not token and limiter.should_limit_ip(ip):
        return Login(user, ip, "ratelimit", 451)
    record = mailu.find_user(user) if "@" in user else None
    try:
        result = mailu.check_credentials(record, password, ip)
    except CheckFailed:
        return Login(user, ip, "error", 454)
    if record is not None and not token and limiter.should_limit_user(user, ip):
        return Login(user, ip, "ratelimit", 451)
    if result in ("password", "token"):
        limiter.exempt(ip)
        return Login(user, ip, result, 235)
    if record is not None:
        limiter.limit_user(user, ip, password=password)
    else:
        limiter.limit_ip(ip, user)
    return Login(user, ip, result, 535)


def smtp_reply(login: Login) -> str | None:
    """What the front sends for a refused AUTH (None: accepted)."""
    return {235: None, 451: RATE_LIMITED, 454: AUTH_ERROR}.get(login.code, INVALID)
