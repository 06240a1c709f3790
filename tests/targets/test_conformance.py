"""Every built-in target through the conformance kit (keyturn.testing), on its real server.

The kit checks the verbs (replays harmless, the old value refused after each strategy's
revoke), then rotates through keyturn, SIGKILLed at crash points and resumed: one new value,
consistent states, the target accepting the current value and refusing the old one, no value
in any output. Logins are checked from outside the plugin (a fresh driver connection, an SMTP
AUTH), never through the plugin under test.

Each case is killed at a few points of the matrix, spread so that the cases together cover
every point; tests/engine/test_crash.py runs the whole matrix on one target. The PostgreSQL
pass (keyturn's own state there) runs one point per case.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from keyturn.domain.model import Secret
from keyturn.testing import CRASH_POINTS, TargetCase, check_target
from tests.targets.conftest import MysqlSandbox, PgSandbox, RedisSandbox, Refs, new_password
from tests.targets.engine_support import MysqlRig, PgRig, RedisRig
from tests.targets.test_aws_iam import aws  # noqa: F401 (fixture)
from tests.targets.test_dovecot import Mail, mail, user  # noqa: F401 (fixtures)

pytestmark = pytest.mark.state_db

POINTS = [p for p in CRASH_POINTS if p != "create:issued"]
CASES = [
    ("passwd-file", "single"),
    ("passwd-file", "alternating"),
    ("passwd-file", "dual"),
    ("dovecot", "single"),
    ("dovecot", "dual"),
    ("postgres", "single"),
    ("postgres", "alternating"),
    ("mysql", "single"),
    ("mysql", "alternating"),
    ("redis", "single"),
    ("redis", "dual"),
]


def points_for(index: int) -> list[str]:
    """Case *index*'s share of the crash matrix (all cases together: every point)."""
    mine = POINTS[index % len(POINTS) :: len(CASES)] or [POINTS[index % len(POINTS)]]
    if os.environ.get("KEYTURN_TEST_DB") == "postgres":
        return mine[:1]
    return mine


def test_the_cases_cover_every_crash_point() -> None:
    covered = {p for i in range(len(CASES)) for p in points_for(i)}
    assert covered == set(POINTS) or os.environ.get("KEYTURN_TEST_DB") == "postgres"


def _env(refs: Refs) -> dict[str, str]:
    return {ref[4:]: value.reveal() for ref, value in refs.values.items() if ref[:4] == "env:"}


def _logins(prefix: str, strategy: str) -> tuple[str, ...]:
    return (
        (prefix + "app", prefix + "app_clone") if strategy == "alternating" else (prefix + "app",)
    )


def _accepts(check: Callable[[str, str], bool]) -> Callable[[str, Secret], bool]:
    return lambda login, value: check(login, value.reveal())


def passwd_file_case(tmp_path: Path, strategy: str) -> TargetCase:
    settings: dict[str, Any] = {"path": str(tmp_path / "passwd")}
    if strategy == "dual":
        settings["secondary_path"] = str(tmp_path / "passwd2")
    logins = ("app", "app_clone") if strategy == "alternating" else ("app",)
    return TargetCase("passwd-file", settings, strategy, logins, new_password())


def dovecot_case(request: pytest.FixtureRequest, strategy: str) -> TargetCase:
    server: Mail = request.getfixturevalue("mail")
    login: str = request.getfixturevalue("user")
    settings: dict[str, Any] = {
        "path": str(server.passwd),
        "smtp_host": server.host,
        "smtp_port": server.port,
        "smtp_tls": "none",
    }
    if strategy == "dual":
        settings["secondary_path"] = str(server.passwd2)
    return TargetCase(
        "dovecot", settings, strategy, (login,), new_password(), accepts=_accepts(server.login)
    )


def postgres_case(request: pytest.FixtureRequest, refs: Refs, strategy: str) -> TargetCase:
    box: PgSandbox = request.getfixturevalue("pg")
    extra = {"owner_role": box.prefix + "owner"} if strategy == "alternating" else {}
    logins = _logins(box.prefix, strategy)
    rig = PgRig(None, strategy, list(logins), box=box)  # type: ignore[arg-type]
    settings = box.settings(refs, **extra)
    return TargetCase(
        "postgres", settings, strategy, logins, new_password(), _env(refs), _accepts(rig.accepts)
    )


def mysql_case(request: pytest.FixtureRequest, refs: Refs, strategy: str) -> TargetCase:
    box: MysqlSandbox = request.getfixturevalue("mysql")
    extra = {"default_role": box.prefix + "role"} if strategy == "alternating" else {}
    logins = _logins(box.prefix, strategy)
    rig = MysqlRig(None, strategy, list(logins), box=box)  # type: ignore[arg-type]
    settings = box.settings(refs, **extra)
    return TargetCase(
        "mysql", settings, strategy, logins, new_password(), _env(refs), _accepts(rig.accepts)
    )


def redis_case(request: pytest.FixtureRequest, refs: Refs, strategy: str) -> TargetCase:
    box: RedisSandbox = request.getfixturevalue("redis_box")
    logins = _logins(box.prefix, strategy)
    rig = RedisRig(None, strategy, list(logins), box=box)  # type: ignore[arg-type]
    return TargetCase(
        "redis",
        box.settings(refs),
        strategy,
        logins,
        new_password(),
        _env(refs),
        _accepts(rig.accepts),
    )


@pytest.mark.parametrize(("kind", "strategy"), CASES, ids=[f"{k}-{s}" for k, s in CASES])
def test_builtin_target_passes_the_kit(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    db_url: str,
    refs: Refs,
    kind: str,
    strategy: str,
) -> None:
    if kind == "passwd-file":
        case = passwd_file_case(tmp_path, strategy)
    elif kind == "dovecot":
        case = dovecot_case(request, strategy)
    elif kind == "postgres":
        case = postgres_case(request, refs, strategy)
    elif kind == "mysql":
        case = mysql_case(request, refs, strategy)
    else:
        case = redis_case(request, refs, strategy)
    home = tmp_path / ("kit-" + secrets.token_hex(3))
    check_target(case, home, db_url, points=points_for(CASES.index((kind, strategy))))


# -- targets on doubles and application databases ------------------------------------------

DOUBLE_CASES = [
    ("mailu", "single", ["create:effect", "test:effect"]),
    ("mailu-token", "dual", ["create:issued", "revoke:before"]),
    ("encrypted-column", "single", ["set:effect", "finish:after"]),
    ("http-api-key", "dual", ["create:issued", "finish:effect"]),
    ("aws-iam-key", "dual", ["create:issued", "wait:before"]),
]
MAILU_USER = "admin@acme.example"


def mailu_case(request: pytest.FixtureRequest, kind: str, strategy: str) -> TargetCase:
    """MailU's admin API and SMTP front as tests.support.mailu_double follows them."""
    from tests.support.mailu_double import MailuDouble

    double = MailuDouble().start(smtp=True)
    request.addfinalizer(double.stop)
    initial = new_password()
    double.add_user(MAILU_USER, initial)
    settings = {
        "url": double.url,
        "api_token": "env:MAILU_API_TOKEN",
        "smtp_host": "127.0.0.1",
        "smtp_port": double.smtp_port,
        "smtp_tls": "none",
    }
    return TargetCase(
        kind,
        settings,
        strategy,
        (MAILU_USER,),
        None if kind == "mailu-token" else initial,
        {"MAILU_API_TOKEN": str(double.api_token)},
        _accepts(double.accepts),
        kind="smtp",
    )


def encrypted_column_case(tmp_path: Path) -> TargetCase:
    """An application table of rows encrypted under the key (SQLite)."""
    from tests.rekey.app_db import AppTable, new_key

    url = f"sqlite:///{tmp_path / 'app.db'}"
    initial = new_key("fernet")
    AppTable(url, "fernet").create(initial, 20)
    settings = {
        "url": "env:APP_DB_URL",
        "table": "totp_secrets",
        "value_column": "secret",
        "batch_size": 7,
    }
    return TargetCase(
        "encrypted-column",
        settings,
        "single",
        ("app",),
        initial,
        {"APP_DB_URL": url},
        kind="encryption-key",
    )


def http_api_key_case(request: pytest.FixtureRequest) -> TargetCase:
    """A key-issuing SaaS API as tests.support.keyapi_double follows it."""
    from tests.support.keyapi_double import KeyApi
    from tests.targets.test_http_api_key import settings

    api = KeyApi().serve()
    request.addfinalizer(api.close)
    env = {"KT_KEYAPI_ADMIN": api.admin_token}
    accepts = _accepts(lambda login, value: api.accepts(value))
    return TargetCase("http-api-key", settings(api), "dual", ("billing",), None, env, accepts)


def aws_iam_case(request: pytest.FixtureRequest) -> TargetCase:
    """IAM access keys on moto's server behind tests.support.aws_double (stricter than moto:
    inactive keys and a third key refused); a key is checked with a fresh STS call."""
    from keyturn.targets.aws_iam import parse_pair
    from tests.targets.test_aws_iam import Aws

    iam: Aws = request.getfixturevalue("aws")
    login = f"kte-{secrets.token_hex(4)}"
    iam.iam.create_user(UserName=login)

    def drop() -> None:
        for key_id in iam.keys(login):
            iam.iam.delete_access_key(UserName=login, AccessKeyId=key_id)
        iam.iam.delete_user(UserName=login)

    request.addfinalizer(drop)
    env = {"KT_AWS_ADMIN_ID": iam.admin_id, "KT_AWS_ADMIN_SECRET": iam.admin_secret}

    def works(_login: str, value: Secret) -> bool:
        pair = parse_pair(value, "kit")
        return iam.works(pair.access_key_id, pair.secret_access_key.reveal())

    return TargetCase(
        "aws-iam-key", iam.settings(), "dual", (login,), None, env, works, kind="aws-access-key"
    )


@pytest.mark.parametrize(
    ("kind", "strategy", "points"), DOUBLE_CASES, ids=[k for k, _, _ in DOUBLE_CASES]
)
def test_builtin_target_on_a_double_passes_the_kit(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    db_url: str,
    kind: str,
    strategy: str,
    points: list[str],
) -> None:
    if kind.startswith("mailu"):
        case = mailu_case(request, kind, strategy)
    elif kind == "http-api-key":
        case = http_api_key_case(request)
    elif kind == "aws-iam-key":
        case = aws_iam_case(request)
    else:
        case = encrypted_column_case(tmp_path)
    if os.environ.get("KEYTURN_TEST_DB") == "postgres":
        points = points[:1]
    check_target(case, tmp_path / "kit", db_url, points=points)
