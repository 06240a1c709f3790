"""Default policies by kind (seed 003) for the kinds of issue 22, and expiry-driven due times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from keyturn.domain.errors import PolicyInvalid
from keyturn.domain.model import PasswordRules
from keyturn.domain.policy import default_for, effective

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("kind", "days"),
    [
        ("aws-access-key", 90),  # seed 003: IAM user access keys, 90 days
        ("aws-iam-key", 90),
        ("aws-ses-smtp", 90),  # SES SMTP credentials are IAM access keys
        ("api-key", 180),  # API keys for external services, 180 days
        ("http-api-key", 180),
        ("tls-certificate", 365),  # SSL/TLS certificates: 1 year or before expiration
    ],
)
def test_every_new_kind_has_its_row(kind: str, days: int) -> None:
    assert default_for(kind).max_age == timedelta(days=days)


def test_certificates_are_due_at_two_thirds_of_their_life_or_at_max_age() -> None:
    policy = default_for("tls-certificate")
    assert policy.renew_at == pytest.approx(2 / 3)
    ninety = (T0, T0 + timedelta(days=90))
    due, notice = policy.due_times(T0, "acme/www", ninety)
    assert due == T0 + timedelta(days=60) and notice == due - timedelta(days=7)
    three_years = (T0, T0 + timedelta(days=3 * 365))
    assert policy.due_times(T0, "acme/www", three_years)[0] == T0 + timedelta(days=365)
    assert policy.due_times(T0, "acme/www")[0] == T0 + timedelta(days=365)  # no validity known


def test_renew_at_is_a_policy_setting_for_any_kind() -> None:
    policy = effective("api-key", {"renew_at": 0.5}, PasswordRules())
    assert policy.due_times(T0, "x", (T0, T0 + timedelta(days=10)))[0] == T0 + timedelta(days=5)
    assert policy.describe()["renew_at"] == 0.5
    for bad in (0, 1, 1.5, -0.1, "2/3", True):
        with pytest.raises(PolicyInvalid, match="renew_at"):
            effective("tls-certificate", {"renew_at": bad}, PasswordRules())
