"""Tenant boundaries on shared targets, on real servers (passwd-file, PostgreSQL with
scram-sha-256, Redis ACL users): a tenant-scoped admin cannot claim an account another
tenant's credential holds, nor one outside its grant, nor use a target not granted to it,
through the API, `keyturn apply --tenant` or an applied file; and to it every such refusal
looks like a target or account that is not there.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from keyturn import auth
from keyturn.api import create_app
from keyturn.db.models import Account, Credential
from keyturn.domain.model import Secret
from keyturn.targets.base import Account as Login
from keyturn.targets.base import TargetContext
from keyturn.targets.passwd_file import PasswdFileTarget
from tests.support.keyturn import Harness
from tests.targets.conftest import (  # noqa: F401  (fixtures)
    PgSandbox,
    RedisSandbox,
    new_password,
    pg,
    pg_server,
    redis_box,
    redis_server,
)
from tests.targets.engine_support import PgRig, RedisRig


@dataclass
class Shared:
    """One real server, shared by two tenants: each owns accounts under its own prefix."""

    kind: str
    settings: dict[str, Any]
    prefix: Callable[[str], str]  # tenant -> what its account names start with
    accepts: Callable[[str, str], bool]

    def account(self, tenant: str, name: str) -> str:
        return self.prefix(tenant) + name

    def glob(self, tenant: str) -> str:
        return self.prefix(tenant) + "*"


@pytest.fixture(params=["passwd-file", "postgres", "redis"])
def shared(
    request: pytest.FixtureRequest, kt: Harness, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Shared]:
    if request.param == "passwd-file":
        target = PasswdFileTarget.from_settings(
            {"path": "mail.passwd"},
            TargetContext(resolve=lambda ref: Secret(""), base_dir=str(kt.home)),
        )
        yield MailShared(
            "passwd-file",
            {"path": "mail.passwd"},
            lambda t: "",
            lambda user, value: target.test(Login(user), Secret(value)),
        )
    elif request.param == "postgres":
        box: PgSandbox = request.getfixturevalue("pg")
        rig = PgRig(kt, "single", ["x"], box=box)
        monkeypatch.setenv("KTE_ADMIN_PW", box.server.password)  # for the API, in process
        yield Shared("postgres", rig.target_settings(), lambda t: f"{box.prefix}{t}_", rig.accepts)
    else:
        rbox: RedisSandbox = request.getfixturevalue("redis_box")
        rrig = RedisRig(kt, "single", ["x"], box=rbox)
        monkeypatch.setenv("KTE_ADMIN_PW", rbox.server.password)
        yield Shared("redis", rrig.target_settings(), lambda t: f"{rbox.prefix}{t}_", rrig.accepts)


class MailShared(Shared):
    """Accounts are e-mail addresses: the tenant is the domain."""

    def account(self, tenant: str, name: str) -> str:
        return f"{name}@{tenant}.example"

    def glob(self, tenant: str) -> str:
        return f"*@{tenant}.example"


def _toml(value: Any) -> str:
    return json.dumps(value)


def _target(name: str, shared: Shared, tenants: str) -> str:
    settings = "\n".join(f"{k} = {_toml(v)}" for k, v in shared.settings.items())
    return f'[targets.{name}]\ntype = "{shared.kind}"\n{settings}\n{tenants}\n'


def _credential(cred: str, tenant: str, target: str, user: str, env: str) -> str:
    return (
        f'[[credentials]]\nid = "{cred}"\ntenant = "{tenant}"\nkind = "generic"\n'
        f'target = "{target}"\nusername = "{user}"\ninitial_secret = "env:{env}"\n'
    )


def _setup(kt: Harness, shared: Shared) -> str:
    """The operator's file: a shared target (each tenant its own accounts), one granted to
    globex alone, and globex's admin on the shared one. Returns globex's password."""
    grants = (
        f"[targets.shared.tenants]\nacme = [{_toml(shared.glob('acme'))}]\n"
        f"globex = [{_toml(shared.glob('globex'))}]\n"
    )
    globex_user = shared.account("globex", "admin")
    kt.write(
        "keyturn.toml",
        _target("shared", shared, "")
        + grants
        + _target("globex-only", shared, 'tenants = ["globex"]')
        + _credential("globex/admin", "globex", "shared", globex_user, "GLOBEX_PW"),
    )
    password = new_password()
    result = kt.cli("apply", "keyturn.toml", env={"GLOBEX_PW": password, **kt.env})
    assert result.code == 0, result.err
    assert shared.accepts(globex_user, password)
    return password


def _token(kt: Harness, tenant: str | None) -> str:
    with kt.app.db.write() as session:
        return auth.create_token(session, "admin", tenant=tenant).token


def _refusal(response: Any) -> tuple[int, str, str]:
    body = response.json()["error"]
    return response.status_code, body["code"], body["message"]


def test_a_tenant_cannot_reach_another_tenants_accounts(kt: Harness, shared: Shared) -> None:
    globex_pw = _setup(kt, shared)
    g_admin, g_other = shared.account("globex", "admin"), shared.account("globex", "other")
    acme_user = shared.account("acme", "app")
    client = TestClient(create_app(kt.app), raise_server_exceptions=False)
    acme = {"Authorization": f"Bearer {_token(kt, 'acme')}"}
    root = {"Authorization": f"Bearer {_token(kt, None)}"}

    def post(headers: dict[str, str], cred: str, target: str, user: str) -> Any:
        body = {
            "id": cred,
            "target": target,
            "username": user,
            "initial_secret": {"value": "v-" + secrets.token_hex(8)},
        }
        return client.post("/api/v1/credentials", json=body, headers=headers)

    # The account globex holds, and one in globex's namespace nobody holds, answer alike.
    held = _refusal(post(acme, "acme/hijack", "shared", g_admin))
    free = _refusal(post(acme, "acme/hijack", "shared", g_other))
    assert held[:2] == free[:2] == (404, "target_not_found")
    assert held[2].replace(g_admin, "U") == free[2].replace(g_other, "U")
    # A target granted to globex only answers like a target that does not exist.
    granted = _refusal(post(acme, "acme/y", "globex-only", acme_user))
    missing = _refusal(post(acme, "acme/y", "nowhere", acme_user))
    assert granted[:2] == missing[:2] == (404, "target_not_found")
    assert granted[2].replace("globex-only", "T") == missing[2].replace("nowhere", "T")
    # Nor can the global admin give a second credential the account.
    # (Account names compare case-folded: ADMIN is admin.)
    taken = post(root, "globex/second", "shared", g_admin.upper())
    assert _refusal(taken)[:2] == (409, "account_taken") and "globex/admin" in taken.text

    # In its own namespace acme creates, rotates and reads as usual.
    made = post(acme, "acme/app", "shared", acme_user)
    assert made.status_code == 201, made.text
    rotated = client.post("/api/v1/credentials/acme/app/rotate", json={"reason": "t"}, headers=acme)
    assert rotated.status_code == 200 and rotated.json()["status"] == "done", rotated.text
    value = client.get("/api/v1/credentials/acme/app/secret", headers=acme).json()["value"]
    assert shared.accepts(acme_user, value)
    moved = client.put(
        "/api/v1/credentials/acme/app",
        json={"tenant": "acme", "target": "shared", "username": g_admin},
        headers=acme,
    )
    assert _refusal(moved)[:2] == (404, "target_not_found")
    for path in ("/api/v1/credentials/globex/admin/secret", "/api/v1/credentials/globex/admin"):
        assert client.get(path, headers=acme).status_code == 404
    assert (
        client.post(
            "/api/v1/credentials/globex/admin/rotate", json={"reason": "x"}, headers=acme
        ).status_code
        == 404
    )

    # The CLI on acme's behalf, and an operator's file, are held to the same rules.
    kt.write("acme.toml", _credential("acme/cli", "acme", "shared", g_admin, "X_PW"))
    scoped = kt.cli(
        "apply", "--tenant", "acme", "--env", "X_PW", "acme.toml", env={"X_PW": "v-123456789"}
    )
    assert scoped.code == 1 and "has no account" in scoped.err
    kt.write("ops.toml", _credential("acme/ops", "acme", "shared", g_admin, "X_PW"))
    unscoped = kt.cli("apply", "ops.toml", env={"X_PW": "v-123456789"})
    assert unscoped.code == 1 and "outside what the target grants tenant 'acme'" in unscoped.err
    kt.write("dup.toml", _credential("globex/dup", "globex", "shared", g_admin, "X_PW"))
    dup = kt.cli("apply", "dup.toml", env={"X_PW": "v-123456789"})
    assert dup.code == 1 and "belongs to globex/admin" in dup.err

    # globex's account never changed, and nothing else was written.
    assert shared.accepts(g_admin, globex_pw)
    assert kt.cli("verify", "globex/admin").code == 0
    with kt.app.db.read() as session:
        assert {c.id for c in session.query(Credential)} == {"globex/admin", "acme/app"}
        owners = {(a.username, a.credential_id) for a in session.query(Account)}
    assert owners == {(g_admin, "globex/admin"), (acme_user, "acme/app")}


def test_a_tenant_cannot_publish_to_another_tenants_store(kt: Harness) -> None:
    """A store holds the credentials of the tenants it grants: to another tenant's admin it
    is not there (the same refusal as a store that does not exist), so it can neither write
    a path globex's application reads nor learn globex's store names; an unscoped admin is
    told which grant is missing; a grant cannot be narrowed under a credential using it."""
    kt.write(
        "keyturn.toml",
        '[targets.acme-box]\ntype = "passwd-file"\npath = "acme.passwd"\ntenants = ["acme"]\n'
        '[stores.globex-files]\ntype = "file"\ndirectory = "globex-secrets"\nfile = "{name}"\n'
        'tenants = ["globex"]\n'
        '[stores.ops-files]\ntype = "file"\ndirectory = "ops-secrets"\n',
    )
    assert kt.cli("apply", "keyturn.toml").code == 0
    client = TestClient(create_app(kt.app), raise_server_exceptions=False)
    acme = {"Authorization": f"Bearer {_token(kt, 'acme')}"}

    def post(cred: str, stores: list[str]) -> Any:
        body = {
            "id": cred,
            "target": "acme-box",
            "username": cred.split("/")[1],
            "stores": stores,
            "initial_secret": {"value": "v-" + secrets.token_hex(8)},
        }
        return client.post("/api/v1/credentials", json=body, headers=acme)

    granted_to_globex = _refusal(post("acme/fresh", ["globex-files"]))
    undeclared = _refusal(post("acme/fresh", ["ops-files"]))
    missing = _refusal(post("acme/fresh", ["nowhere"]))
    assert granted_to_globex[:2] == undeclared[:2] == missing[:2] == (400, "config_invalid")
    for refusal, name in ((granted_to_globex, "globex-files"), (undeclared, "ops-files")):
        assert refusal[2].replace(name, "S") == missing[2].replace("nowhere", "S")
    assert not (kt.home / "globex-secrets").exists()
    with kt.app.db.read() as session:
        assert session.get(Credential, "acme/fresh") is None
    # Nor through `keyturn apply --tenant acme`.
    kt.write(
        "acme.toml",
        '[[credentials]]\nid = "acme/cli"\ntenant = "acme"\ntarget = "acme-box"\n'
        'username = "cli"\nstores = ["globex-files"]\n',
    )
    scoped = kt.cli("apply", "--tenant", "acme", "acme.toml")
    assert scoped.code == 1 and "no store 'globex-files'" in scoped.err, scoped.err
    # The unscoped admin is told plainly, and may use an undeclared store.
    unscoped = kt.cli("apply", "acme.toml")
    assert unscoped.code == 1, unscoped.err
    assert "store 'globex-files' is not granted to tenant 'acme'" in unscoped.err
    kt.write("acme.toml", (kt.home / "acme.toml").read_text().replace("globex-files", "ops-files"))
    assert kt.cli("apply", "acme.toml").code == 0
    # Granting ops-files to globex alone would leave acme/cli out: refused.
    narrowed = (
        (kt.home / "keyturn.toml")
        .read_text()
        .replace('directory = "ops-secrets"\n', 'directory = "ops-secrets"\ntenants = ["globex"]\n')
    )
    kt.write("keyturn.toml", narrowed)
    refused = kt.cli("apply", "keyturn.toml")
    assert refused.code == 1 and "store 'ops-files': its tenants no longer cover" in refused.err
