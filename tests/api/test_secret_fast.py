"""The secret read's hot path (keyturn.api.reading) against its reference,
keyturn.runtime.read_secret: the same value, the same audit entry, the same refusals, and no
value without a committed entry (issue 23)."""

from __future__ import annotations

from sqlalchemy import delete, select, update

from keyturn import runtime
from keyturn.db.models import AuditEntry, AuditHead, Credential
from tests.api.conftest import CRED, GLOBEX, OTHER, OTHER_PW, Api, is_envelope
from tests.engine.conftest import INITIAL

SAME = ("action", "credential_id", "tenant_id", "fingerprint", "outcome", "details", "reason")


def _last(api: Api) -> AuditEntry:
    with api.kt.app.db.read() as session:
        entry = session.execute(
            select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(1)
        ).scalar_one()
    return entry


def test_same_value_and_entry_as_the_reference(api: Api) -> None:
    fast = api.call("consumer", "GET", f"/credentials/{CRED}/secret")
    assert fast.status_code == 200 and fast.json()["value"] == INITIAL
    assert fast.json() == {
        "credential": CRED,
        "version": 1,
        "state": "current",
        "username": fast.json()["username"],
        "value": INITIAL,
        "on_target": None,
        "previous": None,
        "next": None,
    }
    by_api = _last(api)
    assert by_api.actor == f"token:{api.token_ids['consumer']}"
    app = api.kt.app
    with app.db.write() as session:
        row, value = runtime.read_secret(app, session, CRED, actor="reference")
    assert value.reveal() == INITIAL and row.username == fast.json()["username"]
    by_reference = _last(api)
    assert [getattr(by_api, f) for f in SAME] == [getattr(by_reference, f) for f in SAME]
    assert by_reference.seq == by_api.seq + 1


def test_refusals_match_every_other_route(api: Api) -> None:
    assert api.call(None, "GET", f"/credentials/{CRED}/secret").status_code == 401
    assert api.call("kt_nonsense", "GET", f"/credentials/{CRED}/secret").status_code == 401
    assert api.call("auditor", "GET", f"/credentials/{CRED}/secret").status_code == 403
    # Outside the consumer's scope, or another tenant's: not found, as if absent.
    for who, cred in (("consumer", OTHER), ("acme-admin", GLOBEX)):
        if who == "acme-admin":
            api.token(who, "admin", tenant="acme")
        hidden = api.call(who, "GET", f"/credentials/{cred}/secret")
        absent = api.call(who, "GET", "/credentials/acme/nothing-here/secret")
        assert hidden.status_code == absent.status_code == 404
        assert is_envelope(hidden) and OTHER_PW not in hidden.text
    none = api.call("admin", "GET", f"/credentials/{CRED}/secret", params={"version": "previous"})
    assert none.status_code == 404 and "no previous version" in none.json()["error"]["message"]


def test_a_disputed_credential_is_held_back(api: Api) -> None:
    with api.kt.app.db.write() as session:
        session.execute(update(Credential).where(Credential.id == OTHER).values(dispute="x"))
    held = api.call("admin", "GET", f"/credentials/{OTHER}/secret")
    assert held.status_code == 409 and OTHER_PW not in held.text


def test_no_value_without_its_audit_entry(api: Api) -> None:
    """Fail closed: when the entry cannot be committed, the value is not sent."""
    with api.kt.app.db.write() as session:
        session.execute(delete(AuditHead))
    refused = api.call("consumer", "GET", f"/credentials/{CRED}/secret")
    assert refused.status_code >= 400 and is_envelope(refused)
    assert INITIAL not in refused.text
    assert refused.json()["error"]["code"] == "audit_head_missing"
