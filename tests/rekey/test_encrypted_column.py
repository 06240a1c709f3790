"""The encrypted-column target on SQLite and PostgreSQL application databases."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from keyturn.domain.errors import LiteralSecret, TargetRejected
from keyturn.domain.model import PasswordRules, Secret
from keyturn.targets.base import Account
from tests.rekey.app_db import AppTable, encrypt, new_key

ACCOUNT = Account("app")
FORMATS = [("fernet", False), ("aes-gcm", False), ("aes-gcm", True), ("fernet", True)]


@pytest.fixture(params=["sqlite", "postgres"])
def app_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'app.db'}"
        return
    if not os.environ.get("KEYTURN_TEST_PG_URL"):
        pytest.skip("KEYTURN_TEST_PG_URL is not set (source .test-env)")
    yield str(request.getfixturevalue("pg_database"))


@pytest.mark.parametrize(("fmt", "binary"), FORMATS)
def test_set_reencrypts_every_row_and_is_idempotent(app_url: str, fmt: str, binary: bool) -> None:
    app = AppTable(app_url, fmt, binary)
    old, new = new_key(fmt), new_key(fmt)
    plain = app.create(old, 57)
    target = app.target(batch_size=10, url="env:APP_URL")
    os.environ["APP_URL"] = app_url
    try:
        assert target.test(ACCOUNT, Secret(old))
        target.set(ACCOUNT, Secret(new), Secret(old))
        assert app.decrypted(new) == plain
        assert target.test(ACCOUNT, Secret(new))
        assert not target.test(ACCOUNT, Secret(old))
        rows = app.rows()
        target.set(ACCOUNT, Secret(new), Secret(old))  # a replayed step changes nothing
        assert app.rows() == rows
        target.revoke(ACCOUNT, Secret(old))
    finally:
        del os.environ["APP_URL"]
        target.close()


def test_half_done_table_is_finished_and_nothing_is_encrypted_twice(app_url: str) -> None:
    app = AppTable(app_url, "fernet")
    old, new = new_key("fernet"), new_key("fernet")
    plain = app.create(old, 40)
    engine = app.engine
    from sqlalchemy import text

    with engine.begin() as conn:  # the first half already moved (a crashed earlier run)
        for i in range(1, 21):
            conn.execute(
                text("UPDATE totp_secrets SET secret = :v WHERE id = :i"),
                {"v": encrypt("fernet", new, plain[i], False), "i": i},
            )
    engine.dispose()
    before = app.rows()
    target = app.target(batch_size=7)
    try:
        target.set(ACCOUNT, Secret(new), Secret(old))
    finally:
        target.close()
    after = app.rows()
    assert all(after[i] == before[i] for i in range(1, 21))
    assert app.decrypted(new) == plain


def test_rows_under_neither_key_are_reported_without_values(app_url: str) -> None:
    app = AppTable(app_url, "aes-gcm")
    old, new, other = new_key("aes-gcm"), new_key("aes-gcm"), new_key("aes-gcm")
    app.create(old, 5)
    stray = AppTable(app_url, "aes-gcm", table="stray")
    stray.create(other, 1)
    engine = app.engine
    from sqlalchemy import text

    with engine.begin() as conn:
        conn.execute(
            text("UPDATE totp_secrets SET secret = :v WHERE id = 3"), {"v": stray.rows()[1]}
        )
    engine.dispose()
    target = app.target()
    try:
        with pytest.raises(TargetRejected, match=r"1 row\(s\) decrypt with neither") as caught:
            target.set(ACCOUNT, Secret(new), Secret(old))
    finally:
        target.close()
    assert new not in str(caught.value) and old not in str(caught.value)
    assert "first id 3" in str(caught.value)


def test_revoke_refuses_while_rows_are_left_under_the_old_key(tmp_path: Path) -> None:
    app = AppTable(f"sqlite:///{tmp_path / 'app.db'}", "fernet")
    old = new_key("fernet")
    app.create(old, 3)
    target = app.target()
    with pytest.raises(TargetRejected, match="3 row"):
        target.revoke(ACCOUNT, Secret(old))
    target.close()


@pytest.mark.parametrize("fmt", ["fernet", "aes-gcm"])
def test_generated_values_are_valid_keys(tmp_path: Path, fmt: str) -> None:
    app = AppTable(f"sqlite:///{tmp_path / 'app.db'}", fmt)
    app.create(new_key(fmt), 2)
    target = app.target()
    values = {target.generate(PasswordRules()).reveal() for _ in range(20)}
    assert len(values) == 20
    for value in values:
        app.create(value, 2)
        assert target.test(ACCOUNT, Secret(value))
    target.close()


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        ({"url": "postgresql://app:hunter2-secret@db/app"}, LiteralSecret),
        ({"table": "totp; DROP TABLE x"}, ValueError),
        ({"value_column": "secret--"}, ValueError),
        ({"format": "rot13"}, ValueError),
    ],
)
def test_settings_are_checked(tmp_path: Path, settings: dict[str, str], error: type) -> None:
    app = AppTable(f"sqlite:///{tmp_path / 'app.db'}", "fernet")
    with pytest.raises(error) as caught:
        app.target(**settings)
    assert "hunter2-secret" not in str(caught.value)


def test_a_wrong_key_value_is_refused_without_echoing_it(tmp_path: Path) -> None:
    app = AppTable(f"sqlite:///{tmp_path / 'app.db'}", "fernet")
    app.create(new_key("fernet"), 1)
    target = app.target()
    with pytest.raises(TargetRejected, match="not a Fernet key") as caught:
        target.test(ACCOUNT, Secret("not-a-key-but-secret-ish"))
    assert "secret-ish" not in str(caught.value)
    target.close()


def test_a_wrong_database_password_is_a_refusal_not_an_outage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/targets/encrypted-column.md's `url = "env:APP_DATABASE_URL"` with a wrong password:
    said as such (not "unreachable", which reads as a server down), and the password not shown."""
    host, port = (
        os.environ.get("KEYTURN_TEST_SCRAM_PG_HOST"),
        os.environ.get("KEYTURN_TEST_SCRAM_PG_PORT"),
    )
    if not host or not port:
        pytest.skip("KEYTURN_TEST_SCRAM_PG_* is not set (source .test-env)")
    user = os.environ["KEYTURN_TEST_SCRAM_PG_USER"]
    wrong = "wrong-Password-42"
    monkeypatch.setenv("KT_APP_DB", f"postgresql://{user}:{wrong}@{host}:{port}/postgres")
    target = AppTable(f"sqlite:///{tmp_path / 'app.db'}", "fernet").target(url="env:KT_APP_DB")
    with pytest.raises(TargetRejected, match="refused the login") as caught:
        target.test(ACCOUNT, Secret(new_key("fernet")))
    assert wrong not in str(caught.value)
    target.close()
