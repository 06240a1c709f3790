"""`keyturn get`'s Core path (keyturn.cli.secret) against its reference,
keyturn.runtime.read_secret: the same value, the same audit entry, the same refusals with the
same messages, no value without a committed entry (issue 23)."""

from __future__ import annotations

import pytest
from sqlalchemy import delete, select, update

from keyturn import runtime
from keyturn.cli import secret
from keyturn.db import models, reads
from keyturn.db.models import AuditEntry, AuditHead, Credential, Version
from keyturn.domain.errors import KeyturnError, WrongMasterKey
from keyturn.domain.model import Secret, VersionState
from tests.support.keyturn import Harness, new_master_key

CRED = "app/db"
SAME = ("action", "credential_id", "tenant_id", "fingerprint", "outcome", "details", "reason")
VALUES = {1: "first-value-1111", 2: "second-value-2222", 3: "third-value-3333"}


@pytest.fixture
def short_only(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fail a test whose read went the reference's way; lists the reads that would have."""
    went: list[str] = []

    def refuse(_ctx: object, credential_id: str, *_: object) -> None:
        went.append(credential_id)
        raise AssertionError("keyturn get took the reference path")

    monkeypatch.setattr(secret, "_reference", refuse)
    return went


def _three_versions(kt: Harness) -> None:
    """Version 1 previous, 2 current, 3 retired."""
    kt.write("inv.toml", f'[[credentials]]\nid = "{CRED}"\ninitial_secret = "env:V"\n')
    assert kt.cli("apply", "inv.toml", env={"V": VALUES[1]}).code == 0
    app = kt.app
    with app.db.write() as session:
        cred = session.get(Credential, CRED)
        assert cred is not None
        session.execute(update(Version).values(state=VersionState.PREVIOUS))
        for number, state in ((2, VersionState.CURRENT), (3, VersionState.RETIRED)):
            app.vault.new_version(session, cred, Secret(VALUES[number]), state=state, username="u")


def _last(kt: Harness) -> AuditEntry:
    with kt.app.db.read() as session:
        return session.execute(
            select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(1)
        ).scalar_one()


def _reference(kt: Harness, args: list[str]) -> tuple[str, AuditEntry | None]:
    """What read_secret answers for `keyturn get ARGS` (the value, or the error line)."""
    credential_id, previous = args[0], "--previous" in args
    number = int(args[args.index("--version") + 1]) if "--version" in args else None
    app = kt.app
    try:
        with app.db.write() as session:
            _, value = runtime.read_secret(
                app, session, credential_id, actor="reference", previous=previous, number=number
            )
    except KeyturnError as exc:
        return f"error: {exc.message}\n", None
    return value.reveal() + "\n", _last(kt)


CASES = [
    [CRED],
    [CRED, "--previous"],
    [CRED, "--version", "1"],
    [CRED, "--version", "2"],
    [CRED, "--version", "3"],  # retired: refused
    [CRED, "--version", "9"],
    ["app/none"],
    ["app/none", "--version", "1"],
]


@pytest.mark.state_db  # one transaction: a row lock on PostgreSQL, BEGIN IMMEDIATE on SQLite
@pytest.mark.parametrize("args", CASES, ids=[" ".join(c) for c in CASES])
def test_the_same_answer_and_entry_as_the_reference(
    kt: Harness, args: list[str], short_only: list[str]
) -> None:
    _three_versions(kt)
    before = _last(kt).seq
    fast = kt.cli("get", *args)
    assert not short_only
    written = _last(kt)
    expected, by_reference = _reference(kt, args)
    assert (fast.out or fast.err) == expected
    assert fast.code == (0 if by_reference else 1)
    if by_reference is None:
        assert written.seq == before  # a refused read records nothing, as the reference
        return
    assert written.seq == before + 1 and written.actor.startswith("cli:")
    assert [getattr(written, f) for f in SAME] == [getattr(by_reference, f) for f in SAME]
    assert kt.cli("audit", "verify").code == 0


def test_json_carries_version_state_and_username(kt: Harness, short_only: list[str]) -> None:
    _three_versions(kt)
    got = kt.cli("get", CRED, "--json")
    assert got.code == 0, got.err
    assert '"version": 2' in got.out and '"state": "current"' in got.out
    assert '"username": "u"' in got.out and VALUES[2] in got.out


def test_a_disputed_credential_is_held_back_with_the_references_words(
    kt: Harness, short_only: list[str]
) -> None:
    _three_versions(kt)
    with kt.app.db.write() as session:
        session.execute(update(Credential).where(Credential.id == CRED).values(dispute="x"))
    fast = kt.cli("get", CRED)
    assert fast.code == 1 and VALUES[2] not in fast.out + fast.err
    assert fast.err == _reference(kt, [CRED])[0]


@pytest.mark.state_db
def test_no_value_without_its_audit_entry(kt: Harness, short_only: list[str]) -> None:
    _three_versions(kt)
    with kt.app.db.write() as session:
        session.execute(delete(AuditHead))
    fast = kt.cli("get", CRED)
    assert fast.code == 1 and VALUES[2] not in fast.out + fast.err
    assert fast.err == _reference(kt, [CRED])[0]


def test_a_wrong_master_key_is_refused_before_any_read(kt: Harness, short_only: list[str]) -> None:
    _three_versions(kt)
    fast = kt.cli("get", CRED, env={"KEYTURN_MASTER_KEY": new_master_key()})
    assert fast.code == 1 and fast.err == f"error: {WrongMasterKey().message}\n"


def test_two_master_keys_go_the_reference_way(kt: Harness) -> None:
    """A rekey's old key: the reference's checks (here: it wraps nothing, so it is refused)."""
    _three_versions(kt)
    fast = kt.cli("get", CRED, env={"KEYTURN_OLD_MASTER_KEY": new_master_key()})
    assert fast.code == 1 and "nothing is encrypted under it" in fast.err


def test_an_uninitialised_database_says_what_to_do(kt: Harness) -> None:
    missing = f"sqlite:///{kt.home / 'elsewhere.db'}"
    fast = kt.cli("get", CRED, env={"KEYTURN_DB": missing})
    assert fast.code == 1 and "run `keyturn init`" in fast.err
    assert not (kt.home / "elsewhere.db").exists()


@pytest.mark.parametrize("light", list(reads._META.tables.values()), ids=str)
def test_the_core_tables_are_the_models_columns(light: object) -> None:
    """keyturn.db.reads' tables name columns of the schema, with its types."""
    table = models.Base.metadata.tables[str(light)]
    for column in light.columns:  # type: ignore[attr-defined]
        model = table.c[column.name]
        assert type(column.type).__name__.lstrip("_") == type(model.type).__name__, column
        assert column.primary_key == model.primary_key, column
    assert reads.now().tzinfo is not None
