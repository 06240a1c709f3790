"""`keyturn apply` of a credential whose account already exists on its target: the account
is left untouched, and apply says so (nothing has proven the stored value works there; it
does not log in to find out: a wrong value would count towards the target's lockout)."""

from __future__ import annotations

import json

from tests.cli.test_remote import INVENTORY  # a passwd-file login, its value in $PW
from tests.support.keyturn import Harness


def test_an_account_that_already_existed_is_named_with_what_checks_it(kt: Harness) -> None:
    kt.write("inv.toml", INVENTORY)
    first = kt.cli("apply", "inv.toml", env={"PW": "the-Right-value-0042"})
    assert first.code == 0 and "provisioned acme/smtp-admin" in first.out, first.err
    assert "already existed" not in first.out
    assert kt.cli("delete", "acme/smtp-admin", "--reason", "re-import").code == 0
    again = kt.cli("apply", "inv.toml", env={"PW": "a-Wrong-value-0043"})
    assert again.code == 0, again.err
    assert "1 account(s) already existed on their target" in again.out
    assert "(acme/smtp-admin): `keyturn verify`" in again.out and "Wrong" not in again.out
    assert json.loads(kt.cli("verify", "acme/smtp-admin", "--json").out)[0]["status"] == (
        "out-of-sync"
    )
    listed = kt.cli("apply", "inv.toml", "--json", env={"PW": "a-Wrong-value-0043"})
    assert json.loads(listed.out)["existing"] == []  # nothing new stored: nothing to say
