"""The postgres target against a real PostgreSQL that checks passwords (scram-sha-256).

The cluster is the one scripts/services starts on port 54329 with log_statement = 'all', so
the tests can also read what the server logged.
"""

from __future__ import annotations

import base64
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from keyturn.domain.errors import (
    LiteralSecret,
    PluginMissing,
    TargetRejected,
    TargetUnreachable,
)
from keyturn.domain.model import Secret
from keyturn.targets import postgres
from keyturn.targets.base import Account
from keyturn.targets.postgres import PostgresTarget, scram_matches, scram_verifier
from tests.servers import unused_port
from tests.targets.conftest import PgSandbox, Refs, new_password


def target(pg: PgSandbox, refs: Refs, **extra: object) -> PostgresTarget:
    plugin = PostgresTarget.from_settings(pg.settings(refs, **extra), refs.context())
    assert isinstance(plugin, PostgresTarget)
    return plugin


@pytest.fixture
def server_log(pg: PgSandbox) -> Iterator[list[str]]:
    """Passwords the test used; afterwards, the server log written meanwhile must hold none."""
    log = Path(pg.server.log)
    start = log.stat().st_size
    used: list[str] = []
    yield used
    with log.open("rb") as fh:
        fh.seek(start)
        written = fh.read().decode(errors="replace")
    assert "ALTER ROLE" in written or "CREATE ROLE" in written  # the log does log statements
    for password in used:
        assert password not in written


# -- SCRAM verifiers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "password",
    [
        "plain-ascii-123",
        "pässwörd",
        "no\u00a0break space",
        "soft\u00adhyphen",
        "\uff46\uff55\uff4c\uff4c",
    ],
)
def test_verifier_is_byte_for_byte_what_libpq_computes(pg: PgSandbox, password: str) -> None:
    with pg.admin() as conn:
        theirs = conn.pgconn.encrypt_password(
            password.encode(), b"whoever", b"scram-sha-256"
        ).decode()
    iterations, salt = theirs.split("$")[1].split(":")
    ours = scram_verifier(password, iterations=int(iterations), salt=base64.b64decode(salt))
    assert ours == theirs
    assert scram_matches(theirs, password)
    assert not scram_matches(theirs, password + "x")


@pytest.mark.parametrize("password", ["plain-ascii-123", "pässwörd", "\uff46\uff55\uff4c\uff4c"])
def test_a_verifier_made_here_matches_as_the_full_check_does(password: str) -> None:
    """scram_matches answers from what scram_verifier remembered (no PBKDF2): the same
    answer as recomputing, SASLprep equivalence included."""
    ours = scram_verifier(password)
    iterations, salt = ours.split("$")[1].split(":")
    fresh = postgres._Made()  # nothing remembered: the full check
    for candidate in (password, password + "x", postgres.saslprep(password), ""):
        full = fresh.matches(ours, candidate) is None and postgres._stored_and_server_key(
            candidate, base64.b64decode(salt), int(iterations)
        ) == postgres._stored_and_server_key(password, base64.b64decode(salt), int(iterations))
        assert scram_matches(ours, candidate) is full
        assert postgres._MADE.matches(ours, candidate) is full


@pytest.mark.parametrize("password", ["pässwörd", "no\u00a0break space"])
def test_server_accepts_a_non_ascii_password(pg: PgSandbox, refs: Refs, password: str) -> None:
    plugin, app = target(pg, refs), Account(pg.role("app"))
    plugin.ensure(app, Secret(password))
    assert plugin.test(app, Secret(password))


# -- single ----------------------------------------------------------------------------------


def test_single_rotation(pg: PgSandbox, refs: Refs, server_log: list[str]) -> None:
    plugin, app = target(pg, refs), Account(pg.role("app"))
    old, new = new_password(), new_password()
    server_log += [old, new]

    assert plugin.ensure(app, Secret(old)) is True
    assert plugin.ensure(app, Secret(old)) is False
    assert plugin.test(app, Secret(old))

    plugin.set(app, Secret(new), Secret(old))
    assert plugin.test(app, Secret(new))
    assert not plugin.test(app, Secret(old))

    plugin.set(app, Secret(new), Secret(old))  # replayed after a crash
    plugin.revoke(app, Secret(old))
    plugin.revoke(app, Secret(old))
    assert plugin.test(app, Secret(new))
    assert not plugin.test(app, Secret(old))


def test_test_pair_overlaps_and_meets_a_connection_limit_one_at_a_time(
    pg: PgSandbox, refs: Refs
) -> None:
    """The two logins are in flight together (a barrier only both can pass), and a role
    whose CONNECTION LIMIT lets one log in at a time still gets the sequential answer."""
    plugin, app = target(pg, refs), Account(pg.role("app"))
    old, new = Secret(new_password()), Secret(new_password())
    plugin.ensure(app, old)
    plugin.set(app, new, old)
    real, together = plugin.test, threading.Barrier(2, timeout=10)

    def meeting(account: Account, value: Secret) -> bool:
        together.wait()  # BrokenBarrierError unless the other login is under way too
        return real(account, value)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plugin, "test", meeting)
        assert plugin.test_pair((app, new), (app, old)) == (True, False)
    with pg.admin() as conn:
        conn.execute(f'ALTER ROLE "{app.username}" CONNECTION LIMIT 1')
    for _ in range(5):  # overlapping or not, the answer is the sequential one
        assert plugin.test_pair((app, new), (app, old)) == (True, False)
        # Both accepted: two sessions of the role at once, which the limit refuses.
        assert plugin.test_pair((app, new), (app, new)) == (True, True)


def test_test_pair_answers_as_two_tests_one_after_the_other(pg: PgSandbox, refs: Refs) -> None:
    """The two logins of the test step run at once, with the sequential contract's answers
    and errors: *new*'s refusal or error first, *old*'s dropped when *new* is refused."""
    plugin, app = target(pg, refs), Account(pg.role("app"))
    old, new = Secret(new_password()), Secret(new_password())
    plugin.ensure(app, old)
    plugin.set(app, new, old)
    assert plugin.test_pair((app, new), (app, old)) == (True, False)
    assert plugin.test_pair((app, old), (app, new)) == (False, None)
    assert plugin.test_pair((app, new), (app, new)) == (True, True)
    assert plugin.test_pair((app, new), None) == (True, None)

    def answers(given: dict[str, bool | str]) -> object:
        def test(_account: Account, value: Secret) -> bool:
            answer = given[value.reveal()]
            if isinstance(answer, str):
                raise TargetUnreachable(answer)
            return answer

        return test

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plugin, "test", answers({"n": True, "o": "old's outage"}))
        with pytest.raises(TargetUnreachable, match="old's outage"):
            plugin.test_pair((app, Secret("n")), (app, Secret("o")))
        patch.setattr(plugin, "test", answers({"n": False, "o": "old's outage"}))
        assert plugin.test_pair((app, Secret("n")), (app, Secret("o"))) == (False, None)
        patch.setattr(plugin, "test", answers({"n": "new's outage", "o": "old's outage"}))
        with pytest.raises(TargetUnreachable, match="new's outage"):
            plugin.test_pair((app, Secret("n")), (app, Secret("o")))


def test_single_without_admin_uses_the_current_password(pg: PgSandbox, refs: Refs) -> None:
    admin = target(pg, refs)
    app = Account(pg.role("app"))
    old, new = new_password(), new_password()
    admin.ensure(app, Secret(old))
    plugin = target(pg, refs, admin_user=None, admin_password=None)

    plugin.set(app, Secret(new), Secret(old))
    plugin.set(app, Secret(new), Secret(old))  # replay: new already works
    plugin.revoke(app, Secret(old))
    assert plugin.test(app, Secret(new))
    assert not plugin.test(app, Secret(old))


def test_set_on_a_missing_role_says_so(pg: PgSandbox, refs: Refs) -> None:
    with pytest.raises(TargetRejected, match="no such role"):
        target(pg, refs).set(Account(pg.role("ghost")), Secret(new_password()), None)


# -- alternating -------------------------------------------------------------------------------


def test_alternating_keeps_objects_and_grants_through_three_flips(
    pg: PgSandbox, refs: Refs, server_log: list[str]
) -> None:
    owner = pg.role("owner")
    plugin = target(pg, refs, owner_role=owner)
    logins = [Account(pg.role("app")), Account(pg.role("app_clone"))]
    values = {logins[0].username: new_password()}
    server_log.append(values[logins[0].username])
    plugin.ensure(logins[0], Secret(values[logins[0].username]))

    # The app creates and fills a table; the admin grants the owner role on its own table.
    with pg.admin() as conn:
        conn.execute(f'GRANT USAGE, CREATE ON SCHEMA public TO "{owner}"')
    with pg.connect(logins[0].username, values[logins[0].username]) as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY)")
        conn.execute("INSERT INTO orders VALUES (1)")
    with pg.admin() as conn:
        conn.execute("CREATE TABLE prices (id int)")
        conn.execute(f'GRANT SELECT, INSERT ON prices TO "{owner}"')

    active = 0
    for flip in range(3):
        inactive = 1 - active
        old_acc, new_acc = logins[active], logins[inactive]
        old, new = values[old_acc.username], new_password()
        server_log.append(new)

        plugin.set(new_acc, Secret(new), None)
        plugin.set(new_acc, Secret(new), None)  # replay
        assert plugin.test(new_acc, Secret(new))
        assert plugin.test(old_acc, Secret(old))  # both log in until revoke

        plugin.revoke(old_acc, Secret(old))
        plugin.revoke(old_acc, Secret(old))  # replay
        assert not plugin.test(old_acc, Secret(old))
        assert plugin.test(new_acc, Secret(new))

        with pg.connect(new_acc.username, new) as conn:
            conn.execute("INSERT INTO orders VALUES (%s)", (flip + 2,))
            conn.execute("INSERT INTO prices VALUES (%s)", (flip,))
            conn.execute(f"CREATE TABLE made_in_flip_{flip} (x int)")
            assert conn.execute("SELECT count(*) FROM prices").fetchone()[0] == flip + 1
        values[new_acc.username] = new
        active = inactive

    with pg.connect(logins[active].username, values[logins[active].username]) as conn:
        assert [r[0] for r in conn.execute("SELECT id FROM orders ORDER BY id")] == [1, 2, 3, 4]
        conn.execute("DELETE FROM orders WHERE id = 1")
        owners = conn.execute(
            "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename <> 'prices'"
        ).fetchall()
    assert owners == [(owner,)]


def test_revoke_of_a_missing_or_disabled_login_is_harmless(pg: PgSandbox, refs: Refs) -> None:
    plugin = target(pg, refs, owner_role=pg.role("owner"))
    ghost = Account(pg.role("ghost"))
    plugin.revoke(ghost, Secret(new_password()))
    assert plugin.ensure(ghost, Secret("first-value-123"))
    plugin.revoke(ghost, Secret("first-value-123"))
    plugin.revoke(ghost, Secret("first-value-123"))
    assert not plugin.test(ghost, Secret("first-value-123"))


# -- failures ----------------------------------------------------------------------------------


def test_unreachable_port_is_not_a_refusal(pg: PgSandbox, refs: Refs) -> None:
    port = unused_port()
    plugin = target(pg, refs, port=port)
    app = Account(pg.role("app"))
    with pytest.raises(TargetUnreachable, match=f"127.0.0.1:{port}.*{app.username}"):
        plugin.test(app, Secret(new_password()))
    with pytest.raises(TargetUnreachable, match=f"127.0.0.1:{port}"):
        plugin.set(app, Secret(new_password()), None)


def test_wrong_admin_password_is_clear_and_does_not_leak(pg: PgSandbox, refs: Refs) -> None:
    wrong = new_password()
    plugin = target(pg, refs, admin_password=refs.add(wrong, "env:WRONG_PG_ADMIN"))
    with pytest.raises(TargetRejected) as info:
        plugin.set(Account(pg.role("app")), Secret(new_password()), None)
    message = str(info.value)
    assert pg.server.user in message and "env:WRONG_PG_ADMIN" in message
    assert wrong not in message and wrong not in repr(info.value.__cause__)


def test_a_literal_admin_password_is_refused_without_echo(pg: PgSandbox, refs: Refs) -> None:
    settings = pg.settings(refs, admin_password="hunter2-literal")
    with pytest.raises(LiteralSecret) as info:
        PostgresTarget.from_settings(settings, refs.context())
    assert "hunter2" not in str(info.value)


def test_missing_driver_names_the_extra(pg: PgSandbox, refs: Refs) -> None:
    plugin = target(pg, refs)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "psycopg", None)
        with pytest.raises(PluginMissing, match=r"pip install 'keyturn\[postgres\]'"):
            plugin.test(Account("app"), Secret("whatever-value"))


def _alternating(pg: PgSandbox, refs: Refs, owner: str) -> PostgresTarget:
    settings = pg.settings(refs, owner_role=owner)
    plugin = PostgresTarget.from_settings(settings, refs.context())
    assert isinstance(plugin, PostgresTarget)
    return plugin


def test_alternating_adopts_an_existing_login_and_its_tables(pg: PgSandbox, refs: Refs) -> None:
    """issue 18: a login that already owned tables lost them after the second flip."""
    owner, app, clone = pg.role("owner"), pg.role("app"), pg.role("app_clone")
    first = new_password()
    with pg.admin() as conn:
        conn.execute(f"CREATE ROLE \"{app}\" LOGIN PASSWORD '{first}'")
        conn.execute(f'GRANT CREATE ON SCHEMA public TO "{app}"')
    with pg.connect(app, first) as conn:
        conn.execute("CREATE TABLE legacy (id int)")
        conn.execute("INSERT INTO legacy VALUES (1)")
    plugin = _alternating(pg, refs, owner)
    assert plugin.ensure(Account(app), Secret(first)) is False  # adopted, not created
    with pg.admin() as conn:
        conn.execute(f'GRANT USAGE, CREATE ON SCHEMA public TO "{owner}"')
        found = conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'legacy'")
        assert found.fetchone() == (owner,)
    values = {app: first}
    logins = [app, clone]
    for flip in range(3):  # the second flip is the one that used to lose the table
        old, new = logins[flip % 2], logins[(flip + 1) % 2]
        values[new] = new_password()
        plugin.set(Account(new), Secret(values[new]), None)
        plugin.revoke(Account(old), Secret(values[old]))
        with pg.connect(new, values[new]) as conn:
            conn.execute("INSERT INTO legacy VALUES (%s)", (flip + 2,))
    with pg.connect(logins[1], values[logins[1]]) as conn:
        assert conn.execute("SELECT count(*) FROM legacy").fetchone() == (4,)
        conn.execute("SET ROLE NONE")
        conn.execute("CREATE TABLE stray (id int)")  # owned by the login, not the owner role
    found = plugin.findings(logins, Account(logins[1]), Secret(values[logins[1]]))
    assert len(found) == 1 and clone in found[0] and "REASSIGN OWNED" in found[0]


def test_adopting_a_login_that_owns_objects_elsewhere_refuses_with_the_statement(
    pg: PgSandbox, refs: Refs
) -> None:
    owner, app = pg.role("owner"), pg.role("app")
    first = new_password()
    other = f"{pg.dbname}_other"
    with pg.admin() as conn:
        conn.execute(f"CREATE ROLE \"{app}\" LOGIN PASSWORD '{first}'")
        conn.execute(f'CREATE DATABASE "{other}" OWNER "{app}"')
    try:
        with pg.admin(other) as conn:
            conn.execute(f'CREATE TABLE t (id int); ALTER TABLE t OWNER TO "{app}"')
        with pytest.raises(TargetRejected) as refused:
            _alternating(pg, refs, owner).ensure(Account(app), Secret(first))
        assert other in refused.value.message and "REASSIGN OWNED BY" in refused.value.message
        assert first not in refused.value.message
    finally:
        with pg.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{other}"')


def test_admin_connections_are_reused_and_verification_logins_are_fresh(
    pg: PgSandbox, refs: Refs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One admin connection serves a rotation's verbs and the next rotation's (a new plugin
    instance on the same target); every `test` is a login of its own (issue 23)."""
    opened: list[str] = []
    real = PostgresTarget._open

    def counting(self: PostgresTarget, user: str, password: Secret) -> object:
        opened.append(user)
        return real(self, user, password)

    monkeypatch.setattr(PostgresTarget, "_open", counting)
    plugin, app = target(pg, refs), Account(pg.role("app"))
    first, second, third = new_password(), new_password(), new_password()
    plugin.ensure(app, Secret(first))
    plugin.set(app, Secret(second), Secret(first))
    plugin.revoke(app, Secret(first))
    target(pg, refs).set(app, Secret(third), Secret(second))
    assert opened == [pg.server.user]
    assert plugin.test(app, Secret(third)) and not plugin.test(app, Secret(second))
    assert opened == [pg.server.user, app.username, app.username]


def test_an_admin_connection_the_server_dropped_is_not_reused(pg: PgSandbox, refs: Refs) -> None:
    plugin, app = target(pg, refs), Account(pg.role("app"))
    first, second = new_password(), new_password()
    plugin.ensure(app, Secret(first))
    with pg.admin() as conn:  # terminate every other session of the sandbox database
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (pg.dbname,),
        )
    time.sleep(0.2)  # the termination notice reaches the idle socket
    plugin.set(app, Secret(second), Secret(first))  # a fresh connection, not a failure
    assert plugin.test(app, Secret(second))


@pytest.mark.parametrize(
    "password",
    ["".join(chr(c) for c in range(0x20, 0x7F)), "plain-Password_123", " spaced out ", "~"],
)
def test_saslprep_passes_printable_ascii_through_as_the_tables_do(password: str) -> None:
    """The fast path for printable ASCII (every generated password) gives what the
    stringprep tables give: the password unchanged."""
    assert postgres.saslprep(password) == password
    # One character outside printable ASCII still takes the tables (a mapped-to-nothing
    # soft hyphen disappears; a control character is prohibited, so kept as it was).
    assert postgres.saslprep(password + "\u00ad") == password
    assert postgres.saslprep(password + "\x07") == password + "\x07"
