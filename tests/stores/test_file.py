"""The file store (a Kubernetes secret volume's layout) and the dotenv store it shares its
writing code with: rotations end to end, atomic 0600 files, drift kept."""

from __future__ import annotations

import json
import os
import stat

import pytest

from tests.stores.conftest import INITIAL, Rig
from tests.support.keyturn import Harness


def test_rotations_write_one_file_per_secret_0600(kt: Harness) -> None:
    rig = Rig(kt, 'type = "file"\ndirectory = "secrets"')
    seen = []
    for _ in range(2):
        assert rig.rotate()["status"] == "done"
        number, value, _ = rig.current()
        path = kt.home / "secrets" / rig.tenant / "smtp-admin"
        assert path.read_text() == value
        assert (path.parent / "smtp-admin.version").read_text() == str(number)
        for file in path.parent.iterdir():
            assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
        if seen:
            assert (path.parent / "smtp-admin.previous").read_text() == seen[-1]
        seen.append(value)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".keyturn-")]
    assert kt.cli("verify", rig.id).code == 0


def test_the_folders_keyturn_makes_are_0700_whatever_the_umask(kt: Harness) -> None:
    """Only the file's own folder was 0700: the store's directory and every folder above it
    were made 0777 less the umask, so under umask 000 any local user could rename a
    tenant's folder away and put one of their own (or a symlink) in its place."""
    rig = Rig(kt, 'type = "file"\ndirectory = "run/secrets"\nfile = "{tenant}/x/{name}"')
    saved = os.umask(0)
    try:
        assert rig.rotate()["status"] == "done"
    finally:
        os.umask(saved)
    folder = kt.home / "run"
    for part in ("secrets", rig.tenant, "x"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
        folder = folder / part
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


def test_a_file_edited_by_hand_is_drift_and_kept(kt: Harness) -> None:
    rig = Rig(kt, 'type = "file"\ndirectory = "secrets"\nfile = "{tenant}-{name}"')
    assert rig.rotate()["status"] == "done"
    path = kt.home / "secrets" / f"{rig.tenant}-smtp-admin"
    path.write_text("edited-by-hand")
    verify = kt.cli("verify", rig.id, "--json")
    assert json.loads(verify.out)[0]["status"] == "store-drift"
    out = rig.rotate()
    assert (out["status"], out["step"]) == ("retrying", "publish")
    assert path.read_text() == "edited-by-hand"
    assert kt.cli("verify", rig.id, "--repair").code == 0
    assert path.read_text() == rig.current()[1]
    resumed = json.loads(kt.cli("resume", rig.id, "--now", "--json").out)[0]
    assert resumed["status"] == "done"
    assert path.read_text() == rig.current()[1]


def test_a_template_cannot_leave_the_directory(kt: Harness) -> None:
    rig = Rig(kt, 'type = "file"\ndirectory = "secrets"\nfile = "../{name}"')
    out = rig.rotate()
    assert out["status"] == "retrying" and "leaves the directory" in out["error"]
    assert not (kt.home / "smtp-admin").exists()


def test_dotenv_keeps_other_lines_and_adds_the_previous(kt: Harness) -> None:
    rig = Rig(kt, 'type = "dotenv"\npath = "app.env"')
    var = rig.id.upper().replace("/", "_").replace("-", "_")
    others = '# app settings\nOTHER=kept\nSPACED="a b"\n\nexport FOO=bar\n'
    assert not (kt.home / "app.env").exists()  # nothing published before the first rotation
    (kt.home / "app.env").write_text(f"{others}export {var}=set-by-hand\n")
    rig.rotate()
    rig.rotate()
    text = (kt.home / "app.env").read_text()
    versions = rig.versions()
    # Every other line exactly as it was (comment, quoting, blank, export): `source app.env`
    # and docker compose read them as before.
    assert text.startswith(others), text
    assert f"export {var}={versions['current'][1]}\n" in text
    assert text.count(f"{var}=") == 1
    assert f"{var}_VERSION=3" in text
    assert stat.S_IMODE((kt.home / "app.env").stat().st_mode) == 0o600
    assert kt.cli("verify", rig.id).code == 0


def test_the_api_shows_store_drift(kt: Harness) -> None:
    from fastapi.testclient import TestClient

    from keyturn import auth
    from keyturn.api import create_app

    rig = Rig(kt, 'type = "file"\ndirectory = "secrets"')
    assert rig.rotate()["status"] == "done"
    (kt.home / "secrets" / rig.tenant / "smtp-admin").write_text("edited")
    with kt.app.db.write() as session:
        token = auth.create_token(session, "operator", None, None, name="t").token
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(kt.app)) as client:
        verify = client.post(f"/api/v1/credentials/{rig.id}/verify", headers=headers).json()
        assert verify["status"] == "store-drift"
        assert verify["stores"][0]["store"] == "main"
        assert verify["stores"][0]["status"] == "drift"
        one = client.get(f"/api/v1/credentials/{rig.id}", headers=headers).json()
        assert one["sync"] == "store-drift"
        assert one["store_sync"][0]["status"] == "drift"
        listed = client.get("/api/v1/credentials", headers=headers).json()["credentials"]
        assert [c["sync"] for c in listed if c["id"] == rig.id] == ["store-drift"]
    assert "store-drift" in kt.cli("list").out


def test_a_store_declared_later_is_unpublished_until_repair(kt: Harness) -> None:
    rig = Rig(kt, 'type = "file"\ndirectory = "secrets"')
    result = kt.cli("verify", rig.id, "--json")
    assert result.code == 0, result.out
    assert json.loads(result.out)[0]["stores"][0]["status"] == "unpublished"
    assert kt.cli("verify", rig.id, "--repair").code == 0
    assert (kt.home / "secrets" / rig.tenant / "smtp-admin").read_text() == rig.current()[1]
    assert rig.show()["store_sync"][0]["status"] == "in-sync"


@pytest.mark.state_db
def test_an_abort_after_a_store_took_the_new_value_puts_the_current_back(kt: Harness) -> None:
    rig = Rig(kt, 'type = "file"\ndirectory = "secrets"')
    path = kt.home / "secrets" / rig.tenant / "smtp-admin"
    env = {"KEYTURN_WORKER_ID": "w1"}
    crashed = kt.spawn(
        "rotate", rig.id, "--reason", "r", env={**env, "KEYTURN_TEST_CRASH_AT": "publish:stored"}
    )
    assert crashed.code == -9, crashed.err
    assert path.read_text() == rig.versions()["pending"][1]
    aborted = kt.cli("abort", rig.id, "--reason", "changed my mind", env=env)
    assert aborted.code == 0, aborted.err
    assert path.read_text() == INITIAL and (path.parent / "smtp-admin.version").read_text() == "1"
    assert rig.accepts(INITIAL)
    assert kt.cli("verify", rig.id).code == 0


def test_a_credential_whose_file_ends_like_a_sidecar_is_refused(kt: Harness) -> None:
    """`acme/db.version` would be `acme/db`'s version file: a publish of one overwrote the
    other's value. apply refuses it, and so does the store itself (an older database)."""
    kt.write(
        "inv.toml",
        '[stores.files]\ntype = "file"\ndirectory = "secrets"\n'
        + "".join(
            f'[[credentials]]\nid = "{i}"\nstores = ["files"]\ninitial_secret = "env:V"\n'
            for i in ("acme/db", "acme/db.version")
        ),
    )
    result = kt.cli("apply", "inv.toml", env={"V": "some-value-4242"})
    assert result.code == 1 and "acme/db.version: its file in store 'files'" in result.err
    from keyturn.domain.model import Secret
    from keyturn.stores.base import StoreConflict, StoreContext
    from keyturn.stores.file import FileStore

    context = StoreContext(resolve=lambda _: Secret(""), base_dir=str(kt.home))
    store = FileStore.from_settings({"directory": "secrets"}, context)
    with pytest.raises(StoreConflict, match=r"would end in \.previous or \.version"):
        store.path("acme/db.previous", "acme")
    assert store.path("acme/db", "acme") == (kt.home / "secrets" / "acme" / "db").resolve()
