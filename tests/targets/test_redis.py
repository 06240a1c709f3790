"""The redis target against the real Redis from scripts/services (ACL users)."""

from __future__ import annotations

import sys

import pytest

from keyturn.domain.errors import ConfigInvalid, PluginMissing, TargetRejected, TargetUnreachable
from keyturn.domain.model import Secret
from keyturn.targets.base import Account
from keyturn.targets.redis import DEFAULT_ACL_RULES, RedisTarget, password_hash
from tests.servers import unused_port
from tests.targets.conftest import RedisSandbox, Refs, new_password


def target(
    box: RedisSandbox, refs: Refs, strategy: str | None = None, **extra: object
) -> RedisTarget:
    plugin = RedisTarget.from_settings(box.settings(refs, **extra), refs.context())
    assert isinstance(plugin, RedisTarget)
    return plugin


def test_ensure_creates_the_user_with_the_rules(redis_box: RedisSandbox, refs: Refs) -> None:
    plugin, app = target(redis_box, refs), Account(redis_box.user("app"))
    value = new_password()
    assert plugin.ensure(app, Secret(value)) is True
    assert plugin.ensure(app, Secret(new_password())) is False  # untouched
    assert plugin.test(app, Secret(value))
    with redis_box.client() as admin:
        user = admin.acl_getuser(app.username)
    assert user["passwords"] == [password_hash(value)]
    assert user["categories"] == ["+@all", "-@dangerous"]
    assert "-@dangerous" in DEFAULT_ACL_RULES
    with redis_box.client(app.username, value) as client:
        client.set(redis_box.prefix + "k", "v")
        assert client.get(redis_box.prefix + "k") == b"v"


def test_dual_three_rotations_keep_exactly_one_password(
    redis_box: RedisSandbox, refs: Refs
) -> None:
    plugin, app = target(redis_box, refs, "dual"), Account(redis_box.user("app"))
    current = new_password()
    plugin.ensure(app, Secret(current))
    for _ in range(3):
        new = new_password()
        plugin.add(app, Secret(new), Secret(current))
        assert plugin.test(app, Secret(current)) and plugin.test(app, Secret(new))
        plugin.revoke(app, Secret(current))
        current = new
    with redis_box.client() as admin:
        assert admin.acl_getuser(app.username)["passwords"] == [password_hash(current)]


def test_single_without_admin_uses_the_current_password(
    redis_box: RedisSandbox, refs: Refs
) -> None:
    app = Account(redis_box.user("app"))
    old, new = new_password(), new_password()
    target(redis_box, refs, acl_rules="~* +@all").ensure(app, Secret(old))
    plugin = target(redis_box, refs, "single", admin_user=None, admin_password=None)
    plugin.set(app, Secret(new), Secret(old))
    assert plugin.test(app, Secret(new)) and not plugin.test(app, Secret(old))
    with pytest.raises(ConfigInvalid, match="needs admin_password"):
        plugin.ensure(Account(redis_box.user("other")), Secret(new))


def test_set_on_a_missing_user_says_so(redis_box: RedisSandbox, refs: Refs) -> None:
    with pytest.raises(TargetRejected, match="no such ACL user"):
        target(redis_box, refs).set(Account(redis_box.user("ghost")), Secret("x" * 20), None)


def test_unreachable_port_is_not_a_refusal(redis_box: RedisSandbox, refs: Refs) -> None:
    port = unused_port()
    plugin, app = target(redis_box, refs, port=port), Account(redis_box.user("app"))
    with pytest.raises(TargetUnreachable, match=f"127.0.0.1:{port}.*{app.username}"):
        plugin.test(app, Secret(new_password()))


def test_wrong_admin_password_is_clear_and_does_not_leak(
    redis_box: RedisSandbox, refs: Refs
) -> None:
    wrong = new_password()
    plugin = target(redis_box, refs, admin_password=refs.add(wrong, "env:WRONG_REDIS_ADMIN"))
    with pytest.raises(TargetRejected) as info:
        plugin.ensure(Account(redis_box.user("app")), Secret(new_password()))
    message = str(info.value)
    assert redis_box.server.user in message and "env:WRONG_REDIS_ADMIN" in message
    assert wrong not in message and password_hash(wrong) not in message


def test_a_refused_change_does_not_quote_the_password(redis_box: RedisSandbox, refs: Refs) -> None:
    """Redis quotes a bad ACL modifier in its error; keyturn's message must not."""
    value = new_password()
    plugin = target(redis_box, refs, acl_rules="+@nonsense-category")
    with pytest.raises(TargetRejected) as info:
        plugin.ensure(Account(redis_box.user("app")), Secret(value))
    assert "nonsense" in str(info.value)
    assert value not in str(info.value) and password_hash(value) not in str(info.value)


def test_missing_driver_names_the_extra(redis_box: RedisSandbox, refs: Refs) -> None:
    plugin = target(redis_box, refs)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "redis", None)
        with pytest.raises(PluginMissing, match=r"pip install 'keyturn\[redis\]'"):
            plugin.test(Account("app"), Secret("whatever-value"))
