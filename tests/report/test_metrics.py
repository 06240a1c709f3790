"""`/metrics` and `keyturn metrics`: parsed with prometheus-client's own text parser, their
figures are the JSON report's; labels carry no secret; the route wants a reader's token."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from keyturn.db.models import utcnow
from keyturn.report import RULE_IDS, build
from keyturn.report.metrics import exposition
from tests.api.conftest import CRED, GLOBEX, GLOBEX_PW, OTHER_PW, Api
from tests.engine.conftest import INITIAL

# On the PostgreSQL pass too: the metrics' queries differ by backend.
pytestmark = pytest.mark.state_db


def samples(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = tuple(sorted(sample.labels.items()))
            out.setdefault(sample.name, {})[key] = sample.value
    return out


def rotate(api: Api) -> None:
    response = api.call("admin", "POST", f"/credentials/{CRED}/rotate", json={"reason": "test"})
    assert response.status_code in (200, 202), response.text


def test_metrics_match_the_json_report(api: Api) -> None:
    rotate(api)
    api.faults(set="reject")
    api.call("admin", "POST", f"/credentials/{CRED}/rotate", json={"reason": "fails"})
    moment = utcnow() + timedelta(days=200)
    report = build(api.kt.app, at=moment, trend_weeks=1).to_dict()
    got = samples(exposition(api.kt.app, at=moment).decode())
    rows = {r["id"]: r for r in report["credentials"]}
    ages = {dict(k)["credential"]: v for k, v in got["keyturn_credential_age_seconds"].items()}
    assert set(ages) == set(rows)
    for cid, seconds in ages.items():
        assert abs(seconds / 86400 - rows[cid]["age_days"]) <= 0.005
    due = {dict(k)["credential"]: v for k, v in got["keyturn_credential_due_in_seconds"].items()}
    assert set(due) == {cid for cid, row in rows.items() if row["next_rotation"]}
    for cid, seconds in due.items():
        when = datetime.fromisoformat(rows[cid]["next_rotation"].replace("Z", "+00:00"))
        assert abs(seconds - (when - moment).total_seconds()) < 1e-3
        assert seconds < 0  # 200 days on, everything is overdue
    for tenant, summary in report["by_tenant"].items():
        assert got["keyturn_credentials"][(("tenant", tenant),)] == summary["credentials"]
        assert got["keyturn_credentials_compliant"][(("tenant", tenant),)] == summary["compliant"]
        for rule in RULE_IDS:
            key = (("rule", rule), ("tenant", tenant))
            assert got["keyturn_compliance_findings"][key] == summary["findings"][rule]
    finished = got["keyturn_rotations_total"]
    assert finished[(("outcome", "done"), ("trigger", "manual"))] == 1
    assert sum(got["keyturn_rotation_failures_total"].values()) >= 1
    counts = got["keyturn_rotation_step_duration_seconds_count"]
    assert counts[(("step", "set"),)] >= 1 and counts[(("step", "revoke"),)] == 1
    assert got["keyturn_rotations_in_progress"][(("status", "retrying"),)] == 1
    assert "keyturn_outbox_depth" in got


def test_metrics_route_wants_a_reader_and_scopes_by_tenant(api: Api) -> None:
    rotate(api)
    assert api.client.get("/metrics").status_code == 401
    assert api.client.get("/metrics", headers=_bearer(api, "consumer")).status_code == 403
    response = api.client.get("/metrics", headers=_bearer(api, "auditor"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    got = samples(response.text)
    tenants = {dict(k)["tenant"] for k in got["keyturn_credentials"]}
    assert tenants == {"acme", "globex"}
    api.token("acme-auditor", "auditor", tenant="acme")
    scoped = samples(api.client.get("/metrics", headers=_bearer(api, "acme-auditor")).text)
    assert {dict(k)["tenant"] for k in scoped["keyturn_credentials"]} == {"acme"}
    assert GLOBEX not in json.dumps(list(scoped["keyturn_credential_age_seconds"]))
    # No value, of any version, in what was exposed.
    for value in (*api.all_values(), INITIAL, OTHER_PW, GLOBEX_PW):
        assert value not in response.text


def test_keyturn_metrics_prints_one_exposition(api: Api) -> None:
    result = api.kt.cli("metrics")
    assert result.code == 0, result.err
    got = samples(result.out)
    assert got["keyturn_credentials"][(("tenant", "acme"),)] == 2


def _bearer(api: Api, who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api.tokens[who]}"}
