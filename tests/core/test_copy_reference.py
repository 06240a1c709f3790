"""A `keyturn:SOURCE` first value in `keyturn apply` is a read of SOURCE (security.md: every
secret read is an audit entry), and a held-back SOURCE, whose value `keyturn get` withholds,
is not copied into a credential `keyturn get` would hand out."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import update

from keyturn.db.models import Credential
from tests.support.keyturn import Harness

SOURCE = "acme/source"
VALUE = "source-Value-Held-0042"
COPY = (
    '[[credentials]]\nid = "acme/copy"\nkind = "api-key"\ninitial_secret = "keyturn:acme/source"\n'
)


@pytest.fixture
def source(kt: Harness) -> Harness:
    kt.write(
        "source.toml",
        f'[[credentials]]\nid = "{SOURCE}"\nkind = "api-key"\ninitial_secret = "env:SRC"\n',
    )
    assert kt.cli("apply", "source.toml", env={"SRC": VALUE}).code == 0
    kt.write("copy.toml", COPY)
    return kt


@pytest.mark.parametrize("scope", [(), ("--tenant", "acme")])
def test_a_held_back_value_is_not_copied_by_apply(source: Harness, scope: tuple[str, ...]) -> None:
    kt = source
    with kt.app.db.write() as session:
        session.execute(update(Credential).where(Credential.id == SOURCE).values(dispute="x"))
    assert kt.cli("get", SOURCE).code != 0
    copied = kt.cli("apply", *scope, "copy.toml")
    assert copied.code != 0 and "held back" in copied.err, copied
    assert VALUE not in copied.out + copied.err
    read = kt.cli("get", "acme/copy")
    assert read.code != 0 and VALUE not in read.out


def test_a_copy_is_recorded_as_a_read_of_its_source(source: Harness) -> None:
    kt = source
    assert kt.cli("apply", "copy.toml").code == 0
    assert kt.cli("get", "acme/copy").out.strip() == VALUE
    listed = kt.cli("audit", "list", "--credential", SOURCE, "--action", "secret.read", "--json")
    (entry,) = json.loads(listed.out)
    assert entry["details"]["copied_to"] == "acme/copy" and entry["fingerprint"]


@pytest.mark.parametrize(
    "ref",
    ["env:KEYTURN_MASTER_KEY", "env:HOME", "file:/etc/passwd", "file:../outside"],
)
def test_a_tenants_file_reads_neither_keyturns_settings_nor_files_elsewhere(
    kt: Harness, ref: str
) -> None:
    """`apply --tenant` is to follow the rules of the tenant's token, which cannot use env:
    or file: at all; it read any variable and any file, so a tenant's file copied the master
    key (or /etc/shadow) into a credential the tenant's token then reads."""
    (kt.home / "outside").write_text("not-the-tenants-0099")
    folder = kt.home / "acme"
    folder.mkdir()
    (folder / "inv.toml").write_text(
        f'[[credentials]]\nid = "acme/stolen"\nkind = "api-key"\ninitial_secret = "{ref}"\n'
    )
    result = kt.cli("apply", "--tenant", "acme", str(folder / "inv.toml"))
    assert result.code != 0 and "an apply for tenant 'acme'" in result.err, result
    assert kt.cli("get", "acme/stolen").code != 0


def test_a_tenants_file_still_reads_its_own_files_and_variables(kt: Harness) -> None:
    folder = kt.home / "acme"
    folder.mkdir()
    (folder / "pw").write_text("acme-Own-File-0077\n")
    (folder / "inv.toml").write_text(
        '[[credentials]]\nid = "acme/a"\nkind = "api-key"\ninitial_secret = "file:pw"\n'
        '[[credentials]]\nid = "acme/b"\nkind = "api-key"\ninitial_secret = "env:ACME_B"\n'
    )
    inv = str(folder / "inv.toml")
    unnamed = kt.cli("apply", "--tenant", "acme", inv, env={"ACME_B": "b-1"})
    assert unnamed.code == 1 and "add `--env ACME_B`" in unnamed.err, unnamed
    result = kt.cli("apply", "--tenant", "acme", "--env", "ACME_B", inv, env={"ACME_B": "b-1"})
    assert result.code == 0, result.err
    assert kt.cli("get", "acme/a").out.strip() == "acme-Own-File-0077"
    assert kt.cli("get", "acme/b").out.strip() == "b-1"
