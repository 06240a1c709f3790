"""One batch of documents to findings, in whichever process scans it.

The batch is matched against the managed index and handed to each detector; each detection
loses its value right there (``Spotted``: two keyed MACs instead), so only findings and
spotted records leave the process: values never cross a process boundary, and a worker never
sees a managed value.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator, Mapping, Sequence
from pathlib import PurePosixPath

from keyturn.scan import detect
from keyturn.scan.detect import Detection, Detector, Spotted
from keyturn.scan.index import Hit, ManagedIndex, form_fingerprint
from keyturn.scan.keys import ScanKeys
from keyturn.scan.model import Document, Finding, ManagedEntry, Origin, Where

MANAGED_RULE = "keyturn:managed-credential"


class Scanner:
    """What one process needs to scan a batch: the keys, the index, the detectors."""

    def __init__(self, keys: ScanKeys, index: ManagedIndex | None, detectors: Sequence[str]):
        self.keys = keys
        self.index = index
        self.detectors: list[Detector] = [detect.load(name) for name in detectors]

    def close(self) -> None:
        for detector in self.detectors:
            detector.close()

    def scan_batch(
        self, documents: Sequence[Document], cached: Mapping[int, list[Spotted]] | None = None
    ) -> tuple[list[Finding], dict[int, list[Spotted]]]:
        """Findings of a batch, and what the detectors spotted in the documents not in
        *cached* (by their number in the batch), for the cache."""
        findings: list[Finding] = []
        taken: list[set[tuple[int, int, int]]] = [set() for _ in documents]
        for number, document in enumerate(documents):
            for finding in self._managed(document):
                findings.append(finding)
                w = finding.where
                taken[number].add((w.line, w.column, w.end_column))
        fresh = self._detect(documents, cached or {})
        seen: set[tuple[int, int, str]] = set()
        for number, spotted in sorted({**(cached or {}), **fresh}.items()):
            for spot in spotted:
                finding = self._unmanaged(documents[number], spot)
                key = (number, spot.line, finding.fingerprint)
                if key not in seen and not self._covered(spot, taken[number]):
                    seen.add(key)
                    findings.append(finding)
        return findings, fresh

    def _detect(
        self, documents: Sequence[Document], cached: Mapping[int, list[Spotted]]
    ) -> dict[int, list[Spotted]]:
        todo = [n for n in range(len(documents)) if n not in cached]
        fresh: dict[int, list[Spotted]] = {n: [] for n in todo}
        if not todo:
            return fresh
        subset = [documents[n] for n in todo]
        for detector in self.detectors:
            for detection in detector.detect(subset):
                fresh[todo[detection.document]].append(self._spot(detection, detector.name))
        return fresh

    def _spot(self, detection: Detection, detector: str) -> Spotted:
        """The detection without its value: the value is dropped here, in this process."""
        value = detection.value.reveal().encode()
        return Spotted(
            detection.rule,
            detection.line,
            detection.column,
            detection.end_column,
            detector,
            value_mac=self.keys.value_mac(value),
            form_fp=form_fingerprint(self.keys, value).hex(),
            variable=detection.variable,
            kind=detection.kind,
            confidence=detection.confidence,
        )

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

    def _unmanaged(self, document: Document, spot: Spotted) -> Finding:
        fingerprint = self.keys.finding_fingerprint("unmanaged", document.path, spot.value_mac)
        where = Where(
            document.path, spot.line, spot.column, spot.end_column, document.origin, document.commit
        )
        return Finding(
            "unmanaged",
            spot.rule,
            where,
            fingerprint,
            variable=spot.variable,
            detector=spot.detector,
            suggestion=import_command(where, spot.kind, spot.variable),
            details={"confidence": spot.confidence} if spot.confidence else {},
        )

    def _covered(self, spot: Spotted, taken: set[tuple[int, int, int]]) -> bool:
        """A detection of a value that is (or holds) a managed one: the managed finding
        already says more about it."""
        if self.index is not None and self.index.identify(bytes.fromhex(spot.form_fp)):
            return True
        return any(
            line == spot.line and start < spot.end_column and spot.column < end
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


def _dotenv(path: str) -> bool:
    name = PurePosixPath(path).name
    return name == ".env" or name.startswith(".env.") or name.endswith(".env")


def import_command(where: Where, kind: str, variable: str | None) -> str:
    """What brings this credential under management: `keyturn import` reads a dotenv file in
    the work tree; no command takes one value out of any other file, so for those it is the
    inventory entry to declare."""
    if where.origin == Origin.FILE and _dotenv(where.path):
        return (
            f"keyturn import --from dotenv --set path={shlex.quote(where.path)} "
            f"--tenant TENANT --kind {kind}"
        )
    return (
        f'declare [[credentials]] id = "TENANT/{_slug(variable)}", kind = "{kind}", '
        f'initial_secret = "env:..." in keyturn.toml and `keyturn apply` it; then remove '
        f"the copy from {where}"
    )
