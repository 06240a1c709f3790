"""A scan: documents in batches, in this process or in worker processes, to findings.

Batches go to ``Scanner.scan_batch`` here (``--jobs 1``, or a single batch) or in spawned
worker processes that hold the index and the keys, never a value. With a cache, the parent
looks each document up before sending it, and stores what the detectors spotted in the ones
it did not know.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from keyturn.scan.cache import DetectionCache
from keyturn.scan.detect import Spotted
from keyturn.scan.index import ManagedIndex
from keyturn.scan.keys import ScanKeys
from keyturn.scan.model import Document, Finding, Origin
from keyturn.scan.scanner import Scanner
from keyturn.scan.sources import Skipped

# Large enough that CredSweeper's per-run work (its ML filter is run once per batch) is spread
# over many files, small enough that workers share a tree evenly.
BATCH_BYTES = 2 * 1024 * 1024
BATCH_FILES = 256

Progress = Callable[[int, int], None]  # files, bytes scanned so far


@dataclass
class Result:
    findings: list[Finding]
    files: int = 0
    bytes: int = 0
    seconds: float = 0.0
    detectors: list[str] = field(default_factory=list)
    managed_values: int = 0
    too_short: int = 0
    keyed: bool = True
    skipped: Skipped = field(default_factory=Skipped)
    cached: int = 0  # files whose detections came from the cache
    root: Path | None = None  # the folder relative paths start from (SARIF's SRCROOT)


Cached = dict[int, list[Spotted]]
Job = tuple[int, list[Document], Cached]  # batch number, documents, cached detections
Scanned = tuple[list[Finding], Cached]
Done = Callable[[Job, Scanned], None]

_worker: Scanner | None = None


def _start_worker(keys: ScanKeys, index: ManagedIndex | None, detectors: Sequence[str]) -> None:
    global _worker
    _worker = Scanner(keys, index, detectors)


def _scan_in_worker(documents: Sequence[Document], cached: Cached) -> Scanned:
    assert _worker is not None
    return _worker.scan_batch(documents, cached)


def batches(documents: Iterable[Document]) -> Iterator[list[Document]]:
    batch: list[Document] = []
    size = 0
    for document in documents:
        batch.append(document)
        size += len(document.data)
        if size >= BATCH_BYTES or len(batch) >= BATCH_FILES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def scan(
    documents: Iterable[Document],
    keys: ScanKeys,
    index: ManagedIndex | None,
    detectors: Sequence[str],
    *,
    jobs: int = 0,
    progress: Progress | None = None,
    cache: DetectionCache | None = None,
) -> Result:
    """Scan *documents*; ``jobs`` worker processes (0: one per core; 1: this process)."""
    started = time.perf_counter()
    result = Result([], detectors=list(detectors), keyed=keys.keyed)
    if index is not None:
        result.managed_values, result.too_short = len(index), index.too_short
    ordered: list[tuple[int, list[Finding]]] = []

    def done(job: Job, scanned: Scanned) -> None:
        number, batch, cached = job
        findings, fresh = scanned
        if cache is not None:
            cache.store(batch, fresh)
        ordered.append((number, findings))
        result.files += len(batch)
        result.bytes += sum(len(d.data) for d in batch)
        result.cached += len(cached)
        if progress:
            progress(result.files, result.bytes)

    work = (
        (number, batch, cache.lookup(batch) if cache else {})
        for number, batch in enumerate(batches(documents))
    )
    head = [job for job in (next(work, None), next(work, None)) if job is not None]
    jobs = jobs or os.cpu_count() or 1
    if len(head) < 2 or jobs == 1:
        _in_process(head, work, keys, index, detectors, done)
    else:
        _in_pool(head, work, keys, index, detectors, jobs, done)
    result.findings = _first_of_each(ordered)
    result.seconds = time.perf_counter() - started
    return result


def _in_process(
    head: list[Job],
    work: Iterator[Job],
    keys: ScanKeys,
    index: ManagedIndex | None,
    detectors: Sequence[str],
    done: Done,
) -> None:
    if not head:
        return
    scanner = Scanner(keys, index, detectors)
    try:
        for job in (*head, *work):
            done(job, scanner.scan_batch(job[1], job[2]))
    finally:
        scanner.close()


def _in_pool(
    head: list[Job],
    work: Iterator[Job],
    keys: ScanKeys,
    index: ManagedIndex | None,
    detectors: Sequence[str],
    jobs: int,
    done: Done,
) -> None:
    # spawn: a worker starts clean (no inherited database connections or threads)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        jobs, mp_context=context, initializer=_start_worker, initargs=(keys, index, detectors)
    ) as pool:
        pending: dict[Future[Scanned], Job] = {}
        for job in (*head, *work):
            pending[pool.submit(_scan_in_worker, job[1], job[2])] = job
            if len(pending) >= 2 * jobs:  # bounded: the documents' bytes wait in memory
                _collect(pending, done, FIRST_COMPLETED)
        _collect(pending, done, None)


def _collect(pending: dict[Future[Scanned], Job], done: Done, until: str | None) -> None:
    finished, _ = wait(pending, return_when=until or "ALL_COMPLETED")
    for future in finished:
        done(pending.pop(future), future.result())


def _first_of_each(ordered: list[tuple[int, list[Finding]]]) -> list[Finding]:
    """Findings in document order; in history, each fingerprint once (its oldest commit)."""
    out: list[Finding] = []
    seen: set[str] = set()
    for _, findings in sorted(ordered, key=lambda pair: pair[0]):
        for finding in findings:
            if finding.where.origin == Origin.HISTORY:
                if finding.fingerprint in seen:
                    continue
                seen.add(finding.fingerprint)
            out.append(finding)
    return out
