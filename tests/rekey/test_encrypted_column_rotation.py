"""An application's encryption key as a keyturn credential: rotate it, crash it, resume it.

The key is a credential of kind `encryption-key` whose target is the application's table;
`keyturn rotate` generates a new key (the target's `generate` hook), re-encrypts every row
(set), checks them (test) and promotes it. SIGKILL inside the batch loop, then `keyturn
resume`, must leave every row under the new current key exactly once.
"""

from __future__ import annotations

import os
import random
import signal

import pytest

from tests.rekey.app_db import AppTable, new_key
from tests.support.keyturn import Harness

ROWS, BATCH = 300, 10
CRED = "app/totp-key"
on_postgres = os.environ.get("KEYTURN_TEST_DB") == "postgres"


def inventory(fmt: str) -> str:
    return f"""
[policies.keys]
max_age = "365d"

[targets.app-db]
type = "encrypted-column"
url = "env:APP_DB_URL"
table = "totp_secrets"
value_column = "secret"
format = "{fmt}"
batch_size = {BATCH}

[[credentials]]
id = "{CRED}"
tenant = "app"
kind = "encryption-key"
owner = "identity-team"
policy = "keys"
target = "app-db"
username = "app"
initial_secret = "env:APP_KEY"
"""


class App:
    def __init__(self, kt: Harness, fmt: str) -> None:
        # On the PostgreSQL pass the application table lives in a PostgreSQL database too.
        url = kt.db_url if on_postgres else f"sqlite:///{kt.home / 'app.db'}"
        self.kt, self.table = kt, AppTable(url, fmt)
        self.initial = new_key(fmt)
        self.plain = self.table.create(self.initial, ROWS)
        kt.env["APP_DB_URL"] = url
        kt.write("keyturn.toml", inventory(fmt))
        applied = kt.cli("apply", "keyturn.toml", env={"APP_KEY": self.initial})
        assert applied.code == 0, applied.err

    def current_key(self) -> str:
        got = self.kt.cli("get", CRED)
        assert got.code == 0, got.err
        return got.out.strip()

    def check_done(self) -> None:
        key = self.current_key()
        assert key != self.initial
        assert self.table.decrypted(key) == self.plain
        shown = self.kt.cli("show", CRED, "--json")
        assert '"status": "done"' in shown.out, shown.out


@pytest.mark.parametrize("fmt", ["fernet", "aes-gcm"])
def test_rotate_reencrypts_the_column(kt: Harness, fmt: str) -> None:
    app = App(kt, fmt)
    result = kt.cli("rotate", CRED, "--reason", "yearly key change")
    assert result.code == 0, result.err
    app.check_done()
    assert all(v is None for v in app.table.decrypted(app.initial).values())
    assert kt.cli("audit", "verify").code == 0


POINTS = random.Random(7).sample(
    [f"encrypted-column:batch:{n}:{w}" for n in range(1, 31) for w in ("commit", "after")], 20
)
if on_postgres:
    POINTS = POINTS[:6]


@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS)
def test_rotation_killed_in_the_batch_loop_then_resumed(kt: Harness, point: str) -> None:
    app = App(kt, "fernet")
    worker = {"KEYTURN_WORKER_ID": "worker-1"}
    crashed = kt.spawn(
        "rotate", CRED, "--reason", "crash test", env={**worker, "KEYTURN_TEST_CRASH_AT": point}
    )
    assert crashed.code == -signal.SIGKILL, (crashed.out, crashed.err)
    resumed = kt.cli("resume", "--now", env=worker)
    assert resumed.code == 0, resumed.err
    app.check_done()
