"""The secret read's statements run straight on DBAPI connections (keyturn.db.direct):
the same rows and the same audit entries as through SQLAlchemy's execution, a connection
that died is replaced without a failed read, and a failing audit commit fails the read closed
and leaves the writer able to commit the next batch (issue 23)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.exc import DBAPIError

from keyturn import auth
from keyturn.audit.chain import bound_keys
from keyturn.audit.group import Record, _entries
from keyturn.audit.verify import verify
from keyturn.db import reads
from keyturn.db.models import ApiToken, AuditEntry, utcnow
from tests.api.conftest import CRED, Api
from tests.engine.conftest import INITIAL

STATES = ["current", "previous", "pending"]


def _both(api: Api, digest: str, credential_id: str) -> tuple[object, object]:
    db = api.kt.app.db
    with db.read() as session:
        through_sqlalchemy = reads.read(session.connection(), digest, credential_id, STATES)
    return through_sqlalchemy, reads.read_direct(db, digest, credential_id, STATES)


def test_the_lookup_gives_sqlalchemys_rows(api: Api) -> None:
    token = api.token("expiring", "consumer", ["acme/*"])
    digest = auth.token_hash(token)
    with api.kt.app.db.write() as session:  # every converted column holds a value
        session.execute(
            update(ApiToken)
            .where(ApiToken.hash == digest)
            .values(expires_at=utcnow() + timedelta(days=1), revoked_at=utcnow())
        )
    for credential_id in (CRED, "acme/no-such"):
        (row_a, held_a), (row_b, held_b) = _both(api, digest, credential_id)  # type: ignore[misc]
        assert row_a._asdict() == row_b._asdict()
        assert held_a == held_b
    assert row_b.scopes == ["acme/*"] and row_b.expires_at.tzinfo is not None
    assert _both(api, auth.token_hash("kt_unknown"), CRED) == ((None, None), (None, None))


def test_the_group_writer_writes_the_references_entries(api: Api) -> None:
    app = api.kt.app
    record = Record(
        actor="token:tok_x",
        action="secret.read",
        credential_id=CRED,
        fingerprint="ab" * 32,
        details={"version": 1, "state": "current", "text": "é\x1b"},
    )
    direct = app.audit_writer.append_all([record, record])
    with app.db.engine.begin() as conn:
        reads.append(conn, bound_keys(app.db), _entries([record]))
    with app.db.read() as session:
        entries = session.execute(
            select(AuditEntry).where(AuditEntry.seq >= direct[0]).order_by(AuditEntry.seq)
        ).scalars()
        rows = [(e.seq, e.actor, e.details, e.fingerprint, e.at.tzinfo) for e in entries]
        report = verify(session)
    assert [r[0] for r in rows] == [direct[0], direct[1], direct[1] + 1]
    assert all(r[1:] == rows[-1][1:] for r in rows)
    assert rows[0][2] == {"version": 1, "state": "current", "text": "é\\x1b"}
    assert report.ok, report


def test_a_dead_connection_is_replaced_without_a_failed_read(api: Api) -> None:
    """This thread's kept reading connection and the audit writer's die (closed, or ended by
    the server): the next lookup on this thread and the next audited read both succeed."""
    db = api.kt.app.db
    digest = auth.token_hash(api.tokens["consumer"])

    def read() -> str:
        response = api.call("consumer", "GET", f"/credentials/{CRED}/secret")
        assert response.status_code == 200, response.text
        return str(response.json()["value"])

    assert read() == INITIAL
    assert reads.read_direct(db, digest, CRED, STATES)[1] is not None
    mine, writer = db.direct._local.conn, next(iter(db.direct_writes._open))
    if db.is_sqlite:
        for conn in (*db.direct._open, writer):
            conn.close()
    else:  # the server ends every backend of this database but the one asking
        with db.engine.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
    assert reads.read_direct(db, digest, CRED, STATES)[1] is not None
    assert db.direct._local.conn is not mine  # replaced, on the one retry
    assert read() == INITIAL and writer not in db.direct_writes._open


def test_a_refusal_is_not_retried_and_keeps_the_connection(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a lost connection is tried again: a statement the database refuses (here its
    table is gone) is one attempt, and the connection stays."""
    db = api.kt.app.db
    digest = auth.token_hash(api.tokens["consumer"])
    assert reads.read_direct(db, digest, CRED, STATES)[1] is not None
    mine = db.direct._local.conn
    attempts: list[object] = []
    real = db.direct._connection

    def counted() -> tuple[object, bool]:
        attempts.append(None)
        return real()

    monkeypatch.setattr(db.direct, "_connection", counted)
    with db.engine.begin() as conn:
        conn.execute(text("ALTER TABLE api_tokens RENAME TO api_tokens_away"))
    try:
        with pytest.raises(DBAPIError) as refused:
            reads.read_direct(db, digest, CRED, STATES)
    finally:
        with db.engine.begin() as conn:
            conn.execute(text("ALTER TABLE api_tokens_away RENAME TO api_tokens"))
    assert digest not in str(refused.value)  # parameters hidden
    assert len(attempts) == 1 and db.direct._local.conn is mine
    assert reads.read_direct(db, digest, CRED, STATES)[1] is not None
    assert db.direct._local.conn is mine


def test_a_failed_audit_commit_fails_the_read_closed_and_the_next_one_commits(api: Api) -> None:
    db = api.kt.app.db
    assert api.call("consumer", "GET", f"/credentials/{CRED}/secret").status_code == 200
    with db.engine.begin() as conn:
        conn.execute(text("ALTER TABLE audit_entries RENAME TO audit_entries_away"))
    try:
        refused = api.call("consumer", "GET", f"/credentials/{CRED}/secret")
    finally:
        with db.engine.begin() as conn:
            conn.execute(text("ALTER TABLE audit_entries_away RENAME TO audit_entries"))
    assert refused.status_code == 503, refused.text
    assert INITIAL not in refused.text and "audit" in refused.json()["error"]["message"]
    again = api.call("consumer", "GET", f"/credentials/{CRED}/secret")
    assert again.status_code == 200 and again.json()["value"] == INITIAL
    with db.read() as session:
        assert verify(session).ok
