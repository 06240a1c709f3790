"""`keyturn report` and `keyturn metrics` in remote mode (KEYTURN_URL, KEYTURN_TOKEN): through
a real `keyturn serve` (uvicorn in a thread), the same output as locally, the gate included."""

from __future__ import annotations

import json

from prometheus_client.parser import text_string_to_metric_families

from keyturn import auth
from tests.cli.test_remote import remote, served  # noqa: F401  (the served fixture)
from tests.support.keyturn import Harness

AT = "2031-01-01T00:00:00Z"  # far enough for the credential to be overdue and unused


def test_report_through_the_api_is_the_local_report(kt: Harness, served: str) -> None:  # noqa: F811
    env = remote(kt, served, role="auditor")
    for args in (
        ("--format", "json"),
        ("--json", "--weeks", "3", "--unused-days", "10"),
        ("--format", "csv", "--kind", "smtp"),
        ("--format", "html", "--tenant", "acme"),
        (),  # the table
    ):
        local = kt.cli("report", "--at", AT, *args)
        over = kt.cli("report", "--at", AT, *args, env=env)
        assert over.code == 0 == local.code, over.err
        assert over.out == local.out, args
    data = json.loads(kt.cli("report", "--at", AT, "--json", env=env).out)
    assert [r["id"] for r in data["credentials"]] == ["acme/smtp-admin"]
    written = kt.cli("report", "--at", AT, "-f", "csv", "-o", "out.csv", env=env)
    assert written.code == 0 and (kt.home / "out.csv").read_text().startswith("id,")


def test_the_gate_works_remotely(kt: Harness, served: str) -> None:  # noqa: F811
    env = remote(kt, served, role="operator")
    failed = kt.cli("report", "--at", AT, "--fail-on", "rotated-within-max-age", env=env)
    assert failed.code == 1
    assert failed.err.strip().splitlines() == [
        "error: 1 credential(s) fail rotated-within-max-age: acme/smtp-admin"
    ]
    local = kt.cli("report", "--at", AT, "--fail-on", "rotated-within-max-age")
    assert local.code == 1 and local.err == failed.err
    # The gate on CSV output too (the server's CSV, the JSON's findings).
    csv_gate = kt.cli("report", "--at", AT, "-f", "csv", "--fail-on", "all", env=env)
    assert csv_gate.code == 1 and csv_gate.out.startswith("id,")
    passed = kt.cli("report", "--fail-on", "rotation-enabled,last-rotation-succeeded", env=env)
    assert passed.code == 0, passed.err
    unknown = kt.cli("report", "--fail-on", "nope", env=env)
    assert unknown.code == 1 and "unknown rule 'nope'" in unknown.err


def test_metrics_and_refusals_through_the_api(kt: Harness, served: str) -> None:  # noqa: F811
    env = remote(kt, served, role="auditor")
    over = kt.cli("metrics", env=env)
    assert over.code == 0, over.err
    names = {family.name for family in text_string_to_metric_families(over.out)}
    assert "keyturn_credential_age_seconds" in names
    # A consumer token may read neither: the server's 403 as one line.
    with kt.app.db.write() as session:
        token = auth.create_token(session, "consumer", ["acme/*"], name="app").token
    consumer = {**env, "KEYTURN_TOKEN": token}
    for args in (("report",), ("metrics",)):
        refused = kt.cli(*args, env=consumer)
        assert refused.code == 1 and len(refused.err.strip().splitlines()) == 1, args
        assert "consumer token may not do report.read" in refused.err
