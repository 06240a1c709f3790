"""The API's read threads (keyturn.api.reading.Readers): answers and errors reach the caller
that asked, on its own loop; a cancelled caller leaves the threads working (issue 23)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from keyturn.api.reading import Readers
from keyturn.domain.errors import CredentialNotFound


def test_answers_errors_and_cancellations() -> None:
    readers = Readers(threads=2)
    release = threading.Event()

    def refuse(name: str) -> None:
        raise CredentialNotFound(f"no credential {name!r}")

    async def main() -> None:
        names = await asyncio.gather(*(readers.run(threading.current_thread) for _ in range(20)))
        assert {t.name for t in names} <= {"keyturn-read_0", "keyturn-read_1"}
        assert await asyncio.gather(*(readers.run(pow, n, 2) for n in range(50))) == [
            n * n for n in range(50)
        ]
        with pytest.raises(CredentialNotFound, match="acme/x"):
            await readers.run(refuse, "acme/x")
        held = asyncio.ensure_future(readers.run(release.wait, 10))
        await asyncio.sleep(0.05)
        held.cancel()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await held
        assert await readers.run(len, "still answering") == 15

    asyncio.run(main())
    asyncio.run(main_again(readers))  # another loop, the same threads


async def main_again(readers: Readers) -> None:
    assert await readers.run(sum, [1, 2, 3]) == 6
