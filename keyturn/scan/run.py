"""A scan: documents in batches, in this process or in worker processes, to findings.

Each batch is matched against the managed index and handed to each detector in the process
that scans it; detections become findings (with keyed fingerprints) there, and only findings
come back: values never cross a process boundary, and workers never see a managed value.
"""

from __future__ import annotations

import multiprocessing
import os
import shlex
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field

from keyturn.scan import detect
from keyturn.scan.detect import Detection, Detector
from keyturn.scan.index import Hit, ManagedIndex
from keyturn.scan.keys import ScanKeys
from keyturn.scan.model import Document, Finding, ManagedEntry, Origin, Where
from keyturn.scan.sources import Skipped

MANAGED_RULE = "keyturn:managed-credential"
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


class Scanner:
    """What one process needs to scan a batch: the keys, the index, the detectors."""

    def __init__(self, keys: ScanKeys, index: ManagedIndex | None, detectors: Sequence[str]):
        self.keys = keys
        self.index = index
        self.detectors: list[Detector] = [detect.load(name) for name in detectors]

    def close(self) -> None:
        for detector in self.detectors:
            detector.close()

    def scan_batch(self, documents: Sequence[Document]) -> list[Finding]:
        findings: list[Finding] = []
        taken: list[set[tuple[int, int, int]]] = [set() for _ in documents]
        for number, document in enumerate(documents):
            for finding in self._managed(document):
                findings.append(finding)
                w = finding.where
                taken[number].add((w.line, w.column, w.end_column))
        seen: set[tuple[int, int, str]] = set()
        for detector in self.detectors:
            for detection in detector.detect(documents):
                finding = self._unmanaged(documents[detection.document], detection, detector.name)
                key = (detection.document, detection.line, finding.fingerprint)
                if key in seen or self._covered(detection, taken[detection.document]):
                    continue
                seen.add(key)
                findings.append(finding)
        return findings

    # -- managed ---------------------------------------------------------------------------

    def _managed(self, document: Document) -> Iterator[Finding]:
        if self.index is None:
            return
        for hit in sorted(self.index.find(document.data), key=lambda h: h.start):
            where = _where(document, hit)
            encoding_here = _in_userinfo(document.data, hit)
            for entry, encoding in self.index.identify(hit.fingerprint):
                yield self._managed_finding(entry, encoding_here or encoding, where)

    def _managed_finding(self, entry: ManagedEntry, encoding: str, where: Where) -> Finding:
        fingerprint = self.keys.finding_fingerprint(
            "managed", entry.credential_id, str(entry.version), where.path
        )
        suggestion = None
        if entry.live:
            reason = shlex.quote(f"leaked: found in {where}")
            suggestion = f"keyturn rotate {entry.credential_id} --leak --reason {reason}"
        return Finding(
            "managed", MANAGED_RULE, where, fingerprint, entry, encoding, suggestion=suggestion
        )

    # -- unmanaged -------------------------------------------------------------------------

    def _unmanaged(self, document: Document, detection: Detection, detector: str) -> Finding:
        value = detection.value.reveal()
        fingerprint = self.keys.finding_fingerprint("unmanaged", document.path, value)
        where = Where(
            document.path,
            detection.line,
            detection.column,
            detection.end_column,
            document.origin,
            document.commit,
        )
        return Finding(
            "unmanaged",
            detection.rule,
            where,
            fingerprint,
            variable=detection.variable,
            detector=detector,
            suggestion=import_command(where, detection),
            details={"confidence": detection.confidence} if detection.confidence else {},
        )

    def _covered(self, detection: Detection, taken: set[tuple[int, int, int]]) -> bool:
        """A detection of a value that is (or holds) a managed one: the managed finding
        already says more about it."""
        if self.index is not None and self.index.lookup(detection.value.reveal().encode()):
            return True
        return any(
            line == detection.line and start < detection.end_column and detection.column < end
            for line, start, end in taken
        )


def _where(document: Document, hit: Hit) -> Where:
    data = document.data
    line_start = data.rfind(b"\n", 0, hit.start) + 1
    column = len(data[line_start : hit.start].decode("utf-8", errors="replace")) + 1
    width = len(data[hit.start : hit.end].decode("utf-8", errors="replace"))
    line = data.count(b"\n", 0, hit.start) + 1
    return Where(document.path, line, column, column + width, document.origin, document.commit)


def _in_userinfo(data: bytes, hit: Hit) -> str | None:
    """'url-userinfo' when the match is the password of a URL (``scheme://user:HERE@``)."""
    if data[hit.end : hit.end + 1] != b"@":
        return None
    before = data[max(0, hit.start - 300) : hit.start]
    scheme = before.rfind(b"://")
    if scheme == -1 or not before.endswith(b":"):
        return None
    user = before[scheme + 3 : -1]
    return "url-userinfo" if not any(c in user for c in b"/@ \t\n:") else None


def _slug(text: str | None) -> str:
    cleaned = "".join(c if c.isalnum() else "-" for c in (text or "").lower()).strip("-")
    return "-".join(part for part in cleaned.split("-") if part)[:60] or "imported"


def import_command(where: Where, detection: Detection) -> str:
    """The `keyturn import` command that would bring this credential under management."""
    source = (
        f"{where.commit}:{where.path}:{where.line}"
        if where.commit
        else f"{where.path}:{where.line}"
    )
    return (
        f"keyturn import --from {shlex.quote(source)} --kind {detection.kind} "
        f"--id TENANT/{_slug(detection.variable)}"
    )


# -- running batches ---------------------------------------------------------------------------

_worker: Scanner | None = None


def _start_worker(keys: ScanKeys, index: ManagedIndex | None, detectors: Sequence[str]) -> None:
    global _worker
    _worker = Scanner(keys, index, detectors)


def _scan_in_worker(documents: Sequence[Document]) -> list[Finding]:
    assert _worker is not None
    return _worker.scan_batch(documents)


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
) -> Result:
    """Scan *documents*; ``jobs`` worker processes (0: one per core; 1: this process)."""
    started = time.perf_counter()
    result = Result([], detectors=list(detectors), keyed=keys.keyed)
    if index is not None:
        result.managed_values, result.too_short = len(index), index.too_short
    ordered: list[tuple[int, list[Finding]]] = []

    def done(number: int, batch: Sequence[Document], findings: list[Finding]) -> None:
        ordered.append((number, findings))
        result.files += len(batch)
        result.bytes += sum(len(d.data) for d in batch)
        if progress:
            progress(result.files, result.bytes)

    stream = enumerate(batches(documents))
    first = next(stream, None)
    second = next(stream, None)
    jobs = jobs or os.cpu_count() or 1
    if first is not None and (second is None or jobs == 1):
        scanner = Scanner(keys, index, detectors)
        try:
            for number, batch in (b for b in (first, second) if b is not None):
                done(number, batch, scanner.scan_batch(batch))
            for number, batch in stream:
                done(number, batch, scanner.scan_batch(batch))
        finally:
            scanner.close()
    elif first is not None:
        assert second is not None
        _in_pool([first, second], stream, keys, index, detectors, jobs, done)
    result.findings = _first_of_each(ordered)
    result.seconds = time.perf_counter() - started
    return result


def _in_pool(
    head: list[tuple[int, list[Document]]],
    stream: Iterator[tuple[int, list[Document]]],
    keys: ScanKeys,
    index: ManagedIndex | None,
    detectors: Sequence[str],
    jobs: int,
    done: Callable[[int, Sequence[Document], list[Finding]], None],
) -> None:
    # spawn: a worker starts clean (no inherited database connections or threads)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        jobs, mp_context=context, initializer=_start_worker, initargs=(keys, index, detectors)
    ) as pool:
        pending: dict[Future[list[Finding]], tuple[int, list[Document]]] = {}
        for number, batch in (*head, *stream):
            pending[pool.submit(_scan_in_worker, batch)] = (number, batch)
            if len(pending) >= 2 * jobs:  # bounded: the documents' bytes wait in memory
                _collect(pending, done, FIRST_COMPLETED)
        _collect(pending, done, None)


def _collect(
    pending: dict[Future[list[Finding]], tuple[int, list[Document]]],
    done: Callable[[int, Sequence[Document], list[Finding]], None],
    until: str | None,
) -> None:
    finished, _ = wait(pending, return_when=until or "ALL_COMPLETED")
    for future in finished:
        number, batch = pending.pop(future)
        done(number, batch, future.result())


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
