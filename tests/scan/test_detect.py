"""The `Detector` interface: third-party detectors through entry points, a missing extra named,
and the exported names pinned."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from importlib.metadata import EntryPoint
from typing import ClassVar

import pytest

import keyturn.scan
from keyturn.domain.errors import PluginMissing, UsageError
from keyturn.domain.model import Secret
from keyturn.scan import detect
from keyturn.scan.detect import Detection
from keyturn.scan.keys import ScanKeys
from keyturn.scan.model import Document
from keyturn.scan.scanner import Scanner


class ShoutingDetector:
    """Reports every line that says SECRET=..., as a third party's detector would."""

    name: ClassVar[str] = "shouting"

    def detect(self, documents: Sequence[Document]) -> list[Detection]:
        found = []
        for number, document in enumerate(documents):
            for line, text in enumerate(document.data.decode().splitlines(), start=1):
                if text.startswith("SECRET="):
                    value = text.removeprefix("SECRET=")
                    end = 8 + len(value)
                    found.append(
                        Detection(number, "shouting:secret", line, 8, end, Secret(value),
                                  variable="SECRET", kind="api-key")
                    )  # fmt: skip
        return found

    def close(self) -> None:
        return None


def test_a_third_party_detector_from_an_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    ep = EntryPoint("shouting", f"{__name__}:ShoutingDetector", detect.ENTRY_POINTS)
    monkeypatch.setattr(detect, "entry_points", lambda group: [ep] if group == ep.group else [])
    scanner = Scanner(ScanKeys.from_fingerprint_key(os.urandom(32)), None, ["shouting"])
    findings, fresh = scanner.scan_batch([Document("app.env", b"A=1\nSECRET=Very-9xQ2vL7k\n")])
    [finding] = findings
    assert (finding.rule, finding.where.line, finding.detector) == (
        "shouting:secret",
        2,
        "shouting",
    )
    assert finding.suggestion == (
        "keyturn import --from dotenv --set path=app.env --tenant TENANT --kind api-key"
    )
    assert b"Very-9xQ2vL7k" not in repr(fresh).encode()


def test_unknown_detector_and_missing_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UsageError, match="no detector 'nope'; known: credsweeper, keyturn"):
        detect.load("nope")
    monkeypatch.setitem(sys.modules, "credsweeper", None)  # as if the extra were not installed
    with pytest.raises(PluginMissing, match=r"pip install 'keyturn\[scan\]'"):
        detect.load("credsweeper")


def test_exported_names() -> None:
    assert keyturn.scan.__all__ == [
        "Detection",
        "Detector",
        "Document",
        "Finding",
        "ManagedEntry",
        "Origin",
        "Spotted",
        "Where",
    ]
