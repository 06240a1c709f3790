"""AsyncClient.close lets a consumer report in flight finish before it sends the last one.

A fake source stands for keyturn's API: each report reaches the "server" when it is sent and
is applied there after a delay of its own, whatever the client does meanwhile (a cancelled
request is not a request the server never got). The first report is slow, the last fast."""

from __future__ import annotations

import asyncio
from typing import Any

from keyturn.client import AsyncClient, Bundle, Value


class SlowFirstReport:
    reports = True

    def __init__(self) -> None:
        self.applied: list[int] = []  # the versions the server set, in the order it set them
        self._delays = [0.3]  # the first report is slow; the others are not
        self._pending: list[asyncio.Task[None]] = []

    async def fetch(self, credential_id: str, tag: str | None = None, wait: float = 0) -> Bundle:
        current = Value("v1-secret", 1, "current")
        return Bundle(credential=credential_id, current=current, tag="t1")

    async def report(self, credential_id: str, consumer: str, body: dict[str, Any]) -> None:
        delay = self._delays.pop(0) if self._delays else 0.0

        async def server() -> None:  # runs to the end even if the caller is cancelled
            await asyncio.sleep(delay)
            self.applied.append(int(body["version"]))

        task = asyncio.create_task(server())
        self._pending.append(task)
        await asyncio.shield(task)  # the answer comes once the server is done

    async def close(self) -> None:
        await asyncio.gather(*self._pending)


def test_the_last_report_is_the_last_the_server_applies() -> None:
    async def scenario() -> list[int]:
        source = SlowFirstReport()
        client = AsyncClient(source=source, consumer="app", watch=False)
        await client.get("acme/db")  # version 1 in use: its report starts
        await asyncio.sleep(0.05)  # ... and is in flight
        client.note("acme/db", 2)  # the application moved on
        await client.close()
        return source.applied

    assert asyncio.run(scenario())[-1] == 2
