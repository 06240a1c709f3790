from __future__ import annotations

from datetime import timedelta

import pytest

from keyturn.domain.durations import format_duration, parse_duration
from keyturn.domain.errors import InvalidId, PolicyInvalid
from keyturn.domain.ids import validate_id
from keyturn.domain.model import PasswordRules, Secret, Step, next_step
from keyturn.domain.policy import default_for, effective


@pytest.mark.parametrize("good", ["acme/smtp-admin", "a", "a.b/c_d-e/0", "x" * 200])
def test_valid_ids(good: str) -> None:
    assert validate_id(good) == good


@pytest.mark.parametrize(
    "bad",
    [
        "../x",
        "a//b",
        "A B",
        "x" * 201,
        "a/../b",
        "/a",
        "a/",
        "",
        "a/./b",
        "é",
        "a\nb",
        "a\x00b",
        "x" * 10_000,
    ],
)
def test_invalid_ids(bad: str) -> None:
    with pytest.raises(InvalidId) as caught:
        validate_id(bad)
    assert len(str(caught.value)) < 200  # the error quotes a shortened id, never 10 kB


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("180d", timedelta(days=180)),
        ("7d", timedelta(days=7)),
        ("12h", timedelta(hours=12)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("2w", timedelta(weeks=2)),
        ("0s", timedelta(0)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("bad", ["", "180", "d", "1y", "-1d", "1.5d", "1d 2h", "180days"])
def test_bad_durations(bad: str) -> None:
    with pytest.raises(PolicyInvalid, match=r"e\.g\."):
        parse_duration(bad)


def test_format_round_trip() -> None:
    assert format_duration(parse_duration("1d12h30m")) == "1d12h30m"


def test_secret_never_shows_itself() -> None:
    value = Secret("hunter2-very-secret")
    assert "hunter2" not in repr(value) and "hunter2" not in str(value)
    assert "hunter2" not in f"{value} {[value]} { ({'v': value}) }"
    assert value == Secret("hunter2-very-secret") and value != Secret("other")
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(value)


def test_steps_in_order() -> None:
    assert [s.value for s in Step] == [
        "create",
        "set",
        "test",
        "publish",
        "finish",
        "wait",
        "revoke",
        "done",
    ]
    assert next_step(Step.FINISH) == Step.WAIT


def test_kind_defaults_follow_sec02_bp05() -> None:
    assert default_for("postgres").max_age == timedelta(days=60)
    assert default_for("api-key").max_age == timedelta(days=180)
    assert default_for("tls-certificate").max_age == timedelta(days=365)
    assert default_for("smtp").max_age == timedelta(days=180)
    assert default_for("smtp").notice == timedelta(days=7)
    assert default_for("smtp").schedule == "0 2 * * *"


def test_policy_overrides_and_checks() -> None:
    policy = effective("smtp", {"max_age": "30d", "grace": "1h"}, PasswordRules())
    assert policy.max_age == timedelta(days=30) and policy.grace == timedelta(hours=1)
    with pytest.raises(PolicyInvalid, match="shorter than max_age"):
        effective("smtp", {"max_age": "5d", "notice": "7d"}, PasswordRules())
