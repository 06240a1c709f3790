"""Scan results for people (text), machines (JSON) and code-scanning UIs (SARIF 2.1.0).

Everything here is built from findings, which hold no values: no output format can print one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from rich.console import Console
from rich.text import Text

from keyturn.scan.model import Finding
from keyturn.scan.run import Result
from keyturn.scan.scanner import MANAGED_RULE

if TYPE_CHECKING:
    from keyturn.scan.leak import LeakResult

SARIF_SCHEMA = (
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
)


_STATES = {
    "pending": "about to go live",
    "current": "the live value",
    "previous": "still accepted (grace period)",
    "retired": "no longer accepted",
    "failed": "never went live",
}


def describe(finding: Finding) -> str:
    """One sentence about a finding, for people and for SARIF messages."""
    entry = finding.credential
    if entry is not None:
        users = ", ".join(entry.consumers) or "no registered consumer"
        state = _STATES.get(entry.state, entry.state)
        return (
            f"copy of {entry.credential_id} version {entry.version} ({entry.state}: {state}), "
            f"{finding.encoding}; owner {entry.owner or '-'}; used by {users}"
        )
    name = f" assigned to {finding.variable}" if finding.variable else ""
    return f"hard-coded credential ({finding.rule}){name}, not managed by keyturn"


def summary(result: Result, new: list[Finding], accepted: int) -> dict[str, Any]:
    return {
        "files": result.files,
        "bytes": result.bytes,
        "seconds": round(result.seconds, 3),
        "managed_values": result.managed_values,
        "values_too_short": result.too_short,
        "detectors": result.detectors,
        "keyed": result.keyed,
        "findings": len(new),
        "managed": sum(1 for f in new if f.kind == "managed"),
        "unmanaged": sum(1 for f in new if f.kind == "unmanaged"),
        "in_baseline": accepted,
        "from_cache": result.cached,
        "skipped": {
            "binary": result.skipped.binary,
            "too_large": result.skipped.too_large,
            "unreadable": result.skipped.unreadable,
        },
    }


def _leak(r: LeakResult) -> dict[str, Any]:
    return {
        "credential": r.credential_id,
        "versions": list(r.versions),
        "actions": list(r.actions),
        "rotation": r.outcome.rotation_id if r.outcome else None,
        "status": str(r.outcome.status) if r.outcome else None,
        "error": r.error,
    }


def as_json(
    result: Result, new: list[Finding], accepted: int, leaks: Sequence[LeakResult] = ()
) -> str:
    data: dict[str, Any] = {
        "findings": [f.as_dict() for f in new],
        "summary": summary(result, new, accepted),
    }
    if leaks:
        data["rotations"] = [_leak(r) for r in leaks]
    return json.dumps(data, indent=2, default=str) + "\n"


def as_text(console: Console, result: Result, new: list[Finding], accepted: int) -> None:
    styles = {"error": "bold red", "warning": "yellow", "note": "dim"}
    for finding in new:
        line = Text(f"{finding.kind.upper():9} ", style=styles[finding.level])
        line.append(str(finding.where), style="bold")
        line.append(f"  {describe(finding)}")
        console.print(line, highlight=False, soft_wrap=True)
        if finding.suggestion:
            console.print(
                Text(f"          -> {finding.suggestion}", style="cyan"),
                highlight=False,
                soft_wrap=True,
            )
    data = summary(result, new, accepted)
    skipped = result.skipped
    detectors = ", ".join(result.detectors) or "no detector"
    tail = Text(
        f"scanned {data['files']} files ({data['bytes'] / 1e6:.1f} MB) in {data['seconds']:.1f} s "
        f"against {data['managed_values']} managed values with {detectors}: "
        f"{data['managed']} managed, {data['unmanaged']} unmanaged, {accepted} in the baseline; "
        f"{result.cached} files from the cache; "
        f"skipped {skipped.binary} binary, {skipped.too_large} too large, "
        f"{skipped.unreadable} unreadable",
        style="dim",
    )
    console.print(tail, highlight=False, soft_wrap=True)


# -- SARIF ------------------------------------------------------------------------------------

_RULE_TEXT = {
    MANAGED_RULE: "A copy of a credential keyturn manages",
}


def _uri(path: str, root: Path) -> tuple[str, str | None]:
    """A URI reference for *path*: relative to the scan's folder when it can be."""
    p = Path(path)
    if p.is_absolute():
        try:
            p = p.relative_to(root)
        except ValueError:
            return "file://" + quote(p.as_posix()), None
    return quote(p.as_posix()), "SRCROOT"


def _rules(findings: list[Finding]) -> list[dict[str, Any]]:
    ids = sorted({f.rule for f in findings}, key=lambda r: (r != MANAGED_RULE, r))
    return [
        {
            "id": rule,
            "name": rule.split(":", 1)[-1],
            "shortDescription": {
                "text": _RULE_TEXT.get(rule, f"Hard-coded credential ({rule.split(':', 1)[-1]})")
            },
            "defaultConfiguration": {"level": "error" if rule == MANAGED_RULE else "warning"},
        }
        for rule in ids
    ]


def _result(finding: Finding, index: dict[str, int], root: Path) -> dict[str, Any]:
    uri, base = _uri(finding.where.path, root)
    location: dict[str, Any] = {"uri": uri}
    if base:
        location["uriBaseId"] = base
    w = finding.where
    properties: dict[str, Any] = {"kind": finding.kind, "origin": str(w.origin)}
    if w.commit:
        properties["commit"] = w.commit
    if finding.credential is not None:
        c = finding.credential
        properties.update(
            credential=c.credential_id,
            version=c.version,
            state=c.state,
            owner=c.owner,
            consumers=list(c.consumers),
            encoding=finding.encoding,
        )
    if finding.suggestion:
        properties["suggestion"] = finding.suggestion
    text = describe(finding) + (f". Next: {finding.suggestion}" if finding.suggestion else "")
    return {
        "ruleId": finding.rule,
        "ruleIndex": index[finding.rule],
        "level": finding.level,
        "message": {"text": text},
        "locations": [
            {
                "physicalLocation": {
                    "artifactLocation": location,
                    "region": {
                        "startLine": w.line,
                        "startColumn": w.column,
                        "endColumn": max(w.end_column, w.column + 1),
                    },
                }
            }
        ],
        "partialFingerprints": {"keyturnFingerprint/v1": finding.fingerprint},
        "baselineState": "new",
        "properties": properties,
    }


def as_sarif(result: Result, new: list[Finding], version: str) -> str:
    rules = _rules(new)
    index = {rule["id"]: n for n, rule in enumerate(rules)}
    root = (result.root or Path.cwd()).resolve()
    run = {
        "tool": {
            "driver": {
                "name": "keyturn",
                "version": version,
                "rules": rules,
            }
        },
        "originalUriBaseIds": {"SRCROOT": {"uri": root.as_uri() + "/"}},
        "columnKind": "unicodeCodePoints",
        "results": [_result(f, index, root) for f in new],
        "properties": {"detectors": result.detectors, "keyed": result.keyed},
    }
    return json.dumps({"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [run]}, indent=2) + "\n"
