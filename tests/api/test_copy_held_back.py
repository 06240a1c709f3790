"""A held-back credential's value is not handed out (security.md, "Databases from before
schema 0004"): not by GET .../secret, and not by copying it into a new credential with a
`keyturn:` reference and reading the copy."""

from __future__ import annotations

from sqlalchemy import update

from keyturn.db.models import Credential
from tests.api.conftest import OTHER, OTHER_PW, Api


def test_a_held_back_value_cannot_be_copied_over_the_api(api: Api) -> None:
    with api.kt.app.db.write() as session:
        session.execute(update(Credential).where(Credential.id == OTHER).values(dispute="x"))
    assert api.call("admin", "GET", f"/credentials/{OTHER}/secret").status_code == 409
    body = {"id": "acme/copy", "kind": "api-key", "initial_secret": f"keyturn:{OTHER}"}
    copied = api.call("admin", "POST", "/credentials", json=body)
    assert copied.status_code == 409, copied.text
    assert copied.json()["error"]["code"] == "conflict" and OTHER_PW not in copied.text
    read = api.call("admin", "GET", "/credentials/acme/copy/secret")
    assert read.status_code == 404 and OTHER_PW not in read.text


def test_a_value_that_is_not_held_back_is_still_copied(api: Api) -> None:
    body = {"id": "acme/copy", "kind": "api-key", "initial_secret": f"keyturn:{OTHER}"}
    assert api.call("admin", "POST", "/credentials", json=body).status_code == 201
    read = api.call("admin", "GET", "/credentials/acme/copy/secret")
    assert read.status_code == 200 and read.json()["value"] == OTHER_PW
