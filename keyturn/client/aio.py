"""The asyncio twin of `Client`: the same cache, fallbacks and reports, awaited.

    async with AsyncClient.from_env(consumer="billing") as client:
        conn = await client.use("acme/db", connect, auth_failure=errors.psycopg)

`connect` may be a coroutine function or a plain one. A watcher task keeps the cache current
with a long poll; reports go out from a task of their own.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from keyturn.client import errors
from keyturn.client.core import FailureBudget, Retry, State, identity
from keyturn.client.sync import LONG_POLL, MAX_REFRESHES, Source
from keyturn.client.values import BudgetExhausted, Bundle, ClientError, Value

log = logging.getLogger("keyturn.client")
T = TypeVar("T")
# How long `close` lets a consumer report in flight finish before it cancels it.
REPORT_GRACE = 5.0


class AsyncSource(Protocol):
    reports: bool

    async def fetch(
        self, credential_id: str, tag: str | None = None, wait: float = 0
    ) -> Bundle | None: ...

    async def report(self, credential_id: str, consumer: str, body: dict[str, Any]) -> None: ...

    async def close(self) -> None: ...


class Threaded:
    """A blocking source (files, Vault) run in worker threads."""

    def __init__(self, source: Source) -> None:
        self.source, self.reports = source, source.reports

    async def fetch(
        self, credential_id: str, tag: str | None = None, wait: float = 0
    ) -> Bundle | None:
        return await asyncio.to_thread(self.source.fetch, credential_id, tag, wait)

    async def report(self, credential_id: str, consumer: str, body: dict[str, Any]) -> None:
        await asyncio.to_thread(self.source.report, credential_id, consumer, body)

    async def close(self) -> None:
        await asyncio.to_thread(self.source.close)


class AsyncClient:
    """Reads credentials from keyturn (or a store), caches them and reports their use."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        consumer: str | None = None,
        source: AsyncSource | None = None,
        ttl: float = 300.0,
        watch: bool = True,
        report_every: float = 60.0,
        budget: FailureBudget | None = FailureBudget(),
        auth_failure: errors.Predicate = errors.ALL,
        retry: Retry | None = Retry(),
    ) -> None:
        if source is None:
            from keyturn.client.http import AsyncHttpSource

            source = AsyncHttpSource(url, token)
        self.source, self.consumer, self.watch = source, consumer, watch
        self.auth_failure, self.retry = auth_failure, retry
        self.state = State(ttl, budget, report_every)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._fetching: dict[str, asyncio.Lock] = {}
        self._wake = asyncio.Event()
        self._reporter: asyncio.Task[None] | None = None
        self._closed = False
        self._identity = identity()

    @classmethod
    def from_env(cls, **options: Any) -> AsyncClient:
        options.setdefault("consumer", os.environ.get("KEYTURN_CONSUMER") or None)
        return cls(os.environ.get("KEYTURN_URL"), os.environ.get("KEYTURN_TOKEN"), **options)

    @classmethod
    def files(cls, directory: str | os.PathLike[str], **options: Any) -> AsyncClient:
        from keyturn.client.files import FileSource

        return cls(source=Threaded(FileSource(directory)), **options)

    async def get(self, credential_id: str, *, note: bool = True) -> Bundle:
        found = self.state.cached(credential_id)
        if found is None:
            async with self._fetching.setdefault(credential_id, asyncio.Lock()):
                found = self.state.cached(credential_id) or await self._fetch(credential_id)
        if self.watch and credential_id not in self._tasks and not self._closed:
            self._tasks[credential_id] = asyncio.create_task(self._watch(credential_id))
        if note and self.state.used(credential_id, found.version):
            self.wake_reporter()
        return found

    def note(self, credential_id: str, version: int | None) -> None:
        """The application took *version* (`get` notes the current one): reported under the
        consumer's name, so that a rotation's revoke waits for it."""
        if self.state.used(credential_id, version):
            self.wake_reporter()

    async def refresh(self, credential_id: str) -> Bundle:
        async with self._fetching.setdefault(credential_id, asyncio.Lock()):
            return await self._fetch(credential_id, conditional=False)

    async def _fetch(self, credential_id: str, conditional: bool = True) -> Bundle:
        tag = self.state.tag(credential_id) if conditional else None
        try:
            found = await self.source.fetch(credential_id, tag)
        except ClientError:
            stale = self.state.cached(credential_id, fresh_only=False)
            if stale is None:
                raise
            return stale
        if found is None:
            self.state.touch(credential_id)
            stale = self.state.cached(credential_id, fresh_only=False)
            assert stale is not None
            return stale
        self.state.store(found)
        return found

    async def use(
        self,
        credential_id: str,
        fn: Callable[[Value], Awaitable[T] | T],
        auth_failure: errors.Predicate | None = None,
    ) -> T:
        """`await fn(value)` with the first value that authenticates: current, next,
        previous, then a refresh; a temporary failure retried (as `Client.use`)."""
        is_auth = auth_failure or self.auth_failure
        bundle = await self.get(credential_id, note=False)
        tried: list[Value] = []
        error: BaseException | None = None
        retried = 0
        for refreshes in range(MAX_REFRESHES + 1):
            if refreshes:
                bundle = await self.refresh(credential_id)
            plan = self.state.plan(bundle, tried)
            if refreshes and not plan:
                break  # keyturn knows nothing newer
            for value in plan:
                if tried and not self.state.may_fail(credential_id):
                    raise BudgetExhausted(
                        f"{credential_id}: the failed-login budget is spent; "
                        "not trying other values"
                    ) from error
                tried.append(value)
                while True:
                    try:
                        result = fn(value)
                        if inspect.isawaitable(result):
                            result = await result
                    except Exception as exc:
                        if is_auth(exc):
                            self.state.failed(credential_id)
                            error = exc
                            break
                        retried = await self._retry_later(exc, retried)
                        continue
                    self._succeeded(bundle, value, first=len(tried) == 1)
                    return result
        assert error is not None
        raise error

    async def _retry_later(self, exc: Exception, retried: int) -> int:
        """Pause before trying the same value again after a temporary failure (within
        `retry`), and return the operation's retries so far; raise *exc* otherwise."""
        retry = self.retry
        if retry is None or retried >= retry.times or not retry.on(exc):
            raise exc
        self.state.retried()
        await asyncio.sleep(retry.pause(retried + 1))
        return retried + 1

    def _succeeded(self, bundle: Bundle, value: Value, first: bool) -> None:
        if first:
            changed = self.state.succeeded(bundle, value)
        else:
            changed = self.state.fell_back(bundle, value)
        if changed or not first:
            self.wake_reporter()

    async def _watch(self, credential_id: str) -> None:
        delay = 1.0
        while not self._closed:
            try:
                tag = self.state.tag(credential_id)
                found = await self.source.fetch(credential_id, tag, LONG_POLL)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("watching %s: %s", credential_id, type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            delay = 1.0
            if found is None:
                self.state.touch(credential_id)
            else:
                self.state.store(found)

    def wake_reporter(self) -> None:
        if not self.consumer or not self.source.reports or self._closed:
            return
        if self._reporter is None:
            self._reporter = asyncio.create_task(self._report_loop())
        self._wake.set()

    async def _report_loop(self) -> None:
        while not self._closed:
            try:
                timeout = max(self.state.next_report_in(), 0.5)
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        if not self.consumer or not self.source.reports:
            return
        for credential_id, body in self.state.reports():
            try:
                await self.source.report(credential_id, self.consumer, body | self._identity)
            except ClientError as exc:
                log.warning("report of %s failed: %s", credential_id, exc.message)
                continue
            self.state.reported(credential_id, body)

    async def close(self) -> None:
        self._closed = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if self._reporter is not None:
            # Let a report in flight finish rather than cancel it: cancelled, its request may
            # still reach the server after the last report below and set an older version.
            self._wake.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._reporter), REPORT_GRACE)
            except Exception:  # slow (REPORT_GRACE) or failed: the last report below still goes
                self._reporter.cancel()
                tasks.append(self._reporter)
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.flush()
        await self.source.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


__all__ = ["AsyncClient", "AsyncSource", "Threaded"]
