"""In a dotenv store several tenants share, a credential's variable is its id upper-cased
with `_` for anything else, so tenant acme's `acme/x-db` and tenant acme-x's `acme-x/db` are
both ACME_X_DB: a publish of acme's replaced acme-x's lines, the value acme-x's application
reads. A credential whose lines another tenant's credential on the store writes is refused."""

from __future__ import annotations

from tests.api.conftest import Api

STORE = """
[stores.shared-env]
type = "dotenv"
path = "shared.env"
tenants = ["acme", "acme-x", "globex"]

[[credentials]]
id = "acme-x/db"
tenant = "acme-x"
kind = "api-key"
stores = ["shared-env"]
initial_secret = "env:XDB"
"""


def _declare(api: Api, cred_id: str) -> int:
    api.token("acme-admin", "admin", tenant="acme")
    body = {"id": cred_id, "kind": "api-key", "stores": ["shared-env"]}
    return api.call("acme-admin", "POST", "/credentials", json=body).status_code


def test_another_tenants_dotenv_variable_cannot_be_claimed(api: Api) -> None:
    api.kt.write("shared.toml", STORE)
    assert api.kt.cli("apply", "shared.toml", env={"XDB": "acme-x-Value-123"}).code == 0
    for cred_id in ("acme/x-db", "acme/x.db", "acme/x-db-version", "acme/x-db-previous"):
        assert _declare(api, cred_id) == 400, cred_id
    assert _declare(api, "acme/db") == 201  # ACME_DB: nobody else's


def test_the_cli_is_refused_too(api: Api) -> None:
    api.kt.write("shared.toml", STORE)
    both = STORE + (
        '\n[[credentials]]\nid = "acme/x-db"\ntenant = "acme"\nkind = "api-key"\n'
        'stores = ["shared-env"]\n'
    )
    api.kt.write("both.toml", both)
    refused = api.kt.cli("apply", "both.toml", env={"XDB": "acme-x-Value-123"})
    assert refused.code != 0 and "ACME_X_DB" in refused.out + refused.err
