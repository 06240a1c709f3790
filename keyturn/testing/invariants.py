"""keyturn's invariants, run against any target plugin (DESIGN.md section 2).

    from keyturn.testing import TargetCase, check_target
    check_target(TargetCase("my-target", {"url": ...}, strategy="dual"), tmp_path)

`check_target` runs, in order:

1. **verbs** (`check_verbs`): the plugin alone, through the strategy object the engine uses:
   ``set`` (``add`` for `dual`) and ``revoke`` replayed are harmless; ``test`` accepts the new
   value, refuses a wrong one, and after each strategy's revoke refuses the old one (`single`:
   right after ``set``). An issuing target lists the key it created and revokes it by key id
   alone, with an empty value, as the engine does with orphans.
2. **rotations** (`check_rotations`): a keyturn installation rotates the account, SIGKILLed
   before, inside and after every step, then resumed: one new value per rotation, versions in
   consistent states, the target accepting the current value and refusing the old one, no key
   left behind on an issuing target (orphans of the killed runs reconciled).
3. **no value in any output**: every value seen appears in no log record, exception, CLI
   output, audit entry, notice or rotation error.

A broken invariant raises `InvariantBroken`, whose message starts with the invariant's name.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keyturn import plugins
from keyturn.domain.errors import ReferenceUnresolved
from keyturn.domain.model import Secret, Step, Strategy
from keyturn.engine import strategies
from keyturn.targets.base import Account, Target, TargetContext
from keyturn.testing.world import World

__all__ = [
    "CRASH_POINTS",
    "InvariantBroken",
    "TargetCase",
    "check_no_values",
    "check_rotations",
    "check_target",
    "check_verbs",
]

# Every point a rotation can be killed at: before a step, inside it (its outside effect done,
# its pointer not yet committed) and after it; `create:issued` only on issuing targets.
CRASH_POINTS = [
    f"{step}:{where}"
    for step in Step
    if step != Step.DONE
    for where in ("before", "effect", "after")
    if not (step == Step.WAIT and where == "effect")
] + ["create:issued"]


class InvariantBroken(AssertionError):
    """A plugin broke one of keyturn's invariants; ``invariant`` names it."""

    def __init__(self, invariant: str, detail: str) -> None:
        super().__init__(f"{invariant}: {detail}")
        self.invariant = invariant


def _require(ok: bool, invariant: str, detail: str) -> None:
    if not ok:
        raise InvariantBroken(invariant, detail)


@dataclass
class TargetCase:
    """One account (two for `alternating`) on a target under test.

    *settings* are the target's settings as in an inventory; references in them (`env:NAME`)
    resolve from *env*, then the process environment. *initial* is the value the account
    holds now (None for targets that issue their secrets). *accepts(login, value)* checks a
    login from outside the plugin (a fresh driver connection); by default the plugin's own
    ``test`` on a fresh instance.
    """

    type: str
    settings: dict[str, Any]
    strategy: str = "single"
    logins: tuple[str, ...] = ("app",)
    initial: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    accepts: Callable[[str, Secret], bool] | None = None
    kind: str = "password"

    def __post_init__(self) -> None:
        if self.strategy == Strategy.ALTERNATING and len(self.logins) != 2:
            raise ValueError("an alternating case needs two logins")

    def resolve(self, ref: str) -> Secret:
        scheme, _, rest = ref.partition(":")
        if scheme == "env" and rest in self.env:
            return Secret(self.env[rest])
        if scheme == "env" and rest in os.environ:
            return Secret(os.environ[rest])
        raise ReferenceUnresolved(f"{ref}: not in the case's env")

    def open(self) -> Target:
        """A fresh instance of the plugin with the case's settings."""
        cls = plugins.load_target(self.type)
        return cls.from_settings(self.settings, TargetContext(resolve=self.resolve))

    def login_ok(self, login: str, value: Secret) -> bool:
        if self.accepts is not None:
            return self.accepts(login, value)
        with self.open() as target:
            return target.test(Account(login), value)


@dataclass
class _Seen:
    """Every value the checks handled, and everything that was written, for the leak check."""

    values: list[Secret] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)


class _Capture(logging.Handler):
    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        # keyturn's own records at every level, everyone's from INFO: a driver's DEBUG wire
        # log (botocore prints response bodies) is not something keyturn or a plugin wrote.
        if record.levelno < logging.INFO and not record.name.startswith("keyturn"):
            return
        self.into.append(self.format(record))
        if record.exc_info and record.exc_info[1] is not None:
            self.into.append(repr(record.exc_info[1]))


@contextmanager
def _captured(seen: _Seen) -> Iterator[None]:
    """Every log record (keyturn's at DEBUG, others' from INFO) and every exception that
    escapes, into *seen*."""
    root, handler = logging.getLogger(), _Capture(seen.texts)
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield
    except Exception as exc:
        seen.texts.append(f"{exc!r} {exc}")
        raise
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _replayed(invariant: str, verb: str, call: Callable[[], None], seen: _Seen) -> None:
    """*call* twice: the second run is what a resumed rotation does."""
    call()
    try:
        call()
    except Exception as exc:
        seen.texts.append(f"{exc!r} {exc}")
        raise InvariantBroken(
            invariant, f"replaying {verb} raised {type(exc).__name__}: {exc}"
        ) from exc


# -- 1. the verbs ---------------------------------------------------------------------------


def check_verbs(case: TargetCase, seen: _Seen | None = None) -> tuple[str, Secret | None]:
    """The plugin's verbs against *case*; returns the login and value it holds afterwards."""
    seen = seen or _Seen()
    with _captured(seen), case.open() as target:
        strategy = strategies.for_target(target, case.strategy)
        seen.texts.append(repr(target))
        if type(target).issues_secrets:
            _issuing_verbs(case, target, seen)
            return case.logins[0], None
        assert case.initial is not None, "a case of a target that does not issue needs initial"
        current = Secret(case.initial)
        seen.values.append(current)
        target.ensure(Account(case.logins[0]), current)
        return _rotate_verbs(case, target, strategy, case.logins[0], current, seen)


def _rotate_verbs(
    case: TargetCase,
    target: Target,
    strategy: strategies.RotationStrategy,
    login: str,
    current: Secret,
    seen: _Seen,
) -> tuple[str, Secret]:
    _require(target.test(Account(login), current), "test-accepts-current", f"{login} refused")
    new = target.generate(type(target).password_rules)
    seen.values.append(new)
    new_login = strategy.next_login(list(case.logins), login)
    old_acct, new_acct = Account(login), Account(new_login)
    verb = "add" if case.strategy == Strategy.DUAL else "set"
    _replayed(f"{verb}-idempotent", verb, lambda: strategy.set(new_acct, new, current), seen)
    _require(target.test(new_acct, new), "test-accepts-new", f"{new_login} refused the new value")
    wrong = target.generate(type(target).password_rules)  # well formed, never set
    seen.values.append(wrong)
    _require(not target.test(new_acct, wrong), "test-refuses-wrong", "a wrong value was accepted")
    old_now = target.test(old_acct, current)
    if strategy.old_refused_at_test and new_login == login:
        _require(not old_now, "single-set-replaces", "the old value still works after set")
    else:
        _require(old_now, "old-works-until-revoke", "the old value stopped working before revoke")
    _replayed("revoke-idempotent", "revoke", lambda: strategy.revoke(old_acct, current), seen)
    _require(
        not target.test(old_acct, current),
        "revoke-refuses-old",
        f"after {case.strategy} revoke, {login} still accepts the old value",
    )
    _require(target.test(new_acct, new), "revoke-keeps-new", "revoke broke the new value")
    _require(case.login_ok(new_login, new), "accepts-from-outside", "a fresh login was refused")
    return new_login, new


def _issuing_verbs(case: TargetCase, target: Target, seen: _Seen) -> None:
    acct = Account(case.logins[0])
    before = set(target.list_active(acct))
    issued = target.create(acct)
    seen.values.append(issued.value)
    listed = target.list_active(acct)
    _require(issued.key_id in listed, "create-lists-key", f"{issued.key_id} not in {listed}")
    _require(issued.key_id not in before, "create-new-key", "create returned a key held before")
    key = Account(acct.username, issued.key_id)
    _require(target.test(key, issued.value), "test-accepts-new", "the issued key was refused")
    # Orphans (a killed run's keys) are revoked knowing only their id: the value is empty.
    _replayed("revoke-idempotent", "revoke", lambda: target.revoke(key, Secret("")), seen)
    _require(
        issued.key_id not in target.list_active(acct),
        "revoke-by-key-id",
        f"{issued.key_id} still listed after revoke",
    )
    _require(not target.test(key, issued.value), "revoke-refuses-old", "a revoked key still works")


# -- 2. rotations, killed and resumed -------------------------------------------------------


def _toml(value: Any) -> str:
    """A TOML value: strings, numbers, booleans, arrays and inline tables of them."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def _inventory(case: TargetCase, current_login: str, initial: bool) -> str:
    logins = [current_login] + [n for n in case.logins if n != current_login]
    who = (
        f"usernames = {json.dumps(logins)}"
        if case.strategy == Strategy.ALTERNATING
        else f"username = {json.dumps(logins[0])}"
    )
    settings = "\n".join(f"{k} = {_toml(v)}" for k, v in case.settings.items())
    initial_line = 'initial_secret = "env:KEYTURN_KIT_INITIAL"' if initial else ""
    return f"""
[policies.kit]
grace = "0s"

[targets.kit]
type = "{case.type}"
{settings}

[[credentials]]
id = "kit/cred"
tenant = "kit"
kind = "{case.kind}"
policy = "kit"
target = "kit"
strategy = "{case.strategy}"
{who}
{initial_line}
"""


@dataclass
class _State:
    versions: list[dict[str, Any]]
    rotations: list[dict[str, Any]]

    def of(self, state: str) -> list[dict[str, Any]]:
        return [v for v in self.versions if v["state"] == state]


def _state(world: World) -> _State:
    data = json.loads(world.ok("show", "kit/cred", "--json").out)
    return _State(data["versions"], data["rotations"])


def _value(world: World, previous: bool = False) -> Secret:
    return Secret(world.ok("get", "kit/cred", *(["--previous"] if previous else [])).out.strip())


def _finish(world: World, case: TargetCase) -> None:
    """Resume until the rotation is over (a restarted worker, as often as it takes)."""
    for _ in range(6):
        rotation = max(_state(world).rotations, key=lambda r: r["id"])
        if rotation["status"] in ("done", "failed", "aborted"):
            _require(
                rotation["status"] == "done",
                "rotation-completes",
                f"resumed rotation ended {rotation['status']}: {rotation.get('error')}",
            )
            return
        world.cli("resume", "kit/cred", "--now", env=case.env)
    raise InvariantBroken("rotation-completes", "the resumed rotation did not finish")


def check_rotations(
    case: TargetCase,
    world: World,
    login: str,
    value: Secret | None,
    points: list[str] | None = None,
    seen: _Seen | None = None,
) -> None:
    """Rotate the case's account through keyturn, killed at each of *points* (default every
    one) then resumed; *login* and *value* are what the account holds now."""
    seen = seen or _Seen()
    issuing = plugins.load_target(case.type).issues_secrets
    env = {**case.env, "KEYTURN_KIT_INITIAL": value.reveal() if value else ""}
    world.home.joinpath("keyturn.toml").write_text(_inventory(case, login, value is not None))
    world.ok("apply", "keyturn.toml", env=env)
    if value is None:  # an issuing target: the first rotation makes the first value
        world.ok("rotate", "kit/cred", "--reason", "conformance kit", env=case.env)
        _finish(world, case)
    for point in points if points is not None else CRASH_POINTS:
        if point == "create:issued" and not issuing:
            continue
        _killed_rotation(case, world, point, issuing, seen)


def _killed_rotation(
    case: TargetCase, world: World, point: str, issuing: bool, seen: _Seen
) -> None:
    before = _state(world)
    (old,) = before.of("current")
    old_value = _value(world)
    status = world.killed(point, "rotate", "kit/cred", "--reason", "conformance", env=case.env)
    _require(status == -9, "crash-point-reached", f"{point}: the child exited with {status}")
    _finish(world, case)
    after = _state(world)
    made = [v for v in after.versions if v["number"] > max(v["number"] for v in before.versions)]
    _require(len(made) == 1, "one-new-value", f"killed at {point}: {len(made)} versions were made")
    states = sorted(v["state"] for v in after.versions if v["state"] != "retired")
    _require(states == ["current"], "consistent-states", f"killed at {point}: {states}")
    (new,) = after.of("current")
    current = _value(world)
    seen.values += [old_value, current]
    _require(
        case.login_ok(new["username"] or "", current),
        "target-accepts-current",
        f"killed at {point}: the target refuses the value keyturn holds as current",
    )
    _require(
        not case.login_ok(old["username"] or "", old_value),
        "old-refused",
        f"killed at {point}: the target still accepts the old value",
    )
    if issuing:
        with case.open() as target:
            keys = target.list_active(Account(new["username"] or ""))
        _require(
            keys == [new["key_id"]],
            "orphans-reconciled",
            f"killed at {point}: the target holds {keys}, keyturn knows {new['key_id']}",
        )


# -- 3. no value in any output --------------------------------------------------------------


def check_no_values(world: World | None, seen: _Seen) -> None:
    """None of the values seen appears in anything keyturn or the plugin wrote."""
    texts = list(seen.texts)
    if world is not None:
        texts += world.written()
    for value in seen.values:
        text = value.reveal()
        if len(text) < 6:
            continue
        for written in texts:
            _require(
                text not in written,
                "no-value-in-output",
                "a secret value appears in keyturn's output or logs: "
                + re.sub(re.escape(text), "<the value>", written)[:200],
            )


def check_target(
    case: TargetCase, home: Path, db_url: str | None = None, points: list[str] | None = None
) -> None:
    """Every invariant against *case*, with a keyturn installation in *home* (empty)."""
    seen = _Seen()
    world = World(home, db_url)
    try:
        world.ok("init")
        with _captured(seen):
            login, value = check_verbs(case, seen)
            check_rotations(case, world, login, value, points, seen)
        check_no_values(world, seen)
    finally:
        world.close()
