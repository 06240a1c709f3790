"""MariaDB through keyturn: alternating users keep the application's data and grants."""

from __future__ import annotations

import pytest

from tests.support.keyturn import Harness
from tests.targets.conftest import MysqlSandbox
from tests.targets.engine_support import MysqlRig, make_rig, rotations_keep_the_table


def test_alternating_keeps_the_apps_table_through_three_rotations(
    request: pytest.FixtureRequest, kt: Harness, mysql_engine: MysqlSandbox
) -> None:
    rig = make_rig(request, kt, "mysql", "alternating", grace="1d")
    assert isinstance(rig, MysqlRig) and rig.default_role
    with mysql_engine.admin() as conn, conn.cursor() as cur:  # the DBA's part: the role
        cur.execute("CREATE ROLE %s", (rig.default_role,))
        cur.execute(f"GRANT ALL PRIVILEGES ON `{mysql_engine.dbname}`.* TO %s", (rig.default_role,))
    rig.apply()

    rotations_keep_the_table(rig, mysql_engine.connect)

    assert rig.states() == ["current", "retired", "retired", "retired"]


def test_dual_on_mariadb_fails_the_rotation_clearly_and_keeps_the_current_value(
    request: pytest.FixtureRequest, kt: Harness
) -> None:
    rig = make_rig(request, kt, "mysql", "dual")
    rig.apply()

    rotated = kt.cli("rotate", rig.cred, "--reason", "dual on MariaDB")
    assert rotated.code != 0
    assert "dual needs MySQL 8.0.14 or later" in rotated.out + rotated.err
    rotation = rig.last_rotation()
    assert rotation["status"] == "retrying" and rotation["attempts"] == 1
    assert "dual needs MySQL 8.0.14" in rotation["error"]
    # The target still takes the current value, so the pending one was abandoned.
    assert rig.states() == ["current", "failed"]
    assert rig.accepts(rig.logins[0], rig.get()) and rig.get() == rig.initial
