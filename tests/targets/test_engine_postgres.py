"""PostgreSQL through keyturn: alternating keeps the data, the admin rotates itself, and the
server log (``log_statement = 'all'``) never holds a value keyturn set.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from keyturn.targets.postgres import scram_verifier
from tests.support.keyturn import Harness
from tests.targets.conftest import PgSandbox, new_password
from tests.targets.engine_support import PgRig, make_rig, rotations_keep_the_table


class ServerLog:
    """What the scram cluster logs from now on."""

    def __init__(self, pg: PgSandbox) -> None:
        self.path = Path(pg.server.log)
        self.start = self.path.stat().st_size

    def written(self) -> str:
        with self.path.open("rb") as fh:
            fh.seek(self.start)
            return fh.read().decode(errors="replace")

    def assert_holds_none_of(self, values: list[str]) -> None:
        text = self.written()
        assert "ALTER ROLE" in text  # the server does log keyturn's statements
        leaked = [i for i, value in enumerate(values) if value in text]
        assert not leaked, f"values #{leaked} of {len(values)} are in the server log"


def test_alternating_keeps_the_apps_table_through_three_rotations(
    request: pytest.FixtureRequest, kt: Harness, pg_engine: PgSandbox
) -> None:
    log = ServerLog(pg_engine)
    rig = make_rig(request, kt, "postgres", "alternating", grace="1d")
    assert isinstance(rig, PgRig) and rig.owner_role
    with pg_engine.admin() as conn:  # the DBA's part: the owner role may create in public
        conn.execute(f'CREATE ROLE "{rig.owner_role}" NOLOGIN')
        conn.execute(f'GRANT USAGE, CREATE ON SCHEMA public TO "{rig.owner_role}"')
    rig.apply()

    seen = rotations_keep_the_table(rig, pg_engine.connect)

    with pg_engine.admin() as conn:
        owner = conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'orders'")
        assert owner.fetchone() == (rig.owner_role,)
    assert rig.states() == ["current", "retired", "retired", "retired"]
    log.assert_holds_none_of(seen)


ROOT_INVENTORY = """
[policies.p]
max_age = "90d"

[targets.pg-root]
type = "postgres"
host = "{host}"
port = {port}
dbname = "{db}"
connect_timeout = 5

[targets.app-db]
type = "postgres"
host = "{host}"
port = {port}
dbname = "{db}"
admin_user = "{root}"
admin_password = "keyturn:infra/pg-admin"
connect_timeout = 5

[[credentials]]
id = "infra/pg-admin"
kind = "postgres"
policy = "p"
target = "pg-root"
username = "{root}"
initial_secret = "env:ROOT_PW"

[[credentials]]
id = "acme/app-db"
kind = "postgres"
policy = "p"
target = "app-db"
username = "{app}"
initial_secret = "env:APP_PW"
"""


def test_the_admin_credential_rotates_and_still_rotates_the_others(
    kt: Harness, pg_engine: PgSandbox
) -> None:
    log = ServerLog(pg_engine)
    root_pw, app_pw = new_password(), new_password()
    root, app = pg_engine.role("root"), pg_engine.role("app")
    with pg_engine.admin() as conn:  # our own admin (the shared kt_admin is never rotated)
        conn.execute(
            f"CREATE ROLE \"{root}\" LOGIN CREATEROLE PASSWORD '{scram_verifier(root_pw)}'"
        )
    kt.write(
        "keyturn.toml",
        ROOT_INVENTORY.format(
            host=pg_engine.server.host,
            port=pg_engine.server.port,
            db=pg_engine.dbname,
            root=root,
            app=app,
        ),
    )
    applied = kt.cli("apply", "keyturn.toml", env={"ROOT_PW": root_pw, "APP_PW": app_pw})
    assert applied.code == 0, (applied.out, applied.err)
    assert "provisioned acme/app-db" in applied.out  # created by the admin credential
    assert "provisioned infra/pg-admin" not in applied.out  # it exists: nothing to do

    admin = PgRig(kt, "single", [root], box=pg_engine, cred="infra/pg-admin")
    user = PgRig(kt, "single", [app], box=pg_engine, cred="acme/app-db")
    seen = [root_pw, app_pw]
    for _ in range(2):
        for rig in (admin, user):
            old = rig.get()
            rig.rotate()
            new = rig.get()
            seen.append(new)
            assert rig.last_rotation()["status"] == "done"  # single: no previous kept
            assert rig.accepts(rig.logins[0], new)
            assert not rig.accepts(rig.logins[0], old)
    verified = kt.cli("verify", "--json")
    assert verified.code == 0 and verified.out.count('"in-sync"') == 2, verified.out
    log.assert_holds_none_of(seen)


SELF_ADMIN_INVENTORY = """
[targets.pg-root]
type = "postgres"
host = "{host}"
port = {port}
dbname = "{db}"
admin_user = "{root}"
admin_password = "keyturn:infra/pg-admin"
connect_timeout = 5

[[credentials]]
id = "infra/pg-admin"
kind = "postgres"
target = "pg-root"
username = "{root}"
initial_secret = "env:ROOT_PW"
"""


@pytest.mark.parametrize("point", ["set:effect", "test:effect"])
def test_an_admin_that_is_its_own_admin_survives_a_crash(
    kt: Harness, pg_engine: PgSandbox, point: str
) -> None:
    """The target's admin is the credential itself: a replayed `set` must not log in with
    the value the crashed run already replaced."""
    root_pw, root = new_password(), pg_engine.role("root")
    with pg_engine.admin() as conn:
        conn.execute(
            f"CREATE ROLE \"{root}\" LOGIN CREATEROLE PASSWORD '{scram_verifier(root_pw)}'"
        )
    kt.write(
        "keyturn.toml",
        SELF_ADMIN_INVENTORY.format(
            host=pg_engine.server.host, port=pg_engine.server.port, db=pg_engine.dbname, root=root
        ),
    )
    assert kt.cli("apply", "keyturn.toml", env={"ROOT_PW": root_pw}).code == 0
    worker = {"KEYTURN_WORKER_ID": "worker-1"}
    crashed = kt.spawn(
        "rotate",
        "infra/pg-admin",
        "--reason",
        "crash",
        env={**worker, "KEYTURN_TEST_CRASH_AT": point},
    )
    assert crashed.code == -signal.SIGKILL, crashed.err

    resumed = kt.cli("resume", "--now", env=worker)
    assert resumed.code == 0, resumed.out + resumed.err  # at once, not after a failed attempt
    rig = PgRig(kt, "single", [root], box=pg_engine, cred="infra/pg-admin")
    assert rig.last_rotation()["attempts"] == 0
    assert rig.accepts(root, rig.get()) and not rig.accepts(root, root_pw)
    assert rig.states() == ["current", "retired"]
