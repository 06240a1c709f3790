"""A reader on an event loop whose audit entry is not committed within the writer's patience
fails closed (StoreUnavailable: nothing handed out), and its wait leaves no timer behind."""

from __future__ import annotations

import asyncio
import threading

import pytest

from keyturn.audit.group import GroupWriter, Record
from keyturn.domain.errors import StoreUnavailable
from tests.support.keyturn import Harness


def test_a_coroutine_past_its_patience_fails_closed(kt: Harness) -> None:
    writer = GroupWriter(kt.app.db)
    writer._patience = 0.2  # the bound under test, shortened
    held = threading.Event()
    commit = writer._commit

    def stuck(batch: list) -> None:  # type: ignore[type-arg]
        held.wait(30)  # a writer behind a lock another process holds
        commit(batch)

    writer._commit = stuck  # type: ignore[method-assign]

    async def read() -> None:
        with pytest.raises(StoreUnavailable, match="in time"):
            await writer.append_all_async([Record(actor="late", action="r")])
        # Once the writer gets on, the entry is still recorded, and later reads are served.
        held.set()
        seqs = await writer.append_all_async([Record(actor="next", action="r")])
        assert len(seqs) == 1

    try:
        asyncio.run(read())
    finally:
        held.set()
        writer.close()
