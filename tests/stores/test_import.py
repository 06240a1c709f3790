"""`keyturn import` from OpenBao (real, shared dev server), AWS Secrets Manager (moto server,
a double) and a dotenv file: values equal, a second import changes nothing, no value shown."""

from __future__ import annotations

import json
import secrets

import pytest

from keyturn.db import repo
from tests.stores.bao import client
from tests.stores.conftest import need, written
from tests.stores.test_aws_secretsmanager import REGION, sm
from tests.support.keyturn import Harness

COUNT = 100


def values_of(kt: Harness, ids: list[str]) -> dict[str, str]:
    app = kt.app
    with app.db.read() as session:
        return {
            i: app.vault.reveal(repo.version_in_state(session, i, "current")).reveal()  # type: ignore[arg-type]
            for i in ids
        }


def audit_count(kt: Harness) -> int:
    return len(json.loads(kt.cli("audit", "list", "--json", "--limit", "10000").out))


def check_twice(kt: Harness, args: list[str], expected: dict[str, str]) -> None:
    dry = kt.cli("import", *args, "--dry-run", "--json")
    assert dry.code == 0, dry.err
    assert {p["action"] for p in json.loads(dry.out)} == {"create"}
    assert kt.cli("list", "--json").out.count('"id"') == 0
    first = kt.cli("import", *args, "--json")
    assert first.code == 0, first.err
    planned = json.loads(first.out)
    assert len(planned) == COUNT and {p["action"] for p in planned} == {"create"}
    assert values_of(kt, list(expected)) == expected
    entries = audit_count(kt)
    second = kt.cli("import", *args)
    assert second.code == 0, second.err
    assert f"{COUNT} secret(s): {COUNT} unchanged" in second.out
    assert audit_count(kt) == entries
    shown = dry.out + dry.err + first.out + first.err + second.out + second.err
    assert not any(v in shown for v in expected.values())
    assert not any(v in written(kt.home) for v in expected.values())


def test_import_100_from_openbao(kt: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    tenant = "t" + secrets.token_hex(4)
    bao = client()
    expected = {}
    for i in range(COUNT):
        value = secrets.token_urlsafe(24)
        folder = "smtp" if i % 2 else "db"
        bao.secrets.kv.v2.create_or_update_secret(
            path=f"{tenant}/{folder}/s{i:03d}", secret={"value": value}
        )
        expected[f"{tenant}/{folder}/s{i:03d}"] = value
    monkeypatch.setenv("BAO_TOKEN", need("KEYTURN_TEST_BAO_TOKEN"))
    args = [
        "--from", "vault",
        "--set", f"url={need('KEYTURN_TEST_BAO_ADDR')}",
        "--set", "token=env:BAO_TOKEN",
        "--prefix", f"secret/{tenant}",
        "--tenant", tenant,
        "--kind", "password",
        "--owner", "platform",
    ]  # fmt: skip
    check_twice(kt, args, expected)


def test_import_100_from_aws_secretsmanager(kt: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    tenant = "t" + secrets.token_hex(4)
    expected = {}
    for i in range(COUNT):
        value = secrets.token_urlsafe(24)
        sm().create_secret(Name=f"{tenant}/api/k{i:03d}", SecretString=value)
        expected[f"{tenant}/api/k{i:03d}"] = value
    monkeypatch.setenv("AWS_KEY_ID", need("KEYTURN_TEST_AWS_ACCESS_KEY_ID"))
    monkeypatch.setenv("AWS_SECRET", need("KEYTURN_TEST_AWS_SECRET_ACCESS_KEY"))
    args = [
        "--from", "aws-secretsmanager",
        "--set", f"region={REGION}",
        "--set", f"endpoint={need('KEYTURN_TEST_AWS_ENDPOINT')}",
        "--set", "access_key_id=env:AWS_KEY_ID",
        "--set", "secret_access_key=env:AWS_SECRET",
        "--prefix", f"{tenant}/",
        "--tenant", tenant,
        "--kind", "api-key",
    ]  # fmt: skip
    check_twice(kt, args, expected)


def test_import_a_dotenv_file_by_a_mapping(kt: Harness) -> None:
    (kt.home / "old.env").write_text("SMTP_PASSWORD=s3cret-smtp-777\nDB_PASSWORD='d b-888'\n")
    kt.write(
        "map.toml",
        """
[source]
from = "dotenv"
prefix = ""
[source.settings]
path = "old.env"

[[secrets]]
path = "SMTP_PASSWORD"
id = "acme/smtp-admin"
kind = "smtp-mailu"
owner = "mail-team"
""",
    )
    result = kt.cli("import", "--map", "map.toml")
    assert result.code == 0, result.err
    assert "s3cret-smtp-777" not in result.out + result.err
    assert values_of(kt, ["acme/smtp-admin"]) == {"acme/smtp-admin": "s3cret-smtp-777"}
    show = json.loads(kt.cli("show", "acme/smtp-admin", "--json").out)
    assert (show["kind"], show["owner"], show["tenant"]) == ("smtp-mailu", "mail-team", "acme")
    assert "DB_PASSWORD" in result.out and "skip" in result.out  # not in the mapping
    (kt.home / "old.env").write_text("SMTP_PASSWORD=changed-999\n")
    again = kt.cli("import", "--map", "map.toml", "--json")
    assert json.loads(again.out)[0]["action"] == "differs"  # reported, not replaced
    assert values_of(kt, ["acme/smtp-admin"]) == {"acme/smtp-admin": "s3cret-smtp-777"}


def test_a_name_prefix_that_is_part_of_the_name_keeps_the_whole_name(kt: Harness) -> None:
    """`--prefix EMAIL_HOST_PASSWORD` on a file that also holds EMAIL_HOST_PASSWORD_OLD: two
    ids named after the variables (not `acme/_old`); a prefix ending at a separator (`APP_`)
    is taken off, as a folder is."""
    (kt.home / "old.env").write_text(
        "EMAIL_HOST_PASSWORD=pw-one-4242\nEMAIL_HOST_PASSWORD_OLD=pw-two-4343\nAPP_DB=pw-3\n"
    )
    base = ["import", "--from", "dotenv", "--set", "path=old.env", "--tenant", "acme"]
    base += ["--kind", "password", "--dry-run", "--json"]
    planned = json.loads(kt.cli(*base, "--prefix", "EMAIL_HOST_PASSWORD").out)
    assert sorted(p["credential_id"] for p in planned) == [
        "acme/email_host_password",
        "acme/email_host_password_old",
    ]
    (app,) = json.loads(kt.cli(*base, "--prefix", "APP_").out)
    assert app["credential_id"] == "acme/db"


@pytest.mark.parametrize(
    ("source", "setting"), [("dotenv", "path=legacy.env"), ("file", "directory=secrets")]
)
def test_a_source_that_is_not_there_is_an_error_not_nothing_found(
    kt: Harness, source: str, setting: str
) -> None:
    """docs/stores/dotenv.md's import with a mistyped path said "0 secret(s): nothing found"
    and exit 0."""
    result = kt.cli("import", "--from", source, "--set", setting, "--tenant", "acme")
    assert result.code == 1, result.out
    assert result.err.startswith("error:") and "nothing to import" in result.err
    assert "Traceback" not in result.err


def test_a_literal_secret_setting_is_refused(kt: Harness) -> None:
    result = kt.cli("import", "--from", "vault", "--set", "url=http://127.0.0.1:1",
                    "--set", "token=hvs.literal-000")  # fmt: skip
    assert result.code != 0 and result.err.startswith("error:")
    assert "hvs.literal-000" not in result.err


def test_import_from_openbao_links_a_declared_store(
    kt: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With --store, a secret found again under its credential's path is linked to the store,
    its KV version recorded: the next publish there is a check-and-set from it."""
    tenant = "t" + secrets.token_hex(4)
    client().secrets.kv.v2.create_or_update_secret(
        path=f"{tenant}/smtp-admin", secret={"value": "linked-Value-1"}
    )
    monkeypatch.setenv("BAO_TOKEN", need("KEYTURN_TEST_BAO_TOKEN"))
    kt.write(
        "stores.toml",
        f'[stores.bao]\ntype = "vault"\nurl = "{need("KEYTURN_TEST_BAO_ADDR")}"\n'
        'token = "env:BAO_TOKEN"\n',
    )
    assert kt.cli("apply", "stores.toml").code == 0
    args = ["--from", "vault", "--store", "bao", "--prefix", f"secret/{tenant}"]
    result = kt.cli("import", *args, "--tenant", tenant, "--kind", "smtp", "--json")
    assert json.loads(result.out)[0]["action"] == "create", result.err
    show = json.loads(kt.cli("show", f"{tenant}/smtp-admin", "--json").out)
    assert show["stores"] == ["bao"]
    assert show["store_sync"][0]["status"] == "in-sync"
    verify = kt.cli("verify", f"{tenant}/smtp-admin", "--json")
    assert verify.code == 0 and json.loads(verify.out)[0]["status"] == "in-sync", verify.out
    client().secrets.kv.v2.create_or_update_secret(
        path=f"{tenant}/smtp-admin", secret={"value": "changed-Later-2"}
    )
    verify = kt.cli("verify", f"{tenant}/smtp-admin", "--json")
    assert json.loads(verify.out)[0]["status"] == "store-drift"  # no target: the store still


def test_import_from_conjur(kt: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.stores.conjur_double import ConjurDouble

    with ConjurDouble() as conjur:
        monkeypatch.setenv("CONJUR_KEY", conjur.add_host("host/keyturn"))
        conjur.declare("prod/db/password", "prod/api/key", "other/x")
        conjur.set("prod/db/password", "conjur-Db-1")
        conjur.set("prod/api/key", "conjur-Api-2")
        args = [
            "--from", "conjur", "--set", f"url={conjur.url}", "--set", "account=myorg",
            "--set", "login=host/keyturn", "--set", "api_key=env:CONJUR_KEY",
            "--prefix", "prod/", "--tenant", "prod", "--kind", "password",
        ]  # fmt: skip
        first = kt.cli("import", *args, "--json")
        assert first.code == 0, first.err
        assert sorted(p["credential_id"] for p in json.loads(first.out)) == [
            "prod/api/key",
            "prod/db/password",
        ]
        assert values_of(kt, ["prod/db/password"]) == {"prod/db/password": "conjur-Db-1"}
        second = kt.cli("import", *args)
        assert "2 secret(s): 2 unchanged" in second.out
        assert "conjur-Db-1" not in first.out + second.out + written(kt.home)
