"""What the SDK hands out: a value with its version, the bundle of a credential's values, and
the SDK's errors. No value ever appears in a repr, a log line or an exception."""

from __future__ import annotations

from dataclasses import dataclass, field


class ClientError(Exception):
    """keyturn's SDK could not get a credential."""

    def __init__(self, message: str | None = None) -> None:
        self.message = message or (self.__doc__ or "").strip()
        super().__init__(self.message)


class Unreachable(ClientError):
    """keyturn (or the store) cannot be reached; the cached value, if any, is still used."""


class Refused(ClientError):
    """keyturn refused the request (token unknown, out of scope, no such credential)."""


class BudgetExhausted(ClientError):
    """Too many failed logins with this credential recently: the SDK stops trying other
    values, so that the target's own failed-login limit is never reached."""


@dataclass(frozen=True)
class Value:
    """One version of a credential: what an application logs in with."""

    value: str = field(repr=False)
    version: int | None
    state: str  # current | previous | pending (offered as `next`)
    username: str | None = None
    # `next` only: the rotation has put it on the target, which may refuse `current` now.
    on_target: bool | None = None

    def __str__(self) -> str:
        return f"<{self.state} value, version {self.version}>"

    @property
    def key(self) -> tuple[int | None, str]:
        """What tells two values apart (files carry no version number)."""
        return self.version, self.value


@dataclass(frozen=True)
class Bundle:
    """A credential's values at one moment: current, and previous and next when they exist.

    *tag* names these versions (the API's ETag): an unchanged tag means unchanged values."""

    credential: str
    current: Value
    previous: Value | None = None
    next: Value | None = None
    tag: str | None = None

    @property
    def version(self) -> int | None:
        return self.current.version

    @property
    def value(self) -> str:
        return self.current.value

    @property
    def username(self) -> str | None:
        return self.current.username

    @property
    def usable(self) -> Value:
        """The value to take when only one can be (a file, an environment variable): `next`
        once the rotation has put it on the target for the same login (`single` refuses the
        current value from then on), else `current` (`alternating`'s other login takes its
        new value while the current login keeps working until revoke)."""
        upcoming = self.next
        if upcoming is not None and upcoming.on_target and upcoming.username == self.username:
            return upcoming
        return self.current

    def candidates(self) -> list[Value]:
        """In the order a client tries them: current, next (a rotation is putting it on the
        target; first once it is there), previous (still accepted during a grace period)."""
        found: list[Value] = []
        order = (self.current, self.next, self.previous)
        if self.next is not None and self.next.on_target:
            # Past `set`: a `single` target already refuses the current value; trying it
            # first would cost a failed login for nothing.
            order = (self.next, self.current, self.previous)
        for value in order:
            if value is not None and all(
                (value.version, value.value) != (v.version, v.value) for v in found
            ):
                found.append(value)
        return found


__all__ = ["BudgetExhausted", "Bundle", "ClientError", "Refused", "Unreachable", "Value"]
