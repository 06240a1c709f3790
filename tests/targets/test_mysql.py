"""The mysql target against the real MariaDB from scripts/services (passwords checked)."""

from __future__ import annotations

import sys

import pytest

from keyturn.domain.errors import ConfigInvalid, PluginMissing, TargetRejected, TargetUnreachable
from keyturn.domain.model import Secret
from keyturn.targets.base import Account
from keyturn.targets.mysql import MysqlTarget, ServerVersion, native_password_hash
from tests.servers import unused_port
from tests.targets.conftest import MysqlSandbox, Refs, new_password


def target(
    box: MysqlSandbox, refs: Refs, strategy: str | None = None, **extra: object
) -> MysqlTarget:
    plugin = MysqlTarget.from_settings(box.settings(refs, **extra), refs.context())
    assert isinstance(plugin, MysqlTarget)
    return plugin


@pytest.mark.parametrize(
    ("version", "mariadb", "dual"),
    [
        ("10.11.19-MariaDB-0+deb12u1", True, False),
        ("11.4.2-MariaDB", True, False),
        ("8.0.13", False, False),
        ("8.0.14", False, True),
        ("8.4.0-commercial", False, True),
        ("5.7.44-log", False, False),
    ],
)
def test_server_version_decides_dual(version: str, mariadb: bool, dual: bool) -> None:
    parsed = ServerVersion.parse(version)
    assert (parsed.mariadb, parsed.dual_passwords) == (mariadb, dual)


def test_native_hash_is_what_the_server_computes(mysql: MysqlSandbox) -> None:
    with mysql.admin() as conn, conn.cursor() as cur:
        cur.execute("SELECT PASSWORD(%s)", ("s3cret-value",))
        assert cur.fetchone()[0] == native_password_hash("s3cret-value")


def test_single_without_admin_uses_the_current_password(mysql: MysqlSandbox, refs: Refs) -> None:
    app = Account(mysql.user("app"))
    old, new = new_password(), new_password()
    target(mysql, refs).ensure(app, Secret(old))
    plugin = target(mysql, refs, "single", admin_user=None, admin_password=None)
    plugin.set(app, Secret(new), Secret(old))
    plugin.set(app, Secret(new), Secret(old))  # replay: new already logs in
    assert plugin.test(app, Secret(new))
    assert not plugin.test(app, Secret(old))


def test_alternating_keeps_tables_and_grants_through_three_flips(
    mysql: MysqlSandbox, refs: Refs
) -> None:
    role = mysql.user("role")
    plugin = target(mysql, refs, "alternating", default_role=role)
    logins = [Account(mysql.user("app")), Account(mysql.user("app_clone"))]
    values = {logins[0].username: new_password()}
    plugin.ensure(logins[0], Secret(values[logins[0].username]))
    with mysql.admin() as conn, conn.cursor() as cur:
        cur.execute(f"GRANT ALL PRIVILEGES ON `{mysql.dbname}`.* TO %s", (role,))
    first = mysql.connect(logins[0].username, values[logins[0].username])
    with first as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE orders (id INT PRIMARY KEY)")
        cur.execute("INSERT INTO orders VALUES (1)")

    active = 0
    for flip in range(3):
        old_acc, new_acc = logins[active], logins[1 - active]
        old, new = values[old_acc.username], new_password()
        plugin.set(new_acc, Secret(new), None)
        plugin.set(new_acc, Secret(new), None)  # replay
        assert plugin.test(new_acc, Secret(new)) and plugin.test(old_acc, Secret(old))

        plugin.revoke(old_acc, Secret(old))
        plugin.revoke(old_acc, Secret(old))  # replay
        assert not plugin.test(old_acc, Secret(old))
        with mysql.connect(new_acc.username, new) as conn, conn.cursor() as cur:
            cur.execute("INSERT INTO orders VALUES (%s)", (flip + 2,))
        values[new_acc.username] = new
        active = 1 - active

    last = mysql.connect(logins[active].username, values[logins[active].username])
    with last as conn, conn.cursor() as cur:
        cur.execute("SELECT id FROM orders ORDER BY id")
        assert [r[0] for r in cur.fetchall()] == [1, 2, 3, 4]
        cur.execute("DELETE FROM orders WHERE id = 1")
        assert cur.rowcount == 1


def test_dual_on_mariadb_is_refused_clearly(mysql: MysqlSandbox, refs: Refs) -> None:
    plugin, app = target(mysql, refs, "dual"), Account(mysql.user("app"))
    old = new_password()
    plugin.ensure(app, Secret(old))
    with pytest.raises(ConfigInvalid, match=r"MariaDB.*dual needs MySQL 8\.0\.14"):
        plugin.add(app, Secret(new_password()), Secret(old))
    assert plugin.test(app, Secret(old))  # nothing changed


def test_set_on_a_missing_user_says_so(mysql: MysqlSandbox, refs: Refs) -> None:
    with pytest.raises(TargetRejected, match="no account"):
        target(mysql, refs).set(Account(mysql.user("ghost")), Secret(new_password()), None)


def test_unreachable_port_is_not_a_refusal(mysql: MysqlSandbox, refs: Refs) -> None:
    port = unused_port()
    plugin, app = target(mysql, refs, port=port), Account(mysql.user("app"))
    with pytest.raises(TargetUnreachable, match=f"127.0.0.1:{port}.*{app.username}"):
        plugin.test(app, Secret(new_password()))


def test_wrong_admin_password_is_clear_and_does_not_leak(mysql: MysqlSandbox, refs: Refs) -> None:
    wrong = new_password()
    plugin = target(mysql, refs, admin_password=refs.add(wrong, "env:WRONG_MYSQL_ADMIN"))
    with pytest.raises(TargetRejected) as info:
        plugin.ensure(Account(mysql.user("app")), Secret(new_password()))
    message = str(info.value)
    assert mysql.server.user in message and "env:WRONG_MYSQL_ADMIN" in message
    assert wrong not in message


def test_missing_driver_names_the_extra(mysql: MysqlSandbox, refs: Refs) -> None:
    plugin = target(mysql, refs)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "pymysql", None)
        with pytest.raises(PluginMissing, match=r"pip install 'keyturn\[mysql\]'"):
            plugin.test(Account("app"), Secret("whatever-value"))
