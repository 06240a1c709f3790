"""The audit chain detects edited, removed, reordered, inserted and truncated entries."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import delete, text, update

from keyturn.audit import log as audit
from keyturn.db.models import AuditEntry
from keyturn.domain.model import Secret
from tests.support.keyturn import Harness


def _fill(kt: Harness, count: int = 6) -> None:
    with kt.app.db.write() as session:
        for i in range(count):
            audit.append(
                session, actor="test", action=f"thing.{i}", credential_id="a/b", details={"i": i}
            )


def _verify(kt: Harness) -> audit.VerifyResult:
    with kt.app.db.read() as session:
        return audit.verify(session)


def test_untouched_log_verifies(kt: Harness) -> None:
    _fill(kt)
    result = _verify(kt)
    assert result.ok and result.count == 7  # init writes one entry


def _edit(kt: Harness) -> None:
    with kt.app.db.write() as session:
        session.execute(update(AuditEntry).where(AuditEntry.seq == 4).values(actor="mallory"))


def _remove(kt: Harness) -> None:
    with kt.app.db.write() as session:
        session.execute(delete(AuditEntry).where(AuditEntry.seq == 4))


def _reorder(kt: Harness) -> None:
    """Swap the content of entries 3 and 4, keeping their seq numbers and hashes valid each."""
    with kt.app.db.write() as session:
        rows = {e.seq: e for e in session.query(AuditEntry).filter(AuditEntry.seq.in_([3, 4]))}
        a, b = rows[3], rows[4]
        a.action, b.action = b.action, a.action
        a.details, b.details = b.details, a.details
        a.hash, b.hash = audit.entry_hash(a), audit.entry_hash(b)


def _insert(kt: Harness) -> None:
    with kt.app.db.write() as session:
        session.execute(
            update(AuditEntry).where(AuditEntry.seq >= 4).values(seq=AuditEntry.seq + 100)
        )
        forged = AuditEntry(
            seq=4,
            at=session.get(AuditEntry, 3).at,
            actor="mallory",  # type: ignore[union-attr]
            action="secret.read",
            outcome="ok",
            details={},
            prev_hash=session.get(AuditEntry, 3).hash,
            hash="",
        )  # type: ignore[union-attr]
        forged.hash = audit.entry_hash(forged)
        session.add(forged)
        session.flush()
        session.execute(
            update(AuditEntry).where(AuditEntry.seq >= 104).values(seq=AuditEntry.seq - 99)
        )


def _truncate(kt: Harness) -> None:
    with kt.app.db.write() as session:
        session.execute(delete(AuditEntry).where(AuditEntry.seq == 7))


@pytest.mark.parametrize(
    ("tamper", "broken", "words"),
    [
        (_edit, 4, "content was changed"),
        (_remove, 4, "missing"),
        (_reorder, 4, "link to the previous entry"),
        (_insert, 5, "link to the previous entry"),
        (_truncate, 7, "removed from its end"),
    ],
)
def test_tampering_is_named(kt: Harness, tamper, broken: int, words: str) -> None:  # type: ignore[no-untyped-def]
    _fill(kt)
    tamper(kt)
    result = _verify(kt)
    assert not result.ok
    assert result.broken_seq == broken, result.describe()
    assert words in result.describe()


def test_cli_verify_names_the_changed_row(kt: Harness) -> None:
    _fill(kt)
    assert kt.cli("audit", "verify").code == 0
    with kt.app.db.write() as session:
        session.execute(text("UPDATE audit_entries SET reason = 'edited' WHERE seq = 3"))
    result = kt.cli("audit", "verify")
    assert result.code == 1
    assert "entry 3" in result.err and len(result.err.strip().splitlines()) == 1


def test_export_writes_json_lines(kt: Harness) -> None:
    _fill(kt, 3)
    out = kt.cli("audit", "export")
    rows = [json.loads(line) for line in out.out.splitlines()]
    assert [r["seq"] for r in rows] == [1, 2, 3, 4]
    assert rows[1]["prev_hash"] == rows[0]["hash"]


def test_secrets_cannot_enter_the_log(kt: Harness) -> None:
    with kt.app.db.write() as session, pytest.raises(TypeError, match="fingerprint"):
        audit.append(session, actor="t", action="x", details={"oops": Secret("v")})
