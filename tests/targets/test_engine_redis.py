"""Redis through keyturn: the ACL admin is itself a keyturn credential and rotates itself."""

from __future__ import annotations

import signal

import pytest

from keyturn.targets.redis import password_hash
from tests.support.keyturn import Harness
from tests.targets.conftest import RedisSandbox, new_password
from tests.targets.engine_support import RedisRig

INVENTORY = """
[policies.now]
grace = "0s"

[targets.redis-root]
type = "redis"
host = "{host}"
port = {port}
admin_user = "{root}"
admin_password = "keyturn:infra/redis-admin"
connect_timeout = 5

[[credentials]]
id = "infra/redis-admin"
kind = "redis"
target = "redis-root"
strategy = "single"
username = "{root}"
initial_secret = "env:ROOT_PW"

[[credentials]]
id = "acme/cache"
kind = "redis"
policy = "now"
target = "redis-root"
strategy = "dual"
username = "{app}"
initial_secret = "env:APP_PW"
"""


@pytest.mark.parametrize("point", ["set:effect", "test:effect", "none"])
def test_the_acl_admin_rotates_itself_then_rotates_the_others(
    kt: Harness, redis_engine: RedisSandbox, point: str
) -> None:
    root_pw, app_pw = new_password(), new_password()
    root, app = redis_engine.user("root"), redis_engine.user("app")
    with redis_engine.client() as client:  # our own ACL admin (the shared one is never rotated)
        client.execute_command(
            "ACL", "SETUSER", root, "on", "#" + password_hash(root_pw), "~*", "&*", "+@all"
        )
    kt.write(
        "keyturn.toml",
        INVENTORY.format(
            host=redis_engine.server.host, port=redis_engine.server.port, root=root, app=app
        ),
    )
    applied = kt.cli("apply", "keyturn.toml", env={"ROOT_PW": root_pw, "APP_PW": app_pw})
    assert applied.code == 0, applied.out + applied.err
    assert "provisioned acme/cache" in applied.out
    admin = RedisRig(kt, "single", [root], box=redis_engine, cred="infra/redis-admin")
    user = RedisRig(kt, "dual", [app], box=redis_engine, cred="acme/cache")

    worker = {"KEYTURN_WORKER_ID": "worker-1"}
    if point == "none":
        admin.rotate()
    else:
        crash = {**worker, "KEYTURN_TEST_CRASH_AT": point}
        crashed = kt.spawn("rotate", admin.cred, "--reason", "crash", env=crash)
        assert crashed.code == -signal.SIGKILL, crashed.err
        resumed = kt.cli("resume", "--now", env=worker)
        assert resumed.code == 0, resumed.out + resumed.err
    assert admin.last_rotation()["attempts"] == 0  # the replay needed no retry
    assert admin.accepts(root, admin.get()) and not admin.accepts(root, root_pw)

    user.rotate()  # through the rotated admin; dual, no grace: old removed at once
    assert user.accepts(app, user.get()) and not user.accepts(app, app_pw)
    assert user.states() == admin.states() == ["current", "retired"]
