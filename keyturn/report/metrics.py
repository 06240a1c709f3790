"""Prometheus metrics, computed from keyturn's database at each scrape.

Every figure comes from what the database holds (the compliance report, the rotations
table, the audit log, the outbox), so N workers and N servers over one database expose the
same numbers and nothing is lost when a process restarts. Labels are credential ids,
tenants, kinds, rules, triggers, steps and statuses: never a secret or a fingerprint.
Counters (`*_total`) count append-only audit entries, so they only grow.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import datetime

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from keyturn.app import Keyturn
from keyturn.db.models import AuditEntry, Consumer, Credential, Notice, Rotation, Version, utcnow
from keyturn.domain.model import ACTIVE_STATUSES
from keyturn.report import Report, build
from keyturn.report.rules import RULE_IDS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# The audit entry that ends each step of the protocol.
STEP_OF = {
    "rotation.create": "create",
    "rotation.set": "set",
    "rotation.test": "test",
    "rotation.publish": "publish",
    "rotation.promote": "finish",
    "rotation.wait-over": "wait",
    "rotation.revoke": "revoke",
}
FAILURES = ("rotation.retry", "rotation.failed")
FINISHES = {"rotation.done": "done", "rotation.failed": "failed", "rotation.abort": "aborted"}
BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0, 86400.0)
CRED = ("credential", "tenant", "kind")


def credential_metrics(report: Report) -> Iterator[Metric]:
    """Per credential: age, max age, seconds until due; per tenant: counts and findings."""
    age = GaugeMetricFamily(
        "keyturn_credential_age_seconds", "Age of the current version.", labels=CRED
    )
    max_age = GaugeMetricFamily(
        "keyturn_credential_max_age_seconds", "Max age its policy allows.", labels=CRED
    )
    due = GaugeMetricFamily(
        "keyturn_credential_due_in_seconds",
        "Seconds until the credential is due for rotation (negative: overdue).",
        labels=CRED,
    )
    for row in report.rows:
        labels = [row.id, row.tenant, row.kind]
        max_age.add_metric(labels, row.max_age_days * 86400)
        if row.last_rotation is not None:
            age.add_metric(labels, (report.at - row.last_rotation).total_seconds())
        if row.next_rotation is not None:
            due.add_metric(labels, (row.next_rotation - report.at).total_seconds())
    yield from (age, max_age, due)
    yield from _compliance(report)


def _compliance(report: Report) -> Iterator[Metric]:
    creds = GaugeMetricFamily(
        "keyturn_credentials", "Credentials in the inventory.", labels=["tenant"]
    )
    compliant = GaugeMetricFamily(
        "keyturn_credentials_compliant", "Credentials that pass every rule.", labels=["tenant"]
    )
    findings = GaugeMetricFamily(
        "keyturn_compliance_findings",
        "Credentials failing each compliance rule (docs/compliance.md).",
        labels=["tenant", "rule"],
    )
    drift = GaugeMetricFamily(
        "keyturn_credentials_drifted",
        "Credentials whose target refused the current value, or a store lacks it.",
        labels=["tenant", "where"],
    )
    refused = Counter(r.tenant for r in report.rows if r.sync == "out-of-sync")
    for tenant, summary in report.by_tenant.items():
        creds.add_metric([tenant], summary.credentials)
        compliant.add_metric([tenant], summary.compliant)
        for rule in RULE_IDS:
            findings.add_metric([tenant, rule], summary.findings[rule])
        drift.add_metric([tenant, "target"], refused[tenant])
        drift.add_metric([tenant, "store"], summary.findings["store-in-sync"])
    yield from (creds, compliant, findings, drift)


def _trigger(details: dict[str, object], triggers: dict[int, str], rotation: object) -> str:
    trigger = details.get("trigger")
    if isinstance(trigger, str):
        return trigger
    return triggers.get(rotation, "unknown") if isinstance(rotation, int) else "unknown"


def rotation_metrics(session: Session, tenant: str | None) -> Iterator[Metric]:
    """Rotations by trigger and outcome, failures, step durations (from the audit log) and
    the rotations in progress (from the rotations table)."""
    rotations = select(Rotation.id, Rotation.trigger, Rotation.started_at)
    if tenant:
        rotations = rotations.join(Credential, Credential.id == Rotation.credential_id).where(
            Credential.tenant_id == tenant
        )
    started: dict[int, datetime] = {}
    triggers: dict[int, str] = {}
    for rid, trigger, at in session.execute(rotations):
        started[rid], triggers[rid] = at, trigger
    finished = CounterMetricFamily(
        "keyturn_rotations",
        "Rotations finished, by trigger and outcome.",
        labels=["trigger", "outcome"],
    )
    failures = CounterMetricFamily(
        "keyturn_rotation_failures",
        "Failed rotation attempts, by trigger and step.",
        labels=["trigger", "step"],
    )
    finishes: Counter[tuple[str, str]] = Counter()
    failed: Counter[tuple[str, str]] = Counter()
    durations: dict[str, list[float]] = defaultdict(list)
    last: dict[int, datetime] = {}
    actions = [*STEP_OF, *FAILURES, *FINISHES]
    query = select(AuditEntry.action, AuditEntry.at, AuditEntry.details).where(
        AuditEntry.action.in_(actions)
    )
    if tenant:
        query = query.where(AuditEntry.tenant_id == tenant)
    for action, at, details in session.execute(query.order_by(AuditEntry.seq)):
        rid = details.get("rotation")
        if rid not in started:
            continue
        trigger = _trigger(details, triggers, rid)
        if action in FINISHES:
            finishes[(trigger, FINISHES[action])] += 1
        if action in FAILURES:
            failed[(trigger, str(details.get("step", "unknown")))] += 1
        if action in STEP_OF:
            durations[STEP_OF[action]].append((at - last.get(rid, started[rid])).total_seconds())
        last[rid] = at
    for (trigger, outcome), n in sorted(finishes.items()):
        finished.add_metric([trigger, outcome], n)
    for (trigger, step), n in sorted(failed.items()):
        failures.add_metric([trigger, step], n)
    yield from (finished, failures, _histogram(durations))
    yield _active(session, tenant)


def _histogram(durations: dict[str, list[float]]) -> Metric:
    family = HistogramMetricFamily(
        "keyturn_rotation_step_duration_seconds",
        "Time each step of the rotation protocol took, from the previous recorded event.",
        labels=["step"],
    )
    for step in STEP_OF.values():
        values = durations.get(step, [])
        if not values:
            continue
        cumulative = [(f"{b:g}", float(sum(v <= b for v in values))) for b in BUCKETS]
        cumulative.append(("+Inf", float(len(values))))
        family.add_metric([step], cumulative, sum_value=sum(values))
    return family


def _active(session: Session, tenant: str | None) -> Metric:
    family = GaugeMetricFamily(
        "keyturn_rotations_in_progress",
        "Rotations running, waiting or retrying.",
        labels=["status"],
    )
    query = (
        select(Rotation.status, func.count())
        .where(Rotation.status.in_(ACTIVE_STATUSES))
        .group_by(Rotation.status)
    )
    if tenant:
        query = query.join(Credential, Credential.id == Rotation.credential_id).where(
            Credential.tenant_id == tenant
        )
    counts = {str(k): int(n) for k, n in session.execute(query)}
    for status in ACTIVE_STATUSES:
        family.add_metric([str(status)], counts.get(status, 0))
    return family


def outbox_metrics(session: Session, tenant: str | None) -> Iterator[Metric]:
    """Notices by status, the outbox's depth (still to deliver), lagging consumers."""
    notices = GaugeMetricFamily(
        "keyturn_notices", "Notices in the outbox, by status.", labels=["status"]
    )
    query = select(Notice.status, func.count()).group_by(Notice.status)
    if tenant:
        query = query.where(Notice.tenant_id == tenant)
    counts = {str(k): int(n) for k, n in session.execute(query)}
    for status, n in sorted(counts.items()):
        notices.add_metric([status], n)
    depth = GaugeMetricFamily(
        "keyturn_outbox_depth", "Notices still to deliver (pending or retrying)."
    )
    depth.add_metric([], counts.get("pending", 0) + counts.get("retrying", 0))
    lagging = GaugeMetricFamily(
        "keyturn_consumers_lagging",
        "Consumers that have not reported the current version.",
        labels=["tenant"],
    )
    behind = (
        select(Credential.tenant_id, func.count())
        .select_from(Consumer)
        .join(Credential, Credential.id == Consumer.credential_id)
        .join(
            Version,
            (Version.credential_id == Consumer.credential_id) & (Version.state == "current"),
        )
        .where((Consumer.version.is_(None)) | (Consumer.version < Version.number))
        .group_by(Credential.tenant_id)
    )
    if tenant:
        behind = behind.where(Credential.tenant_id == tenant)
    for name, n in sorted((str(t), int(c)) for t, c in session.execute(behind)):
        lagging.add_metric([name], n)
    yield from (notices, depth, lagging)


class KeyturnCollector(Collector):
    """Collects every keyturn metric at scrape time; *tenant* limits it to one tenant."""

    def __init__(self, app: Keyturn, *, tenant: str | None = None, at: datetime | None = None):
        self.app, self.tenant, self.at = app, tenant, at

    def collect(self) -> Iterator[Metric]:
        report = build(self.app, at=self.at or utcnow(), tenant=self.tenant, trend_weeks=1)
        yield from credential_metrics(report)
        with self.app.db.read() as session:
            yield from rotation_metrics(session, self.tenant)
            yield from outbox_metrics(session, self.tenant)


def exposition(app: Keyturn, *, tenant: str | None = None, at: datetime | None = None) -> bytes:
    """The text exposition format (what `/metrics` serves and `keyturn metrics` prints)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(KeyturnCollector(app, tenant=tenant, at=at))
    return generate_latest(registry)
