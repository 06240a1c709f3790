"""Pretend plugins and a clock, for plugin authors' and users' tests.

`FakeTarget` is a pretend server whose accounts live in a JSON file (the ``path`` setting), so
that a rotation killed in one process and resumed in another sees one server, as with a real
one; it keeps SHA-256 digests, never values. `FakeIssuer` is the same for a provider that
issues keys itself, `FakeStore` keeps published copies (values included, like a dotenv file),
and `FakeClock` moves keyturn's notion of now.

    from keyturn import plugins
    from keyturn.testing import FakeTarget
    plugins.register("target", FakeTarget)   # then `type = "fake"` in an inventory
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from keyturn.db import models
from keyturn.domain.errors import TargetRejected
from keyturn.domain.model import Secret
from keyturn.stores.base import (
    Held,
    Published,
    PublishView,
    Store,
    StoreConfig,
    StoreConflict,
)
from keyturn.targets.base import Account, IssuedSecret, Target, TargetConfig

__all__ = ["FakeClock", "FakeIssuer", "FakeStore", "FakeTarget"]


def _digest(value: Secret) -> str:
    return hashlib.sha256(value.reveal().encode()).hexdigest()


@contextmanager
def _state(path: Path) -> Iterator[dict[str, Any]]:
    """The file's JSON, locked against other processes, written back when the block ends."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        yield data
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(path)


class FakeConfig(TargetConfig):
    path: str  # the JSON file that is the pretend server


class _FileBacked(Target):
    config: FakeConfig

    def _state(self) -> Any:
        path = Path(self.config.path)
        return _state(path if path.is_absolute() else Path(self.context.base_dir) / path)


class FakeTarget(_FileBacked):
    """A pretend server holding up to two passwords per login (`single`, `alternating`,
    `dual`). Its verbs follow the contract of `keyturn.targets.base.Target` to the letter."""

    name = "fake"
    max_active_secrets = 2
    strategies = ("single", "alternating", "dual")
    config_model = FakeConfig

    def set(self, account: Account, new: Secret, current: Secret | None) -> None:
        """Replace the login's passwords with *new* and enable it (created if missing)."""
        with self._state() as logins:
            logins[account.username] = {"digests": [_digest(new)], "enabled": True}

    def add(self, account: Account, new: Secret, current: Secret | None) -> None:
        """Keep *current* (if the login holds it) beside *new*."""
        with self._state() as logins:
            login = logins.get(account.username)
            if login is None:
                raise TargetRejected(f"fake server: no login {account.username!r}")
            if _digest(new) in login["digests"]:
                return
            kept = [d for d in login["digests"] if current and d == _digest(current)]
            login["digests"] = [*kept, _digest(new)]

    def test(self, account: Account, value: Secret) -> bool:
        with self._state() as logins:
            login = logins.get(account.username)
        return bool(login and login["enabled"] and _digest(value) in login["digests"])

    def revoke(self, account: Account, old: Secret) -> None:
        """Drop *old*; a login left with no other password is disabled (`alternating`)."""
        with self._state() as logins:
            login = logins.get(account.username)
            if login is None or _digest(old) not in login["digests"]:
                return
            if login["digests"] == [_digest(old)]:
                login["enabled"] = False
            else:
                login["digests"].remove(_digest(old))

    def ensure(self, account: Account, value: Secret) -> bool:
        with self._state() as logins:
            if account.username in logins:
                return False
            logins[account.username] = {"digests": [_digest(value)], "enabled": True}
            return True


class FakeIssuer(_FileBacked):
    """A pretend provider that issues its keys (``issues_secrets``), two per user at most."""

    name = "fake-issuer"
    max_active_secrets = 2
    strategies = ("dual",)
    issues_secrets: ClassVar[bool] = True
    config_model = FakeConfig

    def list_active(self, account: Account) -> list[str]:
        with self._state() as users:
            return sorted(users.get(account.username, {}))

    def create(self, account: Account) -> IssuedSecret:
        with self._state() as users:
            keys = users.setdefault(account.username, {})
            if len(keys) >= self.max_active_secrets:
                raise TargetRejected(f"fake issuer: {account.username!r} already holds two keys")
            key_id, value = "key-" + secrets.token_hex(4), Secret("fk-" + secrets.token_urlsafe(24))
            keys[key_id] = _digest(value)
            return IssuedSecret(key_id, value)

    def test(self, account: Account, value: Secret) -> bool:
        with self._state() as users:
            return _digest(value) in users.get(account.username, {}).values()

    def revoke(self, account: Account, old: Secret) -> None:
        with self._state() as users:
            users.get(account.username, {}).pop(account.key_id or "", None)


class FakeStoreConfig(StoreConfig):
    path: str


class FakeStore(Store):
    """Published copies in a JSON file (the ``path`` setting), with a counter as its mark:
    the store's own version id, which a write by someone else moves (check-and-set)."""

    name = "fake"
    config_model = FakeStoreConfig
    config: FakeStoreConfig

    def publish(self, view: PublishView, mark: str | None) -> str | None:
        with _state(Path(self.config.path)) as published:
            held = published.get(view.credential_id)
            if held is not None and held["version"] == view.current.number:
                return str(held["mark"])  # a replay: already there
            if held is not None and str(held["mark"]) != mark:
                raise StoreConflict(f"{view.credential_id} was changed outside keyturn")
            serial = 1 + (int(held["mark"]) if held else 0)
            published[view.credential_id] = {
                "version": view.current.number,
                "fingerprint": view.current.fingerprint,
                "value": view.current.value.reveal(),
                "mark": serial,
            }
            return str(serial)

    def held(self, credential_id: str, tenant: str) -> Held | None:
        with _state(Path(self.config.path)) as published:
            found = published.get(credential_id)
        if found is None:
            return None
        return Held(found["version"], found["fingerprint"], str(found["mark"]))

    def read(self, credential_id: str) -> tuple[Published, Secret] | None:
        with _state(Path(self.config.path)) as published:
            found = published.get(credential_id)
        return None if found is None else (Published(found["version"]), Secret(found["value"]))


class FakeClock:
    """keyturn's now (`keyturn.db.models.utcnow`), frozen and moved by hand.

    with FakeClock() as clock:
        ...              # a rotation waits out its grace period
        clock.advance(timedelta(days=1))
    """

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta

    def __enter__(self) -> FakeClock:
        self._previous = models.set_clock(self)
        return self

    def __exit__(self, *exc: object) -> None:
        models.set_clock(self._previous)
