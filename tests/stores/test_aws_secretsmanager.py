"""The aws-secretsmanager store against a double: moto in server mode on loopback.

AWS cannot run here; moto's server (started by scripts/services.d/aws.sh, request
signatures checked) speaks the Secrets Manager API boto3 speaks to AWS, staging labels and
ClientRequestToken idempotency included. One gap: moto's default version does not follow
AWSCURRENT when `update_secret_version_stage` moves it (AWS's does), so reads here name the
stage, as the store itself does; and a `put_secret_value` that moves AWSCURRENT leaves it
on the old version too (moto moves AWSPREVIOUS from its stale default version), so a write
by "someone else" here is AWS's other path: a version put with a label of its own, then
AWSCURRENT moved onto it, which moto does as AWS does.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from keyturn import runtime
from keyturn.db.models import StoreRow
from keyturn.domain.model import Secret
from keyturn.stores.aws_secretsmanager import AwsSecretsManagerStore, request_token
from keyturn.stores.base import Numbered, PublishView, StoreContext, StoreRefused
from tests.stores.conftest import Rig, need, written
from tests.support.keyturn import Harness

REGION = "eu-central-1"


def sm() -> Any:
    import boto3

    return boto3.client(
        "secretsmanager",
        region_name=REGION,
        endpoint_url=need("KEYTURN_TEST_AWS_ENDPOINT"),
        aws_access_key_id=need("KEYTURN_TEST_AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=need("KEYTURN_TEST_AWS_SECRET_ACCESS_KEY"),
    )


def aws_toml() -> str:
    return "\n".join(
        [
            'type = "aws-secretsmanager"',
            f'region = "{REGION}"',
            f'endpoint = "{need("KEYTURN_TEST_AWS_ENDPOINT")}"',
            'access_key_id = "env:AWS_KEY_ID"',
            'secret_access_key = "env:AWS_SECRET"',
        ]
    )


@pytest.fixture
def rig(kt: Harness, monkeypatch: pytest.MonkeyPatch) -> Rig:
    monkeypatch.setenv("AWS_KEY_ID", need("KEYTURN_TEST_AWS_ACCESS_KEY_ID"))
    monkeypatch.setenv("AWS_SECRET", need("KEYTURN_TEST_AWS_SECRET_ACCESS_KEY"))
    return Rig(kt, aws_toml())


def foreign_write(name: str, value: str) -> None:
    """Someone else writes *value* and makes it AWSCURRENT."""
    put = sm().put_secret_value(SecretId=name, SecretString=value, VersionStages=["manual"])
    stages = sm().describe_secret(SecretId=name)["VersionIdsToStages"]
    (current,) = [vid for vid, labels in stages.items() if "AWSCURRENT" in labels]
    sm().update_secret_version_stage(
        SecretId=name,
        VersionStage="AWSCURRENT",
        MoveToVersionId=put["VersionId"],
        RemoveFromVersionId=current,
    )


def current_value(name: str) -> str:
    found = sm().get_secret_value(SecretId=name, VersionStage="AWSCURRENT")
    return str(found["SecretString"])


def labels(name: str) -> dict[str, str]:
    """label -> version id."""
    found = sm().describe_secret(SecretId=name)["VersionIdsToStages"]
    return {label: vid for vid, stages in found.items() for label in stages}


def test_staging_labels_follow_three_rotations(rig: Rig) -> None:
    name = f"{rig.tenant}/smtp-admin"
    values = []
    for _ in range(3):
        assert rig.rotate()["status"] == "done"
        number, value, _fp = rig.current()
        values.append(value)
        found = labels(name)
        assert found["AWSCURRENT"] == request_token(rig.id, number)
        assert "AWSPENDING" not in found
        if number > 2:
            assert found["AWSPREVIOUS"] == request_token(rig.id, number - 1)
        assert current_value(name) == value
        if number > 2:
            previous = sm().get_secret_value(SecretId=name, VersionStage="AWSPREVIOUS")
            assert previous["SecretString"] == values[-2]
    assert rig.kt.cli("verify", rig.id).code == 0
    assert all(v not in written(rig.kt.home) for v in values)
    # What `keyturn import` reads is the AWSCURRENT value (moto answers AWSPREVIOUS when no
    # stage is named, and import then called keyturn's own secret `differs`).
    with rig.kt.app.db.read() as session:
        row = session.get(StoreRow, "main")
    assert row is not None
    store = runtime.open_store(rig.kt.app, row)
    try:
        found = {f.path: f.value.reveal() for f in store.scan(f"{rig.tenant}/")}
    finally:
        store.close()
    assert found == {name: values[-1]}


def test_a_replayed_publish_creates_no_version(rig: Rig) -> None:
    assert rig.rotate()["status"] == "done"
    name = f"{rig.tenant}/smtp-admin"
    before = sm().list_secret_version_ids(SecretId=name)["Versions"]
    number, value, fingerprint = rig.current()
    store = AwsSecretsManagerStore.from_settings(
        {
            "region": REGION,
            "endpoint": need("KEYTURN_TEST_AWS_ENDPOINT"),
            "access_key_id": "env:KEYTURN_TEST_AWS_ACCESS_KEY_ID",
            "secret_access_key": "env:KEYTURN_TEST_AWS_SECRET_ACCESS_KEY",
        },
        StoreContext(resolve=lambda ref: Secret(need(ref.removeprefix("env:")))),
    )
    view = PublishView(rig.id, rig.tenant, Numbered(number, Secret(value), fingerprint))
    with store:
        mark = request_token(rig.id, number)
        assert store.publish(view, mark) == mark
        assert store.publish(view, mark) == mark
    after = sm().list_secret_version_ids(SecretId=name)["Versions"]
    assert len(after) == len(before)


def test_a_value_changed_in_aws_is_drift(rig: Rig) -> None:
    assert rig.rotate()["status"] == "done"
    name = f"{rig.tenant}/smtp-admin"
    foreign_write(name, "changed-by-hand-1")
    result = rig.kt.cli("verify", rig.id, "--json")
    assert result.code == 1
    assert json.loads(result.out)[0]["status"] == "store-drift"
    out = rig.rotate()
    assert (out["status"], out["step"]) == ("retrying", "publish")
    assert current_value(name) == "changed-by-hand-1"
    assert rig.kt.cli("verify", rig.id, "--repair").code == 0
    resumed = json.loads(rig.kt.cli("resume", rig.id, "--now", "--json").out)[0]
    assert resumed["status"] == "done"
    assert current_value(name) == rig.current()[1]
    assert "changed-by-hand-1" not in written(rig.kt.home)


def test_a_kms_key_encrypts_the_secret_keyturn_creates(
    kt: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    kms = boto3.client(
        "kms",
        region_name=REGION,
        endpoint_url=need("KEYTURN_TEST_AWS_ENDPOINT"),
        aws_access_key_id=need("KEYTURN_TEST_AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=need("KEYTURN_TEST_AWS_SECRET_ACCESS_KEY"),
    )
    key_id = kms.create_key(Description="keyturn store test")["KeyMetadata"]["KeyId"]
    monkeypatch.setenv("AWS_KEY_ID", need("KEYTURN_TEST_AWS_ACCESS_KEY_ID"))
    monkeypatch.setenv("AWS_SECRET", need("KEYTURN_TEST_AWS_SECRET_ACCESS_KEY"))
    rig = Rig(kt, aws_toml() + f'\nkms_key_id = "{key_id}"')
    assert rig.rotate()["status"] == "done"
    described = sm().describe_secret(SecretId=f"{rig.tenant}/smtp-admin")
    assert key_id in described["KmsKeyId"]
    assert {"Key": "keyturn:credential", "Value": rig.id} in described["Tags"]


def test_verbose_logs_name_no_value(rig: Rig, kt: Harness) -> None:
    """`keyturn -v` turned every library's DEBUG logs on: botocore's print each request's
    body, the SecretString being published in clear on stderr."""
    result = kt.spawn("-v", "rotate", rig.id, "--reason", "verbose")
    assert result.code == 0, result.err
    _number, value, _fp = rig.current()
    assert value not in result.err and value not in result.out
    assert need("KEYTURN_TEST_AWS_SECRET_ACCESS_KEY") not in result.err


def test_a_wrong_secret_key_is_named_without_aws_s_xml_body() -> None:
    """moto (like a proxy) answers a bad signature with an XML body, which the error repeated
    whole; the code and what to do are enough."""
    keys = {"env:ID": need("KEYTURN_TEST_AWS_ACCESS_KEY_ID"), "env:SECRET": "wrong-Secret-0"}
    settings = {
        "region": REGION,
        "endpoint": need("KEYTURN_TEST_AWS_ENDPOINT"),
        "access_key_id": "env:ID",
        "secret_access_key": "env:SECRET",
    }
    store = AwsSecretsManagerStore.from_settings(
        settings, StoreContext(resolve=lambda ref: Secret(keys[ref]), name="aws")
    )
    with pytest.raises(StoreRefused) as caught:
        store.held("acme/smtp-admin", "acme")
    message = str(caught.value)
    assert "SignatureDoesNotMatch: keyturn's AWS secret access key does not match" in message
    assert "<" not in message and "wrong-Secret-0" not in message
