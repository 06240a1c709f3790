"""Group-committed audit entries (issue 23): many readers, one writer, chain order kept,
durable before the caller goes on, fail closed. `log.append` is the reference the group
writer is read against: `audit verify` accepts what both wrote, interleaved."""

from __future__ import annotations

import asyncio
import fcntl
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select

from keyturn.audit import group
from keyturn.audit import log as audit
from keyturn.audit.chain import bind, bound_keys
from keyturn.audit.group import GroupWriter, Record
from keyturn.db.engine import Database
from keyturn.db.models import AuditEntry, AuditHead
from keyturn.domain.errors import AuditHeadMissing, StoreUnavailable
from keyturn.domain.model import Secret
from tests.support.keyturn import Harness


def _entries(kt: Harness) -> list[AuditEntry]:
    with kt.app.db.read() as session:
        return list(session.execute(select(AuditEntry).order_by(AuditEntry.seq)).scalars())


def test_concurrent_appends_share_transactions_and_verify(kt: Harness) -> None:
    writer = GroupWriter(kt.app.db)
    gate = threading.Barrier(16)

    def read(i: int) -> int:
        gate.wait()
        seqs = []
        for j in range(10):
            seqs.append(
                writer.append(Record(actor=f"token:{i}", action="secret.read", details={"j": j}))
            )
        return seqs[-1]

    try:
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(read, range(16)))
    finally:
        writer.close()
    entries = _entries(kt)
    reads = [e for e in entries if e.action == "secret.read"]
    assert len(reads) == 160
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
    for i in range(16):  # each reader's entries in the order it made them
        mine = [e.details["j"] for e in reads if e.actor == f"token:{i}"]
        assert mine == list(range(10))
    assert writer.batches < 160  # readers waiting together were committed together
    with kt.app.db.read() as session:
        assert audit.verify(session, []).ok


def test_interleaved_with_in_transaction_appends(kt: Harness) -> None:
    writer = GroupWriter(kt.app.db)
    stop = threading.Event()

    def changes() -> None:
        while not stop.is_set():
            with kt.app.db.write() as session:
                audit.append(session, actor="engine", action="rotation.step")

    other = threading.Thread(target=changes)
    other.start()
    try:
        for i in range(40):
            writer.append(Record(actor="token:t", action="secret.read", details={"i": i}))
    finally:
        stop.set()
        other.join()
        writer.close()
    with kt.app.db.read() as session:
        result = audit.verify(session, [])
        head = session.get(AuditHead, 1)
        count = session.scalar(select(func.count()).select_from(AuditEntry))
    assert result.ok, result
    assert head is not None and head.seq == count


def test_the_seq_returned_is_committed(kt: Harness) -> None:
    writer = GroupWriter(kt.app.db)
    try:
        seq = writer.append(
            Record(actor="token:x", action="secret.read", credential_id="a/b", fingerprint="f" * 16)
        )
    finally:
        writer.close()
    # Another connection sees it: it was committed before append returned.
    other = Database(kt.db_url)
    try:
        with other.read() as session:
            row = session.get(AuditEntry, seq)
            assert row is not None and row.credential_id == "a/b"
            assert row.fingerprint == "f" * 16
    finally:
        other.dispose()


def test_fails_closed_for_the_whole_batch(kt: Harness) -> None:
    with kt.app.db.write() as session:
        session.execute(delete(AuditHead))
    writer = GroupWriter(kt.app.db)
    try:
        with pytest.raises(AuditHeadMissing):
            writer.append(Record(actor="token:x", action="secret.read"))
        assert [e.action for e in _entries(kt)] == ["keyturn.init"]  # nothing written
    finally:
        writer.close()


def test_a_secret_is_refused_in_the_caller_and_text_cleaned(kt: Harness) -> None:
    writer = GroupWriter(kt.app.db)
    try:
        with pytest.raises(TypeError):
            writer.append(Record(actor="a", action="secret.read", details={"v": Secret("hunter2")}))
        seq = writer.append(Record(actor="a\x00b", action="secret.read", reason="line\x1bnext"))
    finally:
        writer.close()
    entry = next(e for e in _entries(kt) if e.seq == seq)
    assert "\x00" not in entry.actor and "\x1b" not in (entry.reason or "")


def test_closed_writer_refuses(kt: Harness) -> None:
    writer = GroupWriter(kt.app.db)
    writer.close()
    with pytest.raises(StoreUnavailable):
        writer.append(Record(actor="a", action="secret.read"))


def test_the_entries_of_one_caller_are_adjacent(kt: Harness) -> None:
    writer = GroupWriter(kt.app.db)
    gate = threading.Barrier(4)

    def read(i: int) -> list[int]:
        gate.wait()
        return writer.append_all(
            [Record(actor=f"token:{i}", action="secret.read", details={"n": n}) for n in range(3)]
        )

    try:
        with ThreadPoolExecutor(4) as pool:
            seqs = list(pool.map(read, range(4)))
    finally:
        writer.close()
    for run in seqs:
        assert run == list(range(run[0], run[0] + 3))


def test_nothing_to_record_writes_nothing(kt: Harness) -> None:
    writer = GroupWriter(kt.app.db)
    try:
        assert writer.append_all([]) == []
    finally:
        writer.close()
    assert writer.batches == 0 and [e.action for e in _entries(kt)] == ["keyturn.init"]


def test_coroutines_await_their_commit_beside_threads(kt: Harness) -> None:
    """The API's path: coroutines on two event loops and blocking threads share batches; each
    awaited seq is committed (another connection sees it) and the chain verifies."""
    writer = GroupWriter(kt.app.db)
    other = Database(kt.db_url)

    async def reads(loop_no: int) -> list[int]:
        async def one(i: int) -> int:
            seq = (await writer.append_all_async([Record(actor=f"loop{loop_no}:{i}", action="r")]))[
                0
            ]
            with other.read() as session:  # committed before the await returned
                assert session.get(AuditEntry, seq) is not None
            return seq

        return list(await asyncio.gather(*(one(i) for i in range(30))))

    def blocking(i: int) -> int:
        return writer.append(Record(actor=f"thread:{i}", action="r"))

    try:
        with ThreadPoolExecutor(4) as pool:
            loops = [pool.submit(asyncio.run, reads(n)) for n in range(2)]
            threads = list(pool.map(blocking, range(20)))
            seqs = [s for f in loops for s in f.result()] + threads
    finally:
        writer.close()
        other.dispose()
    assert len(set(seqs)) == 80
    assert writer.batches < 80
    with kt.app.db.read() as session:
        assert audit.verify(session, []).ok


def test_a_coroutine_fails_closed_and_a_cancelled_one_is_still_recorded(kt: Harness) -> None:
    writer = GroupWriter(kt.app.db)

    async def cancelled() -> None:
        task = asyncio.ensure_future(writer.append_all_async([Record(actor="gone", action="r")]))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        asyncio.run(cancelled())
        writer.append(Record(actor="after", action="r"))  # queued behind the cancelled one
        assert [e.actor for e in _entries(kt)][-2:] == ["gone", "after"]
        with kt.app.db.write() as session:
            session.execute(delete(AuditHead))
        with pytest.raises(AuditHeadMissing):
            asyncio.run(writer.append_all_async([Record(actor="x", action="r")]))
        assert "x" not in [e.actor for e in _entries(kt)]
    finally:
        writer.close()


def test_group_writers_of_two_processes_queue_on_one_lock(kt: Harness) -> None:
    """`serve --workers N` on SQLite: each process's group writer takes the writers' lock
    (`Database.queued`) around its transaction, so writers of two processes exclude each other
    in the kernel instead of polling SQLite's write lock. A forked child opens its own
    descriptor (one shared with the parent would share the lock), and both processes' entries
    make one chain."""
    if kt.app.db.sqlite_path is None:
        pytest.skip("PostgreSQL queues lock waiters itself")
    writer = GroupWriter(kt.app.db)
    writer.append(Record(actor="parent", action="r"))  # the parent's descriptor is open
    read_end, write_end = os.pipe()
    with kt.app.db.queued():
        pid = os.fork()
        if pid == 0:  # the child: its own descriptor, which the parent's lock excludes
            code = 1
            try:
                fd = kt.app.db._writers_lock()
                assert fd is not None
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.write(write_end, b"held")
                    GroupWriter(kt.app.db).append(Record(actor="child", action="r"))  # waits
                    code = 0
            finally:
                os._exit(code)
        assert os.read(read_end, 4) == b"held"
        time.sleep(0.2)
        assert "child" not in [e.actor for e in _entries(kt)]  # still queued behind us
    _, status = os.waitpid(pid, 0)
    writer.close()
    assert os.waitstatus_to_exitcode(status) == 0
    assert [e.actor for e in _entries(kt)][-2:] == ["parent", "child"]
    assert Path(f"{kt.app.db.sqlite_path}.writers").exists()
    with kt.app.db.read() as session:
        assert audit.verify(session, []).ok


def test_readers_fail_closed_when_the_writer_is_stuck(
    kt: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that cannot get the database (here: the SQLite writers' lock held by another
    descriptor, as by a stopped process) makes its readers fail after the database's busy
    timeout plus a margin, threads and coroutines alike, instead of hanging; once the lock is
    free the queued entries are committed and the chain verifies."""
    if kt.app.db.sqlite_path is None:
        pytest.skip("the writers' lock is SQLite's")
    monkeypatch.setattr(group, "PATIENCE_MARGIN", 0.0)
    db = Database(kt.db_url, busy_seconds=0.3)
    holder = Database(kt.db_url)
    bind(db, bound_keys(kt.app.db))
    writer = GroupWriter(db)
    try:
        with holder.queued():
            with pytest.raises(StoreUnavailable, match="not handed out"):
                writer.append(Record(actor="thread", action="r"))
            with pytest.raises(StoreUnavailable, match="not handed out"):
                asyncio.run(writer.append_all_async([Record(actor="loop", action="r")]))
        writer.append(Record(actor="after", action="r"))
    finally:
        writer.close()
        db.dispose()
        holder.dispose()
    assert [e.actor for e in _entries(kt)][-3:] == ["thread", "loop", "after"]
    with kt.app.db.read() as session:
        assert audit.verify(session, []).ok
