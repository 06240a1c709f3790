"""The thread-safe client: `Client(url, token)` or `Client.from_env()`.

    client = Client.from_env(consumer="billing")
    rows = client.use("acme/db", lambda v: query(v.username, v.value), auth_failure=errors.psycopg)

`get` answers from a cache that a background thread keeps current with a long poll (no busy
polling: the server holds the request until the versions change); `use` and `attempts` fall
back from current to next to previous on an authentication failure, then refresh once.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, Protocol, TypeVar

from keyturn.client import errors
from keyturn.client.core import FailureBudget, Retry, State, identity
from keyturn.client.values import BudgetExhausted, Bundle, ClientError, Value

log = logging.getLogger("keyturn.client")
T = TypeVar("T")
LONG_POLL = 30.0
# How long `close` lets a consumer report in flight finish.
REPORT_GRACE = 5.0
# How many times one operation asks keyturn again after every value it held was refused.
MAX_REFRESHES = 3


class Source(Protocol):
    reports: bool

    def fetch(
        self, credential_id: str, tag: str | None = None, wait: float = 0
    ) -> Bundle | None: ...

    def report(self, credential_id: str, consumer: str, body: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class Attempt:
    """One try with one value: `with attempt as value:`; an authentication failure inside is
    recorded and swallowed, so that the loop moves on to the next value."""

    def __init__(self, run: Attempts, bundle: Bundle, value: Value) -> None:
        self._run, self.bundle, self.value = run, bundle, value

    def __enter__(self) -> Value:
        return self.value

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        return self._run.finished(self, exc)


class Attempts:
    """The values to try for one operation, in order; see `Client.attempts`."""

    def __init__(self, client: Client, credential_id: str, auth_failure: errors.Predicate) -> None:
        self._client, self._id, self._is_auth = client, credential_id, auth_failure
        self._tried: list[Value] = []
        self._error: BaseException | None = None
        self._done = False
        self._again: Value | None = None  # to try once more: it failed temporarily
        self._retries, self._pause = 0, 0.0

    def __iter__(self) -> Iterator[Attempt]:
        state = self._client.state
        bundle = self._client.get(self._id, note=False)
        refreshes = 0
        while not self._done:
            if self._again is not None:
                value, self._again = self._again, None
                self._client.pause(self._pause)
                yield Attempt(self, bundle, value)
                continue
            plan = state.plan(bundle, self._tried)
            if not plan:
                # Every value we held was refused: keyturn may know better (a rotation that
                # ran meanwhile; several, when they follow each other faster than one try).
                if refreshes == MAX_REFRESHES:
                    break
                refreshes += 1
                bundle = self._client.refresh(self._id)
                if not state.plan(bundle, self._tried):
                    break
                continue
            if self._tried and not state.may_fail(self._id):
                raise BudgetExhausted(
                    f"{self._id}: the failed-login budget is spent; not trying other values"
                ) from self._error
            self._tried.append(plan[0])
            yield Attempt(self, bundle, plan[0])
        if not self._done:
            assert self._error is not None
            raise self._error

    def finished(self, attempt: Attempt, exc: BaseException | None) -> bool:
        state = self._client.state
        if exc is None:
            self._done = True
            first = len(self._tried) == 1
            changed = (
                state.succeeded(attempt.bundle, attempt.value)
                if first
                else state.fell_back(attempt.bundle, attempt.value)
            )
            if changed or not first:
                self._client.wake_reporter()
            return False
        if not self._is_auth(exc):
            return self._retry_later(attempt, exc)
        state.failed(self._id)
        self._error = exc
        return True

    def _retry_later(self, attempt: Attempt, exc: BaseException | None) -> bool:
        """A temporary failure within the client's `retry`: the same value, after a pause."""
        retry = self._client.retry
        if exc is None or retry is None or self._retries >= retry.times or not retry.on(exc):
            return False
        self._retries += 1
        self._again, self._error, self._pause = attempt.value, exc, retry.pause(self._retries)
        self._client.state.retried()
        return True


class Client:
    """Reads credentials from keyturn (or a store), caches them and reports their use."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        consumer: str | None = None,
        source: Source | None = None,
        ttl: float = 300.0,
        watch: bool = True,
        report_every: float = 60.0,
        budget: FailureBudget | None = FailureBudget(),
        auth_failure: errors.Predicate = errors.ALL,
        retry: Retry | None = Retry(),
    ) -> None:
        if source is None:
            from keyturn.client.http import HttpSource

            source = HttpSource(url, token)
        self.source, self.consumer, self.watch = source, consumer, watch
        self.auth_failure, self.retry = auth_failure, retry
        self.state = State(ttl, budget, report_every)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._fetching: dict[str, threading.Lock] = {}
        self._watchers: dict[str, threading.Thread] = {}
        self._reporter: threading.Thread | None = None
        self._identity = identity()

    @classmethod
    def from_env(cls, **options: Any) -> Client:
        """KEYTURN_URL, KEYTURN_TOKEN and (optionally) KEYTURN_CONSUMER."""
        options.setdefault("consumer", os.environ.get("KEYTURN_CONSUMER") or None)
        return cls(os.environ.get("KEYTURN_URL"), os.environ.get("KEYTURN_TOKEN"), **options)

    @classmethod
    def files(cls, directory: str | os.PathLike[str], **options: Any) -> Client:
        """Read what the `file` store writes under *directory* (see keyturn.client.files)."""
        from keyturn.client.files import FileSource

        return cls(source=FileSource(directory), **options)

    @classmethod
    def vault(cls, url: str | None = None, token: str | None = None, **options: Any) -> Client:
        """Read what the `vault` store writes to Vault / OpenBao KV v2."""
        from keyturn.client.vault import VaultSource

        path = options.pop("path", "secret/{tenant}/{name}")
        return cls(source=VaultSource(url, token, path=path), **options)

    # -- reading ---------------------------------------------------------------------------

    def get(self, credential_id: str, *, note: bool = True) -> Bundle:
        """The credential's values: current, with previous and next when they exist."""
        found = self.state.cached(credential_id)
        if found is None:
            with self._fetch_lock(credential_id):
                found = self.state.cached(credential_id) or self._fetch(credential_id)
        if self.watch:
            self._ensure_watcher(credential_id)
        if note and self.state.used(credential_id, found.version):
            self.wake_reporter()
        return found

    def note(self, credential_id: str, version: int | None) -> None:
        """The application took *version* (`get` notes the current one): reported under the
        consumer's name, so that a rotation's revoke waits for it."""
        if self.state.used(credential_id, version):
            self.wake_reporter()

    def refresh(self, credential_id: str) -> Bundle:
        """Ask again now, whatever the cache holds."""
        with self._fetch_lock(credential_id):
            return self._fetch(credential_id, conditional=False)

    def _fetch(self, credential_id: str, conditional: bool = True) -> Bundle:
        tag = self.state.tag(credential_id) if conditional else None
        try:
            found = self.source.fetch(credential_id, tag)
        except ClientError:
            stale = self.state.cached(credential_id, fresh_only=False)
            if stale is None:
                raise
            log.warning("keyturn unreachable; using the cached values of %s", credential_id)
            return stale
        if found is None:
            self.state.touch(credential_id)
            stale = self.state.cached(credential_id, fresh_only=False)
            assert stale is not None
            return stale
        self.state.store(found)
        return found

    def _fetch_lock(self, credential_id: str) -> threading.Lock:
        with self._lock:
            return self._fetching.setdefault(credential_id, threading.Lock())

    # -- using -----------------------------------------------------------------------------

    def attempts(
        self, credential_id: str, auth_failure: errors.Predicate | None = None
    ) -> Attempts:
        """Try values in turn until one works:

            for attempt in client.attempts("acme/db", errors.psycopg):
                with attempt as value:
                    conn = psycopg.connect(user=value.username, password=value.value)

        An authentication failure moves on to the next value (current, next, previous, then
        a refresh); a temporary one (`retry.on`) tries the same value again after a pause, up
        to `retry.times` times; any other error propagates at once; when all fail, the last
        failure is raised (or BudgetExhausted, once the failed-login budget is spent)."""
        return Attempts(self, credential_id, auth_failure or self.auth_failure)

    def use(
        self,
        credential_id: str,
        fn: Callable[[Value], T],
        auth_failure: errors.Predicate | None = None,
    ) -> T:
        """`fn(value)` with the first value that authenticates; see `attempts`."""
        for attempt in self.attempts(credential_id, auth_failure):
            with attempt as value:
                result = fn(value)
                return result
        raise AssertionError("attempts() ends in a value or an error")  # pragma: no cover

    # -- background ------------------------------------------------------------------------

    def _ensure_watcher(self, credential_id: str) -> None:
        with self._lock:
            if credential_id in self._watchers or self._stop.is_set():
                return
            thread = threading.Thread(
                target=self._watch, args=(credential_id,), name="keyturn-watch", daemon=True
            )
            self._watchers[credential_id] = thread
        thread.start()

    def _watch(self, credential_id: str) -> None:
        delay = 1.0
        while not self._stop.is_set():
            try:
                found = self.source.fetch(credential_id, self.state.tag(credential_id), LONG_POLL)
            except Exception as exc:  # keep watching: the cache serves meanwhile
                log.debug("watching %s: %s", credential_id, type(exc).__name__)
                self._stop.wait(delay)
                delay = min(delay * 2, 30.0)
                continue
            delay = 1.0
            if found is None:
                self.state.touch(credential_id)
            else:
                self.state.store(found)

    def pause(self, seconds: float) -> None:
        """Wait before a retry (cut short by `close`)."""
        self._stop.wait(seconds)

    def wake_reporter(self) -> None:
        if not self.consumer or not self.source.reports:
            return
        with self._lock:
            if self._reporter is None and not self._stop.is_set():
                self._reporter = threading.Thread(
                    target=self._report_loop, name="keyturn-report", daemon=True
                )
                self._reporter.start()
        self._wake.set()

    def _report_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=max(self.state.next_report_in(), 0.5))
            self._wake.clear()
            if self._stop.is_set():
                return
            self.flush()

    def flush(self) -> None:
        """Send the reports that are due (a changed version at once)."""
        if not self.consumer or not self.source.reports:
            return
        for credential_id, body in self.state.reports():
            try:
                self.source.report(credential_id, self.consumer, body | self._identity)
            except ClientError as exc:
                log.warning("report of %s failed: %s", credential_id, exc.message)
                continue
            self.state.reported(credential_id, body)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        reporter = self._reporter
        if reporter is not None and reporter is not threading.current_thread():
            # A report in flight finishes first: the last one below must reach keyturn last.
            reporter.join(REPORT_GRACE)
        self.flush()
        self.source.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["Attempt", "Attempts", "Client", "Source"]
