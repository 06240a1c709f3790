"""Remote mode: with KEYTURN_URL and KEYTURN_TOKEN the CLI works through a real
`keyturn serve` (uvicorn on loopback, in a thread), with the same output as locally."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest

from keyturn import auth
from keyturn.cli.serve import build_server
from tests.engine.conftest import stop_at
from tests.servers import unused_port
from tests.support.keyturn import Harness

INVENTORY = """
[targets.mail]
type = "passwd-file"
path = "mail.passwd"

[[credentials]]
id = "acme/smtp-admin"
tenant = "acme"
kind = "smtp"
target = "mail"
username = "admin@acme.example"
initial_secret = "env:PW"
"""
PW = "remote-Password-0042-xyz"


@pytest.fixture
def served(kt: Harness) -> Iterator[str]:
    kt.write("keyturn.toml", INVENTORY)
    assert kt.cli("apply", "keyturn.toml", env={"PW": PW}).code == 0
    port = unused_port()
    server = build_server(kt.app, "127.0.0.1", port, log_level="warning")
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def remote(kt: Harness, url: str, role: str = "admin", name: str = "ops-bot") -> dict[str, str]:
    with kt.app.db.write() as session:
        token = auth.create_token(session, role, name=name).token
    return {"KEYTURN_URL": url, "KEYTURN_TOKEN": token}


def test_commands_work_through_the_api_with_local_output(kt: Harness, served: str) -> None:
    env = remote(kt, served)
    local = json.loads(kt.cli("list", "--json").out)
    over = kt.cli("list", "--json", env=env)
    assert over.code == 0, over.err
    assert json.loads(over.out) == local
    rotated = kt.cli("rotate", "acme/smtp-admin", "--reason", "from afar", env=env)
    assert rotated.out.strip() == "acme/smtp-admin: rotated to version 2 (rotation 1)"
    got = json.loads(kt.cli("get", "acme/smtp-admin", "--json", env=env).out)
    assert got["version"] == 2 and got["value"] == kt.cli("get", "acme/smtp-admin").out.strip()
    assert kt.cli("get", "acme/smtp-admin", "--previous", env=env).code == 1  # revoked (single)
    shown = json.loads(kt.cli("show", "acme/smtp-admin", "--json", env=env).out)
    (rot,) = shown["rotations"]
    assert rot["status"] == "done" and rot["reason"] == "from afar"
    assert rot["actor"].startswith("token:") and rot["actor"].endswith("(ops-bot)")
    assert [s["step"] for s in rot["steps"]][-1] == "done"
    verified = kt.cli("verify", env=env)
    assert verified.code == 0 and "1 in-sync" in verified.out
    assert "ops-bot" in kt.cli("token", "list", env=env).out
    assert kt.cli("doctor", env=env).code == 0
    deleted = kt.cli("delete", "acme/smtp-admin", "--reason", "gone", env=env)
    assert deleted.code == 0 and "was not touched" in deleted.out
    assert json.loads(kt.cli("list", "--json").out) == []


@pytest.mark.parametrize(
    "args", [("init",), ("apply", "keyturn.toml"), ("run-due",), ("audit", "verify"), ("rekey",)]
)
def test_local_only_commands_refuse_in_one_line(kt: Harness, args: tuple[str, ...]) -> None:
    env = {"KEYTURN_URL": "http://127.0.0.1:9", "KEYTURN_TOKEN": "kt_x"}
    result = kt.cli(*args, env=env)
    assert result.code == 1 and len(result.err.strip().splitlines()) == 1
    assert "not available in remote mode" in result.err and "remote commands:" in result.err


def test_remote_errors_are_one_line(kt: Harness, served: str) -> None:
    env = remote(kt, served, role="auditor")
    denied = kt.cli("rotate", "acme/smtp-admin", "--reason", "x", env=env)
    assert denied.code == 1 and "may not" in denied.err.lower()
    bad = kt.cli("list", env={"KEYTURN_URL": served, "KEYTURN_TOKEN": "kt_" + "x" * 43})
    assert bad.code == 1 and "KEYTURN_TOKEN was refused" in bad.err
    missing = kt.cli("show", "acme/nope", env=env)
    assert missing.err.strip() == "error: no credential 'acme/nope'"
    down = kt.cli(
        "list", env={"KEYTURN_URL": f"http://127.0.0.1:{unused_port()}", "KEYTURN_TOKEN": "kt_x"}
    )
    assert down.code == 1 and "cannot reach keyturn" in down.err
    no_token = kt.cli("list", env={"KEYTURN_URL": served})
    assert no_token.code == 1 and "KEYTURN_TOKEN is not" in no_token.err


def test_plain_http_is_refused_beyond_loopback(kt: Harness) -> None:
    result = kt.cli("list", env={"KEYTURN_URL": "http://keyturn.example", "KEYTURN_TOKEN": "kt_x"})
    assert result.code == 1 and "https://" in result.err and "kt_x" not in result.err


def test_get_prints_the_value_the_target_accepts_mid_rotation(kt: Harness, served: str) -> None:
    """Over the API as locally: once a `single` rotation's `set` is done, `get` prints the
    new value (the SDK's first pick), and --previous still asks for that version alone."""
    env = remote(kt, served)
    stop_at(kt, "test:before")
    local = json.loads(kt.cli("get", "acme/smtp-admin", "--json").out)
    assert local["state"] == "pending" and local["value"] != PW
    over = kt.cli("get", "acme/smtp-admin", "--json", env=env)
    assert over.code == 0, over.err
    got = json.loads(over.out)
    assert (got["state"], got["value"], got["on_target"]) == ("pending", local["value"], True)
    assert "previous" not in got and "next" not in got and "(pending)" in over.err
    assert kt.cli("get", "acme/smtp-admin", "--previous", env=env).code == 1  # none yet


def test_run_through_the_api_says_what_went_wrong_in_one_line(kt: Harness, served: str) -> None:
    with kt.app.db.write() as session:
        consumer = auth.create_token(session, "consumer", ["acme/*"], name="nightly").token
    for credential, token, url, says in (
        ("acme/nope", consumer, served, "no credential 'acme/nope'"),
        ("acme/smtp-admin", "kt_" + "x" * 43, served, "401"),
        ("acme/smtp-admin", consumer, f"http://127.0.0.1:{unused_port()}", "Connect"),
    ):
        args = ("run", "--consumer", "nightly", "--env", f"PW={credential}", "--", "true")
        bad = kt.cli(*args, env={"KEYTURN_URL": url, "KEYTURN_TOKEN": token})
        assert bad.code == 1 and len(bad.err.strip().splitlines()) == 1, bad.err
        assert bad.err.startswith("error:") and says in bad.err, bad.err
        assert "internal error" not in bad.err and PW not in bad.err + bad.out
