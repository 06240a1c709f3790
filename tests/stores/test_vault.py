"""The vault store against a real OpenBao (`bao server -dev` on loopback, KV v2 at secret/).

OpenBao speaks HashiCorp Vault's API; the shared server comes from scripts/services.d/
openbao.sh, and the test that stops OpenBao mid-publish runs a private one.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest

from tests.stores.bao import PrivateBao, client
from tests.stores.conftest import INITIAL, Rig, need, written
from tests.support.keyturn import Harness


def vault_toml(addr: str | None = None, token_env: str = "BAO_TOKEN", **extra: Any) -> str:  # noqa: S107
    lines = [
        'type = "vault"',
        f'url = "{addr or need("KEYTURN_TEST_BAO_ADDR")}"',
        f'token = "env:{token_env}"',
        'path = "secret/{tenant}/{name}"',
    ]
    lines += [f"{key} = {json.dumps(value)}" for key, value in extra.items()]
    return "\n".join(lines)


@pytest.fixture
def rig(kt: Harness, monkeypatch: pytest.MonkeyPatch) -> Rig:
    monkeypatch.setenv("BAO_TOKEN", need("KEYTURN_TEST_BAO_TOKEN"))
    return Rig(kt, vault_toml(max_versions=5))


def notices(kt: Harness) -> list[str]:
    from keyturn.db.models import Notice

    with kt.app.db.read() as session:
        return [n.kind for n in session.query(Notice).all()]


def kv(rig: Rig, bao: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(data, metadata) of the rig's secret."""
    bao = bao or client()
    path = f"{rig.tenant}/smtp-admin"
    data = bao.secrets.kv.v2.read_secret_version(path=path, raise_on_deleted_version=True)
    meta = bao.secrets.kv.v2.read_secret_metadata(path=path)
    return data["data"]["data"], meta["data"]


def test_three_rotations_publish_value_and_metadata(rig: Rig) -> None:
    seen = []
    for round_ in range(1, 4):
        assert rig.rotate()["status"] == "done"
        number, value, fingerprint = rig.current()
        data, meta = kv(rig)
        assert data["value"] == value
        custom = meta["custom_metadata"]
        assert custom["keyturn_version"] == str(number)
        assert custom["keyturn_state"] == "current"
        assert custom["keyturn_fingerprint"] == fingerprint
        assert custom["keyturn_credential"] == rig.id
        assert value not in json.dumps(custom)
        assert meta["current_version"] == round_  # one KV version per rotation, no more
        assert meta["max_versions"] == 5
        if seen:
            assert data["previous"] == seen[-1]
        seen.append(value)
    show = rig.show()
    assert show["store_sync"] == [
        {
            "store": "main",
            "version": 4,
            "status": "in-sync",
            "detail": None,
            "checked_at": show["store_sync"][0]["checked_at"],
        }
    ]
    assert all(v not in written(rig.kt.home) for v in seen)


@pytest.mark.state_db
def test_a_write_behind_keyturns_back_is_a_conflict_not_overwritten(rig: Rig) -> None:
    assert rig.rotate()["status"] == "done"
    bao = client()
    path = f"{rig.tenant}/smtp-admin"
    bao.secrets.kv.v2.create_or_update_secret(path=path, secret={"value": "someone-else-1"})
    verify = rig.kt.cli("verify", rig.id, "--json")
    assert verify.code == 1
    (found,) = json.loads(verify.out)
    assert found["status"] == "store-drift"
    assert "main: drift" in found["detail"]
    assert rig.show()["sync"] == "store-drift"

    out = rig.rotate()
    assert (out["status"], out["step"]) == ("retrying", "publish")
    assert "someone else wrote it" in out["error"]
    assert kv(rig)[0]["value"] == "someone-else-1"  # not overwritten
    assert rig.show()["store_sync"][0]["status"] == "drift"
    # The operator looked, and lets keyturn put its current value back; the rotation goes on.
    repaired = rig.kt.cli("verify", rig.id, "--repair", "--json")
    assert repaired.code == 0, repaired.out + repaired.err
    done = json.loads(rig.kt.cli("resume", rig.id, "--now", "--json").out)[0]
    assert done["status"] == "done", done
    assert kv(rig)[0]["value"] == rig.current()[1]
    assert rig.kt.cli("verify", rig.id).code == 0
    assert "someone-else-1" not in written(rig.kt.home)


def test_approle_login_by_reference(kt: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    bao = client()
    role = "kt-" + secrets.token_hex(4)
    tenant_glob = "t*"
    policy = f'path "secret/data/{tenant_glob}" {{ capabilities = ["create","read","update"] }}\n'
    policy += (
        f'path "secret/metadata/{tenant_glob}" {{ capabilities = ["create","read","update"] }}'
    )
    bao.sys.create_or_update_policy(name=role, policy=policy)
    bao.auth.approle.create_or_update_approle(role_name=role, token_policies=[role])
    role_id = bao.auth.approle.read_role_id(role_name=role)["data"]["role_id"]
    secret_id = bao.auth.approle.generate_secret_id(role_name=role)["data"]["secret_id"]
    monkeypatch.setenv("BAO_SECRET_ID", secret_id)
    toml = "\n".join(
        [
            'type = "vault"',
            f'url = "{need("KEYTURN_TEST_BAO_ADDR")}"',
            f'role_id = "{role_id}"',
            'secret_id = "env:BAO_SECRET_ID"',
        ]
    )
    rig = Rig(kt, toml)
    assert rig.rotate()["status"] == "done"
    assert kv(rig)[0]["value"] == rig.current()[1]
    assert secret_id not in written(kt.home)


def test_a_literal_token_is_refused(kt: Harness) -> None:
    kt.write(
        "bad.toml",
        '[stores.v]\ntype = "vault"\nurl = "http://127.0.0.1:1"\ntoken = "hvs.literal-token-1"\n',
    )
    result = kt.cli("apply", "bad.toml")
    assert result.code != 0
    assert result.err.startswith("error:") and "env:" in result.err
    assert "hvs.literal-token-1" not in result.err


@pytest.mark.state_db
def test_openbao_down_during_publish_waits_then_finishes(
    kt: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OpenBao stops while the rotation is at publish: it waits (retrying, the old value still
    accepted by the dual target), and finishes once OpenBao is back."""
    bao = PrivateBao(tmp_path / "bao.log")
    bao.start()
    try:
        monkeypatch.setenv("BAO_TOKEN", bao.token)
        rig = Rig(kt, vault_toml(bao.addr, timeout=2))
        pause = tmp_path / "pause"
        pause.mkdir()
        env = {"BAO_TOKEN": bao.token, "KEYTURN_WORKER_ID": "w1"}
        with kt.held(
            "publish:before", pause, "rotate", rig.id, "--reason", "r", "--json", env=env
        ) as proc:
            bao.stop()
        out, err = proc.communicate(timeout=120)
        assert rig.versions()["pending"][1] not in out + err
        first = json.loads(out)[0]
        assert (first["status"], first["step"]) == ("retrying", "publish"), err
        assert "cannot" in first["error"]
        # Several failed attempts: still waiting, never given up; the alert comes at the 3rd.
        assert "rotation-failed" not in notices(kt)
        for _ in range(3):
            again = json.loads(kt.cli("resume", rig.id, "--now", "--json", env=env).out)[0]
            assert again["status"] == "retrying"
        assert notices(kt).count("rotation-failed") == 2  # attempts 3 and 4
        assert rig.versions()["pending"][0] == 2
        # Consumers still read the old value from OpenBao, and the target still accepts it.
        assert rig.accepts(INITIAL) and rig.accepts(rig.versions()["pending"][1])
        bao.start()
        done = json.loads(kt.cli("resume", rig.id, "--now", "--json", env=env).out)[0]
        assert done["status"] == "done", done
        data, meta = kv(rig, client(bao.addr, bao.token))
        assert data["value"] == rig.current()[1]
        assert meta["custom_metadata"]["keyturn_version"] == "2"
    finally:
        bao.stop()


@pytest.mark.slow
@pytest.mark.state_db
@pytest.mark.parametrize("point", ["publish:before", "publish:stored", "publish:effect"])
def test_sigkill_at_publish_then_resume(
    kt: Harness, point: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BAO_TOKEN", need("KEYTURN_TEST_BAO_TOKEN"))
    rig = Rig(kt, vault_toml())
    env = {"KEYTURN_WORKER_ID": "w1", "BAO_TOKEN": need("KEYTURN_TEST_BAO_TOKEN")}
    crashed = kt.spawn(
        "rotate", rig.id, "--reason", "crash", env={**env, "KEYTURN_TEST_CRASH_AT": point}
    )
    assert crashed.code == -9, crashed.err
    resumed = kt.cli("resume", "--now", "--json", env=env)
    assert json.loads(resumed.out)[0]["status"] == "done", resumed.out + resumed.err
    number, value, _ = rig.current()
    data, meta = kv(rig)
    assert (data["value"], meta["custom_metadata"]["keyturn_version"]) == (value, str(number))
    assert meta["current_version"] == 1  # the replay wrote nothing more
    assert rig.kt.cli("verify", rig.id).code == 0
    assert value not in crashed.out + crashed.err + resumed.out + resumed.err
    assert value not in written(kt.home)


def test_tls_with_a_ca_bundle(kt: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A private `bao server -dev-tls` (its own CA): the store trusts it through ca_bundle,
    and without it refuses the certificate (a clear error, the rotation waits)."""
    tls = tmp_path / "tls"
    tls.mkdir()
    bao = PrivateBao(tmp_path / "bao-tls.log", tls_dir=tls)
    bao.start()
    try:
        monkeypatch.setenv("BAO_TOKEN", bao.token)
        rig = Rig(kt, vault_toml(bao.addr, ca_bundle=str(bao.ca)))
        assert rig.rotate()["status"] == "done"
        import hvac

        remote = hvac.Client(url=bao.addr, token=bao.token, verify=str(bao.ca))
        assert kv(rig, remote)[0]["value"] == rig.current()[1]
        kt.write("keyturn.toml", (kt.home / "keyturn.toml").read_text().replace("ca_bundle", "#"))
        assert kt.cli("apply", "keyturn.toml", env={"INITIAL_PW": "unused"}).code == 0
        out = rig.rotate()
        assert (out["status"], out["step"]) == ("retrying", "publish")
        assert "SSLError" in out["error"]
    finally:
        bao.stop()
