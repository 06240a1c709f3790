"""The SDK's shared state, without I/O: the cache, which value to try first, the failed-login
budget and what to report. The thread and asyncio clients both drive it."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from keyturn import __version__
from keyturn.client import errors
from keyturn.client.values import Bundle, Value

# A value that worked after the current one was refused is tried first for this long, or
# until the credential's versions change: the other threads do not each burn a failed login.
STICKY_SECONDS = 30.0


def identity() -> dict[str, str]:
    """Where this process runs, as reported with every consumer report."""
    program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
    return {
        "host": socket.gethostname()[:255],
        "process": f"{program}[{os.getpid()}]"[:255],
        "sdk_version": f"python-{__version__}",
    }


@dataclass(frozen=True)
class FailureBudget:
    """At most *limit* failed logins per credential in any *seconds*: MailU locks an address
    range out after 5 an hour, so `FailureBudget(4, 3600)` keeps clear of it."""

    limit: int = 20
    seconds: float = 60.0


@dataclass(frozen=True)
class Retry:
    """A temporary failure (*on*: the server could not judge the value, SMTP 454) is tried
    again with the same value: at most *times* more tries per operation, the first after
    *delay* seconds, each next one after twice as long. It spends no failed-login budget and
    moves to no other value; one that outlasts the retries is raised."""

    times: int = 2
    delay: float = 1.0
    on: errors.Predicate = errors.TEMPORARY

    def pause(self, retry: int) -> float:
        """Seconds to wait before retry number *retry* (1, 2, ...)."""
        return self.delay * 2.0 ** (retry - 1)


@dataclass
class _Usage:
    version: int | None = None
    fallbacks: int = 0  # since the last report
    reported: int | None = None
    reported_at: float = 0.0


@dataclass
class _Sticky:
    version: int | None
    value: str = field(repr=False)
    tag: str | None
    until: float


class State:
    """Thread-safe; every method holds the lock only for a few dictionary operations."""

    def __init__(self, ttl: float, budget: FailureBudget | None, report_every: float) -> None:
        self.ttl, self.budget, self.report_every = ttl, budget, report_every
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[Bundle, float]] = {}
        self._sticky: dict[str, _Sticky] = {}
        self._failures: dict[str, deque[float]] = {}
        self._usage: dict[str, _Usage] = {}
        self.fallbacks = 0  # in total, for the application's own metrics
        self.retries = 0  # temporary failures tried again, in total

    # -- cache ---------------------------------------------------------------------------

    def cached(self, credential_id: str, fresh_only: bool = True) -> Bundle | None:
        with self._lock:
            found = self._cache.get(credential_id)
        if found is None or (fresh_only and time.monotonic() - found[1] > self.ttl):
            return None
        return found[0]

    def tag(self, credential_id: str) -> str | None:
        with self._lock:
            found = self._cache.get(credential_id)
        return found[0].tag if found else None

    def store(self, bundle: Bundle) -> None:
        with self._lock:
            self._cache[bundle.credential] = (bundle, time.monotonic())

    def touch(self, credential_id: str) -> None:
        """The values are unchanged (a 304): the cached ones are fresh again."""
        with self._lock:
            found = self._cache.get(credential_id)
            if found is not None:
                self._cache[credential_id] = (found[0], time.monotonic())

    # -- which value first -----------------------------------------------------------------

    def plan(self, bundle: Bundle, tried: list[Value] | None = None) -> list[Value]:
        """Values to try, in order, leaving out those already *tried*."""
        order = bundle.candidates()
        with self._lock:
            sticky = self._sticky.get(bundle.credential)
        if sticky and sticky.tag == bundle.tag and time.monotonic() < sticky.until:
            first = [v for v in order if (v.version, v.value) == (sticky.version, sticky.value)]
            order = first + [v for v in order if v not in first]
        done = {(v.version, v.value) for v in tried or []}
        return [v for v in order if (v.version, v.value) not in done]

    def may_fail(self, credential_id: str) -> bool:
        """Is there budget left for one more failed login?"""
        if self.budget is None:
            return True
        with self._lock:
            window = self._failures.setdefault(credential_id, deque())
            horizon = time.monotonic() - self.budget.seconds
            while window and window[0] < horizon:
                window.popleft()
            return len(window) < self.budget.limit

    def retried(self) -> None:
        with self._lock:
            self.retries += 1

    def failed(self, credential_id: str) -> None:
        with self._lock:
            self._failures.setdefault(credential_id, deque()).append(time.monotonic())

    def succeeded(self, bundle: Bundle, value: Value) -> bool:
        """*value* worked; True when the version in use changed (report it now)."""
        fallback = (value.version, value.value) != (bundle.current.version, bundle.current.value)
        with self._lock:
            if fallback:
                self._sticky[bundle.credential] = _Sticky(
                    value.version, value.value, bundle.tag, time.monotonic() + STICKY_SECONDS
                )
            elif bundle.credential in self._sticky:
                del self._sticky[bundle.credential]
            return self._note(bundle.credential, value.version)

    def fell_back(self, bundle: Bundle, value: Value) -> bool:
        """Record a use of *value* after another one was refused."""
        with self._lock:
            self.fallbacks += 1
            usage = self._usage.setdefault(bundle.credential, _Usage())
            usage.fallbacks += 1
        return self.succeeded(bundle, value)

    def used(self, credential_id: str, version: int | None) -> bool:
        """The application took this version (a plain `get`)."""
        with self._lock:
            return self._note(credential_id, version)

    def _note(self, credential_id: str, version: int | None) -> bool:
        usage = self._usage.setdefault(credential_id, _Usage())
        if version is None or version == usage.version:
            return False
        if usage.version is not None and version < usage.version:
            # A call that began before the cache moved on: keyturn still hands out the newer
            # version, so this process has moved; reporting the older one would hold up the
            # revoke of a value nobody needs.
            latest = self._cache.get(credential_id)
            newer = [v.version for v in (latest[0].current, latest[0].next) if v] if latest else []
            if any(n is not None and n >= usage.version for n in newer):
                return False
        usage.version = version
        return version != usage.reported

    # -- reports ---------------------------------------------------------------------------

    def reports(self, force: bool = False) -> list[tuple[str, dict[str, Any]]]:
        """Reports to send now: a changed version at once, otherwise every report_every s."""
        now = time.monotonic()
        out = []
        with self._lock:
            for credential_id, usage in self._usage.items():
                if usage.version is None:
                    continue
                changed = usage.version != usage.reported
                due = now - usage.reported_at >= self.report_every
                if changed or due or (force and usage.fallbacks):
                    out.append(
                        (credential_id, {"version": usage.version, "fallbacks": usage.fallbacks})
                    )
        return out

    def reported(self, credential_id: str, body: dict[str, Any]) -> None:
        with self._lock:
            usage = self._usage[credential_id]
            usage.reported, usage.reported_at = body["version"], time.monotonic()
            usage.fallbacks -= body["fallbacks"]

    def next_report_in(self) -> float:
        with self._lock:
            times = [u.reported_at for u in self._usage.values() if u.version is not None]
        if not times:
            return self.report_every
        return max(min(times) + self.report_every - time.monotonic(), 0.0)


__all__ = ["FailureBudget", "Retry", "State", "identity"]
