"""The ``http-token`` target: user tokens on a service with an admin API.

`single` replaces the user's tokens with the new one; `dual` adds the new one beside the
current one and revoke removes the old one. The service stores SHA-256 digests, so keyturn
sends the digest to add or remove a token and the token itself only to log in (`test`).
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

import httpx

from keyturn.targets.base import (
    Account,
    PasswordRules,
    Secret,
    SecretRef,
    Target,
    TargetConfig,
    TargetRateLimited,
    TargetRejected,
    TargetUnreachable,
)


def digest(value: Secret) -> str:
    return hashlib.sha256(value.reveal().encode()).hexdigest()


class HttpTokenConfig(TargetConfig):
    url: str  # the service, e.g. https://tokens.example.com
    admin_token: SecretRef  # env:NAME, file:PATH or keyturn:ID, never the token itself
    timeout: float = 10


class HttpTokenTarget(Target):
    name = "http-token"
    max_active_secrets = 2
    strategies = ("single", "dual")
    password_rules = PasswordRules(length=40, alphabet="urlsafe")
    config_model = HttpTokenConfig
    config: HttpTokenConfig

    def _call(self, method: str, path: str, user: str) -> httpx.Response:
        """One admin request; a driver error becomes a keyturn error naming the user."""
        admin = self.context.resolve(self.config.admin_token).reveal()
        try:
            response = httpx.request(
                method,
                self.config.url.rstrip("/") + path,
                headers={"Authorization": f"Bearer {admin}"},
                timeout=self.config.timeout,
            )
        except httpx.HTTPError as exc:
            raise TargetUnreachable(
                f"http-token {self.config.url}: {type(exc).__name__} for {user}"
            ) from exc
        said = f"http-token {self.config.url}: {method} for {user} got {response.status_code}"
        if response.status_code == 429:  # asked to wait: the engine backs off at least this
            wait = response.headers.get("Retry-After", "")
            after = timedelta(seconds=int(wait)) if wait.isdigit() else None
            raise TargetRateLimited(said, retry_after=after)
        if response.status_code >= 500:  # the answer is unknown: the change may have happened
            raise TargetUnreachable(said)
        if response.status_code >= 400:  # refused: nothing changed
            raise TargetRejected(said)
        return response

    def _held(self, user: str) -> list[str]:
        held: list[str] = self._call("GET", f"/users/{user}/tokens", user).json()["tokens"]
        return held

    def set(self, account: Account, new: Secret, current: Secret | None) -> None:
        """`single`: the user's tokens become *new* alone (a replay finds it so)."""
        user = account.username
        held = self._held(user)
        if held == [digest(new)]:
            return
        self._call("PUT", f"/users/{user}/tokens/{digest(new)}", user)
        for old in held:
            if old != digest(new):
                self._call("DELETE", f"/users/{user}/tokens/{old}", user)

    def add(self, account: Account, new: Secret, current: Secret | None) -> None:
        """`dual`: *new* beside *current* (PUT is idempotent on the service)."""
        self._call("PUT", f"/users/{account.username}/tokens/{digest(new)}", account.username)

    def test(self, account: Account, value: Secret) -> bool:
        """Log in with the token: 200 accepted, 401 refused, anything else unknown."""
        try:
            response = httpx.get(
                self.config.url.rstrip("/") + "/whoami",
                headers={"Authorization": f"Bearer {value.reveal()}", "X-User": account.username},
                timeout=self.config.timeout,
            )
        except httpx.HTTPError as exc:
            raise TargetUnreachable(
                f"http-token {self.config.url}: {type(exc).__name__} for {account.username}"
            ) from exc
        if response.status_code in (200, 401):
            return response.status_code == 200
        raise TargetUnreachable(f"http-token {self.config.url}: /whoami got {response.status_code}")

    def revoke(self, account: Account, old: Secret) -> None:
        """Remove *old*'s digest (DELETE is idempotent on the service)."""
        self._call("DELETE", f"/users/{account.username}/tokens/{digest(old)}", account.username)

    def ensure(self, account: Account, value: Secret) -> bool:
        """Give a user without tokens *value* (`keyturn apply` with an initial secret)."""
        if self._held(account.username):
            return False
        self._call("PUT", f"/users/{account.username}/tokens/{digest(value)}", account.username)
        return True
