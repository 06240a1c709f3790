"""The keyed audit chain: whoever can write the whole database, but lacks the master key,
cannot edit, insert, append, cut or delete without `audit verify` naming what was done.

The attacker below works with SQL and hash functions only; it never touches the key set.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import delete, select, text, update
from sqlalchemy.orm import Session

from keyturn.audit import chain, checkpoint
from keyturn.audit import log as audit
from keyturn.audit.checkpoint import Checkpoint
from keyturn.crypto import envelope
from keyturn.crypto.keys import encode_key, generate_key
from keyturn.db.models import AuditEntry, AuditHead, Meta
from keyturn.domain.errors import AuditHeadMissing, CryptoError, WrongMasterKey
from keyturn.domain.model import Secret
from tests.support.keyturn import Harness

ENTRIES = 7  # `init` writes one, _fill six


def _fill(kt: Harness, count: int = 6) -> None:
    with kt.app.db.write() as session:
        for i in range(count):
            audit.append(
                session, actor="test", action=f"thing.{i}", credential_id="a/b", details={"i": i}
            )


def _verify(kt: Harness, marks: list[Checkpoint] | None = None) -> audit.VerifyResult:
    with kt.app.db.read() as session:
        return audit.verify(session, marks or [])


def _checkpoint(kt: Harness) -> Checkpoint:
    with kt.app.db.read() as session:
        return checkpoint.make(session, kt.app.vault.keys)


# -- the attacker: SQL and hash functions, no keys -------------------------------------------

ATTACKER_KEY = secrets.token_bytes(32)


def _forge(entry: AuditEntry) -> str:
    """The attacker's best try at a hash: HMAC under a key of its own (SHA-256, the legacy
    scheme, fares no better)."""
    return hmac.new(ATTACKER_KEY, chain.canonical(entry), hashlib.sha256).hexdigest()


def _rechain(session: Session, start: int) -> None:
    """Recompute every hash from entry *start* on, and the head, as an attacker can."""
    prev = session.get(AuditEntry, start - 1)
    last = prev.hash if prev else chain.GENESIS
    rows = session.execute(
        select(AuditEntry).where(AuditEntry.seq >= start).order_by(AuditEntry.seq)
    ).scalars()
    seq = start - 1
    for row in rows:
        row.prev_hash, seq = last, row.seq
        row.hash = last = _forge(row)
    session.execute(update(AuditHead).values(seq=seq, hash=last))


def edit_and_recompute(session: Session) -> None:
    session.execute(update(AuditEntry).where(AuditEntry.seq == 4).values(actor="mallory"))
    _rechain(session, 4)


def edit_with_sha256(session: Session) -> None:
    row = session.get(AuditEntry, 4)
    assert row is not None
    row.reason = "nothing to see"
    row.hash = chain.legacy_hash(row)


def append(session: Session) -> None:
    last = session.get(AuditEntry, ENTRIES)
    assert last is not None
    forged = AuditEntry(
        seq=ENTRIES + 1,
        at=last.at,
        actor="mallory",
        action="secret.read",
        outcome="ok",
        details={},
        prev_hash=last.hash,
        hash="",
    )
    forged.hash = _forge(forged)
    session.add(forged)


def insert(session: Session) -> None:
    session.execute(update(AuditEntry).where(AuditEntry.seq >= 4).values(seq=AuditEntry.seq + 100))
    third = session.get(AuditEntry, 3)
    assert third is not None
    forged = AuditEntry(
        seq=4,
        at=third.at,
        actor="mallory",
        action="secret.read",
        outcome="ok",
        details={},
        prev_hash=third.hash,
        hash="",
    )
    forged.hash = _forge(forged)
    session.add(forged)
    session.flush()
    session.execute(update(AuditEntry).where(AuditEntry.seq >= 104).values(seq=AuditEntry.seq - 99))
    session.execute(update(AuditHead).values(seq=ENTRIES + 1))


def remove(session: Session) -> None:
    session.execute(delete(AuditEntry).where(AuditEntry.seq == 4))


def reorder(session: Session) -> None:
    """Swap entries 3 and 4, each keeping its valid hash."""
    session.execute(update(AuditEntry).where(AuditEntry.seq == 3).values(seq=-3))
    session.execute(update(AuditEntry).where(AuditEntry.seq == 4).values(seq=3))
    session.execute(update(AuditEntry).where(AuditEntry.seq == -3).values(seq=4))


def truncate(session: Session) -> None:
    session.execute(delete(AuditEntry).where(AuditEntry.seq > 4))


def truncate_and_move_head(session: Session) -> None:
    truncate(session)
    fourth = session.get(AuditEntry, 4)
    assert fourth is not None
    session.execute(update(AuditHead).values(seq=4, hash=fourth.hash))


def delete_head(session: Session) -> None:
    session.execute(text("DELETE FROM audit_head"))


def delete_everything(session: Session) -> None:
    session.execute(text("DELETE FROM audit_entries"))
    session.execute(text("DELETE FROM audit_head"))


TAMPERING: list[tuple[Callable[[Session], None], str, int | None]] = [
    (edit_and_recompute, "altered", 4),
    (edit_with_sha256, "altered", 4),
    (append, "appended", ENTRIES + 1),
    (insert, "inserted", 4),
    (remove, "removed", 4),
    (reorder, "relinked", 3),
    (truncate, "truncated", 5),
    (truncate_and_move_head, "cut", 5),
    (delete_head, "head-missing", None),
    (delete_everything, "emptied", None),
]


@pytest.mark.parametrize(
    ("tamper", "kind", "broken"), TAMPERING, ids=[t[0].__name__ for t in TAMPERING]
)
def test_each_tampering_is_named(
    kt: Harness, tamper: Callable[[Session], None], kind: str, broken: int | None
) -> None:
    _fill(kt)
    mark = _checkpoint(kt)
    assert _verify(kt, [mark]).ok
    with kt.app.db.write() as session:
        tamper(session)
    result = _verify(kt, [mark])
    assert not result.ok
    assert (result.kind, result.broken_seq) == (kind, broken), result.describe()


def test_a_tail_cut_with_its_head_needs_a_checkpoint(kt: Harness) -> None:
    """Without one, a shorter log is all there is to see: this is what checkpoints are for."""
    _fill(kt)
    mark = _checkpoint(kt)
    with kt.app.db.write() as session:
        truncate_and_move_head(session)
    assert _verify(kt).ok
    result = _verify(kt, [mark])
    assert result.kind == "cut"
    assert "covers 7 entries but the log ends at 4: entries 5-7 were removed" in result.describe()


def test_no_forgery_verifies_without_the_master_key(kt: Harness) -> None:
    """Rewrite the whole log, every hash and the head, with every scheme an attacker has:
    nothing verifies, and nothing it can write to `meta` makes it verify."""
    _fill(kt)
    for scheme in (_forge, chain.legacy_hash):
        with kt.app.db.write() as session:
            prev = chain.GENESIS
            for row in session.execute(select(AuditEntry).order_by(AuditEntry.seq)).scalars():
                row.prev_hash = prev
                row.hash = prev = scheme(row)
            session.execute(update(AuditHead).values(hash=prev))
        assert _verify(kt).kind == "altered"
    # Claiming the whole log is legacy means editing the sealed key set: it no longer opens.
    with kt.app.db.write() as session:
        row = session.get(Meta, "keyset")
        assert row is not None
        row.value = row.value[:-1] + bytes([row.value[-1] ^ 1])
    kt.close()
    with pytest.raises(WrongMasterKey):
        kt.app  # noqa: B018


def test_the_key_set_cannot_be_deleted_and_remade(kt: Harness) -> None:
    _fill(kt)
    with kt.app.db.write() as session:
        session.execute(delete(Meta).where(Meta.key == "keyset"))
    kt.close()
    with pytest.raises(WrongMasterKey, match="no key set"):
        kt.app  # noqa: B018


def test_checkpoints_that_do_not_vouch(kt: Harness, tmp_path: Path) -> None:
    _fill(kt)
    mark = _checkpoint(kt)
    altered = Checkpoint(**{**mark.__dict__, "seq": mark.seq + 5})
    assert _verify(kt, [altered]).kind == "checkpoint"
    assert "not signed by this database's checkpoint key" in (_verify(kt, [altered]).problem or "")
    other = Harness(tmp_path / "other", f"sqlite:///{tmp_path / 'other.db'}")
    (tmp_path / "other").mkdir()
    other.init()
    try:
        foreign = _checkpoint(other)
    finally:
        other.close()
    assert "another database" in (_verify(kt, [foreign]).problem or "")


def test_the_log_as_rewritten_by_a_key_holder_differs_from_its_checkpoint(kt: Harness) -> None:
    """Someone with the master key can recompute the chain; a checkpoint still shows it."""
    _fill(kt)
    mark = _checkpoint(kt)
    keys = kt.app.vault.keys
    with kt.app.db.write() as session:
        session.execute(update(AuditEntry).where(AuditEntry.seq == 3).values(actor="insider"))
        prev = session.get(AuditEntry, 2).hash  # type: ignore[union-attr]
        for row in session.execute(
            select(AuditEntry).where(AuditEntry.seq >= 3).order_by(AuditEntry.seq)
        ).scalars():
            row.prev_hash = prev
            row.hash = prev = chain.keyed_hash(keys, row)
        session.execute(update(AuditHead).values(hash=prev))
    assert _verify(kt).ok
    assert _verify(kt, [mark]).kind == "rewritten"


def _make_legacy(kt: Harness) -> None:
    """Turn the database into what keyturn wrote before 0005: the fingerprint key sealed on
    its own, every entry a plain SHA-256 link (this is keyturn itself, holding the key)."""
    keys, master = kt.app.vault.keys, kt.app.vault.master
    with kt.app.db.write() as session:
        session.execute(delete(Meta).where(Meta.key == "keyset"))
        sealed = envelope.seal(master.material, keys.fingerprint, b"keyturn:fingerprint-key")
        session.add(Meta(key="fingerprint-key", value=sealed, master_key_id=master.id))
        prev = chain.GENESIS
        for row in session.execute(select(AuditEntry).order_by(AuditEntry.seq)).scalars():
            row.prev_hash = prev
            row.hash = prev = chain.legacy_hash(row)
        session.execute(update(AuditHead).values(hash=prev))
    kt.close()


def test_a_legacy_log_becomes_a_pinned_prefix(kt: Harness) -> None:
    _fill(kt)
    fingerprint = kt.app.vault.fingerprint(Secret("same value"))
    _make_legacy(kt)
    # The first open with the master key seals a key set that keeps the fingerprint key and
    # records the 7 legacy entries; entry 8 says so and links to entry 7.
    assert kt.app.vault.keys.legacy_through == ENTRIES
    assert kt.app.vault.fingerprint(Secret("same value")) == fingerprint
    result = _verify(kt)
    assert result.ok and result.legacy == ENTRIES and result.count == ENTRIES + 1
    assert "7 legacy entries" in result.describe()
    with kt.app.db.read() as session:
        keyed = session.get(AuditEntry, ENTRIES + 1)
        assert keyed is not None and keyed.action == "audit.keyed"
        assert keyed.details["legacy_entries"] == ENTRIES
        assert session.get(Meta, "fingerprint-key") is None
    _fill(kt, 2)
    assert _verify(kt).ok
    # A legacy entry edited, with the SHA-256 chain recomputed up to the head: the first
    # keyed entry no longer links, and its own MAC cannot be recomputed.
    with kt.app.db.write() as session:
        session.execute(update(AuditEntry).where(AuditEntry.seq == 2).values(actor="mallory"))
        prev = session.get(AuditEntry, 1).hash  # type: ignore[union-attr]
        for seq in range(2, ENTRIES + 1):
            row = session.get(AuditEntry, seq)
            assert row is not None
            row.prev_hash = prev
            row.hash = prev = chain.legacy_hash(row)
    result = _verify(kt)
    assert (result.kind, result.broken_seq) == ("relinked", ENTRIES + 1)


def test_keys_survive_a_rekey(kt: Harness) -> None:
    _fill(kt, 2)
    mark = _checkpoint(kt)
    fingerprint = kt.app.vault.fingerprint(Secret("v"))
    kt.close()
    new = encode_key(generate_key().material)
    env = {"KEYTURN_MASTER_KEY": new, "KEYTURN_OLD_MASTER_KEY": kt.master_key}
    result = kt.cli("rekey", "--no-backup", "--json", env=env)
    assert result.code == 0, result.err
    assert json.loads(result.out)["keys_rewrapped"] is True
    kt.master_key = kt.env["KEYTURN_MASTER_KEY"] = new
    assert kt.app.vault.fingerprint(Secret("v")) == fingerprint
    _fill(kt, 1)
    verified = _verify(kt, [mark])
    assert verified.ok and verified.checkpoints == 1, verified.describe()


def test_append_needs_the_keys_and_the_head(kt: Harness) -> None:
    with Session(kt.app.db.engine) as bare, pytest.raises(CryptoError, match="audit key"):
        audit.append(bare, actor="t", action="x")
    with kt.app.db.write() as session:
        delete_head(session)
    with kt.app.db.write() as session, pytest.raises(AuditHeadMissing):
        audit.append(session, actor="t", action="x")


def test_what_enters_the_log(kt: Harness) -> None:
    with kt.app.db.write() as session, pytest.raises(TypeError, match="fingerprint"):
        audit.append(session, actor="t", action="x", details={"oops": Secret("v")})
    with kt.app.db.write() as session, pytest.raises(TypeError, match="fingerprint"):
        audit.append(session, actor="t", action="x", details={"list": [Secret("v")]})
    with kt.app.db.write() as session:
        entry = audit.append(
            session, actor="t", action="x", reason="a\x00b", details={"error": "\x1b[31m\ud800"}
        )
    assert entry.reason == "a\\x00b" and entry.details == {"error": "\\x1b[31m\\ud800"}
    assert _verify(kt).ok


# -- the CLI ----------------------------------------------------------------------------------


def test_cli_verify_names_the_change_in_one_line(kt: Harness, tmp_path: Path) -> None:
    _fill(kt)
    cps = tmp_path / "checkpoints"
    made = kt.cli("audit", "checkpoint", "--output", str(tmp_path / "one.json"))
    assert made.code == 0, made.err
    cps.mkdir()
    assert kt.cli("audit", "checkpoint", "-o", str(cps)).code == 0
    one = str(tmp_path / "one.json")
    good = kt.cli("audit", "verify", "--checkpoint", str(cps), "--checkpoint", one)
    assert good.code == 0 and "2 checkpoint(s) confirmed" in good.out
    with kt.app.db.write() as session:
        truncate_and_move_head(session)
    assert kt.cli("audit", "verify").code == 0
    cut = kt.cli("audit", "verify", "--checkpoint", str(cps))
    assert cut.code == 1 and len(cut.err.strip().splitlines()) == 1
    assert "entries 5-7 were removed and the head moved back" in cut.err
    data = json.loads(kt.cli("audit", "verify", "--checkpoint", str(cps), "--json").out)
    assert data["kind"] == "cut" and data["ok"] is False
    (tmp_path / "junk.json").write_text("{}")
    junk = kt.cli("audit", "verify", "--checkpoint", str(tmp_path / "junk.json"))
    assert junk.code == 1 and "is not a keyturn checkpoint" in junk.err


def test_cli_list_show_and_export_filter(kt: Harness) -> None:
    _fill(kt, 3)
    rows = json.loads(kt.cli("audit", "list", "--action", "thing.1", "--json").out)
    assert [r["action"] for r in rows] == ["thing.1"]
    page = json.loads(kt.cli("audit", "list", "--after", "2", "--limit", "1", "--json").out)
    assert [r["seq"] for r in page] == [3]
    table = kt.cli("audit", "list", "--credential", "a/b")
    assert table.code == 0 and "thing.2" in table.out
    shown = json.loads(kt.cli("audit", "show", "2", "--json").out)
    assert shown["seq"] == 2 and shown["verifies"].startswith("verifies")
    assert kt.cli("audit", "show", "99").code == 1
    lines = kt.cli("audit", "export", "--since", "2000-01-01T00:00:00Z").out.splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [1, 2, 3, 4]
    assert kt.cli("audit", "export", "--until", "2000-01-01").out == ""
    for flag, value in (("--since", "0001-01-01T00:00:00+14:00"), ("--until", "tomorrow")):
        bad = kt.cli("audit", "list", flag, value)
        assert bad.code == 1 and flag in bad.err


def test_cli_restores_a_deleted_head(kt: Harness) -> None:
    _fill(kt, 2)
    with kt.app.db.write() as session:
        delete_head(session)
    assert kt.cli("audit", "verify").code == 1
    refused = kt.cli("token", "create", "--role", "auditor")  # every audited write stops
    assert refused.code == 1 and "head row is missing" in refused.err
    restored = kt.cli("audit", "restore-head", "--reason", "head row lost in incident 42")
    assert restored.code == 0, restored.err
    assert _verify(kt).ok
    with kt.app.db.read() as session:
        last = session.execute(select(AuditEntry).order_by(AuditEntry.seq.desc())).scalars().first()
        assert last is not None and last.action == "audit.head-restored"
    assert kt.cli("audit", "restore-head", "--reason", "again").code == 1


def test_verify_sees_one_snapshot_while_others_append(kt: Harness) -> None:
    """Entries committed during a walk must not look like a head moved back (PostgreSQL
    reads at READ COMMITTED unless verify asks for one snapshot)."""
    _fill(kt, 50)
    done = threading.Event()

    def writer() -> None:
        try:
            for i in range(40):
                with kt.app.db.write() as session:
                    audit.append(session, actor="w", action=f"w.{i}")
        finally:
            done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    results = []
    while not done.is_set() or not results:
        with kt.app.db.read() as session:
            results.append(audit.verify(session, batch=7))
    thread.join()
    assert all(r.ok for r in results), [r.describe() for r in results if not r.ok][:1]
