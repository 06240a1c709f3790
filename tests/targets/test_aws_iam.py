"""aws-iam-key and aws-ses-smtp against a strict double of AWS (moto in server mode).

AWS itself cannot run here: ``tests/support/aws_double.py`` (started by
``scripts/services.d/aws.sh``) is moto's server with request authentication on, inactive keys
refused as AWS refuses them (moto accepts them), and an SES SMTP listener that checks the
derived password. Every check of a value goes to the double with boto3 or smtplib, signed by
the value `keyturn get` prints, never through the plugin under test.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import secrets
import smtplib
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from keyturn.domain.errors import TargetRejected
from keyturn.domain.model import Secret
from keyturn.targets.aws_iam import AwsIamKeyTarget
from keyturn.targets.aws_ses import AwsSesSmtpTarget, smtp_password
from keyturn.targets.base import Account, TargetContext
from tests.support.keyturn import Harness
from tests.targets.conftest import Refs
from tests.targets.engine_support import run_killed
from tests.targets.provider_support import CRASH_POINTS, ProviderRig, written_texts

SES_SEND = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "ses:SendRawEmail", "Resource": "*"}],
    }
)


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run scripts/services, then source .test-env")
    return value


@dataclass
class Aws:
    """The double, reached as keyturn's admin identity and as any key's holder."""

    endpoint: str
    admin_id: str
    admin_secret: str

    def client(self, service: str, key_id: str | None = None, secret: str | None = None) -> Any:
        import boto3

        return _session(boto3).client(
            service,
            region_name="us-east-1",
            endpoint_url=self.endpoint,
            aws_access_key_id=key_id or self.admin_id,
            aws_secret_access_key=secret or self.admin_secret,
        )

    @functools.cached_property
    def iam(self) -> Any:
        return self.client("iam")

    def keys(self, user: str) -> dict[str, str]:
        """The user's keys and their status, as IAM lists them."""
        listed = self.iam.list_access_keys(UserName=user)["AccessKeyMetadata"]
        return {k["AccessKeyId"]: k["Status"] for k in listed}

    def works(self, key_id: str, secret: str) -> bool:
        """Does STS accept a call signed by this key? (A fresh client, not the plugin.)"""
        import botocore.exceptions

        try:
            self.client("sts", key_id, secret).get_caller_identity()
        except botocore.exceptions.ClientError as exc:
            assert exc.response["Error"]["Code"] in (
                "InvalidClientTokenId",
                "SignatureDoesNotMatch",
            )
            return False
        return True

    def settings(self, refs: Refs | None = None) -> dict[str, Any]:
        if refs is not None:
            refs.add(self.admin_id, "env:KT_AWS_ADMIN_ID")
            refs.add(self.admin_secret, "env:KT_AWS_ADMIN_SECRET")
        return {
            "endpoint_url": self.endpoint,
            "admin_access_key_id": "env:KT_AWS_ADMIN_ID",
            "admin_secret_access_key": "env:KT_AWS_ADMIN_SECRET",
            "propagation_seconds": 0,
        }


@functools.cache
def _session(boto3: Any) -> Any:
    return boto3.session.Session()  # one session: each new one parses botocore's models again


@pytest.fixture(scope="session")
def aws() -> Aws:
    return Aws(
        _env("KEYTURN_TEST_AWS_ENDPOINT"),
        _env("KEYTURN_TEST_AWS_ACCESS_KEY_ID"),
        _env("KEYTURN_TEST_AWS_SECRET_ACCESS_KEY"),
    )


@pytest.fixture
def user(aws: Aws) -> Iterator[str]:
    """A fresh IAM user allowed to send through SES; deleted with its keys afterwards."""
    name = f"kte-{secrets.token_hex(4)}"
    aws.iam.create_user(UserName=name)
    aws.iam.put_user_policy(UserName=name, PolicyName="ses-send", PolicyDocument=SES_SEND)
    yield name
    for key_id in aws.keys(name):
        aws.iam.delete_access_key(UserName=name, AccessKeyId=key_id)
    aws.iam.delete_user_policy(UserName=name, PolicyName="ses-send")
    aws.iam.delete_user(UserName=name)


def plugin(aws: Aws, refs: Refs, cls: type[AwsIamKeyTarget] = AwsIamKeyTarget) -> Any:
    settings = aws.settings(refs)
    if cls is AwsSesSmtpTarget:
        settings.update(ses_smtp(), smtp_ca_file=_env("KEYTURN_TEST_SES_SMTP_CA"))
    return cls.from_settings(settings, refs.context())


def ses_smtp() -> dict[str, Any]:
    return {
        "ses_region": _env("KEYTURN_TEST_SES_SMTP_REGION"),
        "smtp_host": _env("KEYTURN_TEST_SES_SMTP_HOST"),
        "smtp_port": int(_env("KEYTURN_TEST_SES_SMTP_PORT")),
    }


# -- the double is strict where moto is not ----------------------------------------------------


def test_the_double_refuses_inactive_keys_and_a_third_key(aws: Aws, user: str) -> None:
    import botocore.exceptions

    made = aws.iam.create_access_key(UserName=user)["AccessKey"]
    key_id, secret = made["AccessKeyId"], made["SecretAccessKey"]
    assert aws.works(key_id, secret)
    assert not aws.works(key_id, "x" * 40)  # signature checked
    aws.iam.update_access_key(UserName=user, AccessKeyId=key_id, Status="Inactive")
    assert not aws.works(key_id, secret)  # moto alone would accept it
    aws.iam.create_access_key(UserName=user)
    with pytest.raises(botocore.exceptions.ClientError, match="LimitExceeded"):
        aws.iam.create_access_key(UserName=user)


# -- the plugin's verbs ------------------------------------------------------------------------


def test_create_test_revoke(aws: Aws, user: str, refs: Refs) -> None:
    target = plugin(aws, refs)
    account = Account(user)
    issued = target.create(account)
    pair = json.loads(issued.value.reveal())
    assert pair["access_key_id"] == issued.key_id
    assert aws.keys(user) == {issued.key_id: "Active"}
    assert target.test(Account(user, issued.key_id), issued.value)
    assert target.list_active(account) == [issued.key_id]
    second = target.create(account)
    assert set(target.list_active(account)) == {issued.key_id, second.key_id}
    target.revoke(Account(user, issued.key_id), issued.value)
    target.revoke(Account(user, issued.key_id), issued.value)  # idempotent
    assert aws.keys(user) == {second.key_id: "Active"}
    assert not target.test(Account(user, issued.key_id), issued.value)
    assert not aws.works(pair["access_key_id"], pair["secret_access_key"])
    assert issued.key_id not in aws.iam.list_user_tags(UserName=user)["Tags"]


def test_never_a_third_key_never_a_foreign_one_never_the_only_active(
    aws: Aws, user: str, refs: Refs
) -> None:
    target = plugin(aws, refs)
    foreign = aws.iam.create_access_key(UserName=user)["AccessKey"]
    mine = target.create(Account(user))
    assert target.list_active(Account(user)) == [mine.key_id]  # the foreign key is not listed
    with pytest.raises(TargetRejected, match="already holds two access keys"):
        target.create(Account(user))
    with pytest.raises(TargetRejected, match="not made by keyturn"):
        target.revoke(Account(user, foreign["AccessKeyId"]), Secret(""))
    aws.iam.delete_access_key(UserName=user, AccessKeyId=foreign["AccessKeyId"])
    with pytest.raises(TargetRejected, match="only active key"):
        target.revoke(Account(user, mine.key_id), mine.value)
    assert aws.keys(user) == {mine.key_id: "Active"}


def test_a_key_created_just_before_a_crash_is_recognised(aws: Aws, user: str, refs: Refs) -> None:
    """The issuing mark names the keys held before CreateAccessKey; a key created then but
    never described (the process died) is keyturn's, and an orphan may go."""
    target = plugin(aws, refs)
    first = target.create(Account(user))
    target.api.tag(user, "keyturn:issuing", f"{first.key_id} @{int(time.time())}")
    crashed = aws.iam.create_access_key(UserName=user)["AccessKey"]["AccessKeyId"]
    assert set(target.list_active(Account(user))) == {first.key_id, crashed}
    target.revoke(Account(user, crashed), Secret(""))
    assert aws.keys(user) == {first.key_id: "Active"}


def test_a_value_of_another_user_is_an_error_not_a_refusal(aws: Aws, user: str, refs: Refs) -> None:
    target = plugin(aws, refs)
    issued = target.create(Account(user))
    with pytest.raises(TargetRejected, match="belongs to"):
        target.test(Account("kt-admin"), issued.value)  # the double's admin user


def test_ses_smtp_password_matches_aws_reference_script() -> None:
    """Reference values: AWS's own script, ``python/example_code/ses/
    ses_generate_smtp_credentials.py`` in awsdocs/aws-doc-sdk-examples (the one the SES
    Developer Guide, "Obtaining Amazon SES SMTP credentials", publishes), run as
    ``python3 ses_generate_smtp_credentials.py SECRET REGION`` on AWS's documented example
    secret keys. The region changes the password: one credential per SES region."""
    example = Secret("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    for region, expected in [
        ("us-east-1", "BLBM/9hSUELfq8Gw+rU1YcBjkOxGbhT2XG763xVLGWL9"),
        ("eu-west-1", "BMW5RDrXmmVs0lV7GpI4oLkHXpZ4stDsk6q91z1g38Pk"),
        ("ap-southeast-2", "BLNVIwl1Vk66qi8YP1q44PSaqUtaoyrS/0LT79VaGBfa"),
        ("us-gov-west-1", "BHW/eHvx1MM9YwW4wrJG6MGVQmLDCAM99G9YiSdGEIAw"),
    ]:
        assert smtp_password(example, region).reveal() == expected
    other = Secret("je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY")
    assert smtp_password(other, "eu-central-1").reveal() == (
        "BAth1SxgLS594eDdS6cVRKaetaelF0AdUCKyvSbOKrk7"
    )


def _smtp_login(username: str, password: str) -> bool:
    """A fresh smtplib login to the SES double, STARTTLS first as SES requires."""
    context = ssl.create_default_context(cafile=_env("KEYTURN_TEST_SES_SMTP_CA"))
    host, port = _env("KEYTURN_TEST_SES_SMTP_HOST"), int(_env("KEYTURN_TEST_SES_SMTP_PORT"))
    with smtplib.SMTP(host, port, timeout=10) as client:
        client.starttls(context=context)
        try:
            client.login(username, password)
        except smtplib.SMTPAuthenticationError:
            return False
    return True


def test_ses_login_is_derived_per_region_and_dies_with_the_key(
    aws: Aws, user: str, refs: Refs
) -> None:
    target = plugin(aws, refs, AwsSesSmtpTarget)
    issued = target.create(Account(user))
    login = json.loads(issued.value.reveal())
    assert set(login) == {"username", "password"}  # the secret access key is not kept
    assert login["username"] == issued.key_id
    assert _smtp_login(login["username"], login["password"])
    assert target.test(Account(user, issued.key_id), issued.value)
    aws.iam.delete_user_policy(UserName=user, PolicyName="ses-send")
    assert not _smtp_login(login["username"], login["password"])  # ses:SendRawEmail needed
    aws.iam.put_user_policy(UserName=user, PolicyName="ses-send", PolicyDocument=SES_SEND)
    second = target.create(Account(user))
    target.revoke(Account(user, issued.key_id), issued.value)
    assert not _smtp_login(login["username"], login["password"])
    assert not target.test(Account(user, issued.key_id), issued.value)
    assert target.test(Account(user, second.key_id), second.value)


def test_ses_smtp_ca_file_is_taken_from_the_inventory_folder(
    aws: Aws, user: str, refs: Refs, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/targets/aws-ses-smtp.md: `smtp_ca_file = "ses-ca.pem"` beside keyturn.toml works
    from any working directory (a worker, a server, `keyturn --db ... rotate` elsewhere)."""
    inventory, elsewhere = tmp_path / "inventory", tmp_path / "elsewhere"
    inventory.mkdir()
    elsewhere.mkdir()
    (inventory / "ses-ca.pem").write_bytes(Path(_env("KEYTURN_TEST_SES_SMTP_CA")).read_bytes())
    monkeypatch.chdir(elsewhere)
    settings = {**aws.settings(refs), **ses_smtp(), "smtp_ca_file": "ses-ca.pem"}
    context = TargetContext(resolve=refs.resolve, base_dir=str(inventory))
    target = AwsSesSmtpTarget.from_settings(settings, context)
    issued = target.create(Account(user))
    assert target.test(Account(user, issued.key_id), issued.value)


# -- through keyturn ---------------------------------------------------------------------------


def _rig(kt: Harness, aws: Aws, user: str, target_type: str = "aws-iam-key", **kw: Any) -> Any:
    kt.env["KT_AWS_ADMIN_ID"], kt.env["KT_AWS_ADMIN_SECRET"] = aws.admin_id, aws.admin_secret
    settings = aws.settings()
    if target_type == "aws-ses-smtp":
        settings.update(ses_smtp(), smtp_ca_file=_env("KEYTURN_TEST_SES_SMTP_CA"))
    kind = target_type
    return ProviderRig(kt, target_type, settings, user, kind=kind, **kw)


def _works(aws: Aws, value: dict[str, str]) -> bool:
    if "username" in value:
        return _smtp_login(value["username"], value["password"])
    return aws.works(value["access_key_id"], value["secret_access_key"])


@pytest.mark.parametrize("target_type", ["aws-iam-key", "aws-ses-smtp"])
def test_rotations_move_consumers_then_delete_the_old_key(
    kt: Harness, aws: Aws, user: str, target_type: str
) -> None:
    rig = _rig(kt, aws, user, target_type, grace="1d", consumers=["web"])
    rig.apply()
    rig.rotate()  # the first key: nothing to revoke
    assert rig.last_rotation()["status"] == "done"
    first = rig.value()
    assert _works(aws, first) and len(aws.keys(user)) == 1
    rig.rotate()
    assert rig.last_rotation()["status"] == "waiting"
    second = rig.value()
    assert rig.value(previous=True) == first
    assert _works(aws, first) and _works(aws, second)  # both during the grace period
    assert len(aws.keys(user)) == 2
    rig.report("web", rig.last_rotation()["new_version"])
    rig.resume()
    assert rig.last_rotation()["status"] == "done"
    assert list(aws.keys(user)) == rig.key_ids("current")
    assert not _works(aws, first) and _works(aws, second)
    assert kt.cli("verify", rig.cred).code == 0
    assert kt.cli("audit", "verify").code == 0


def test_an_imported_key_is_revoked_by_the_rotation_that_replaces_it(
    kt: Harness, aws: Aws, user: str
) -> None:
    made = aws.iam.create_access_key(UserName=user)["AccessKey"]
    initial = {"access_key_id": made["AccessKeyId"], "secret_access_key": made["SecretAccessKey"]}
    rig = _rig(kt, aws, user, initial_ref="env:KT_INITIAL_KEY")
    rig.apply(env={"KT_INITIAL_KEY": json.dumps(initial)})
    assert kt.cli("verify", rig.cred).code == 0
    rig.rotate()
    rig.finish()
    new = rig.value()
    assert list(aws.keys(user)) == [new["access_key_id"]]
    assert not aws.works(made["AccessKeyId"], made["SecretAccessKey"])


def test_a_key_keyturn_did_not_make_stops_the_rotation_and_is_kept(
    kt: Harness, aws: Aws, user: str
) -> None:
    rig = _rig(kt, aws, user)
    rig.apply()
    rig.rotate()
    foreign = aws.iam.create_access_key(UserName=user)["AccessKey"]["AccessKeyId"]
    result = kt.cli("rotate", rig.cred, "--reason", "x")
    assert "already holds two access keys" in result.out + result.err + str(rig.last_rotation())
    assert foreign in aws.keys(user) and len(aws.keys(user)) == 2


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_killed_at_every_step_then_resumed(kt: Harness, aws: Aws, user: str, point: str) -> None:
    """SIGKILL at each step of the second rotation, then resume: exactly one key at IAM (the
    current one), the old key refused, never three keys, never none active."""
    rig = _rig(kt, aws, user)
    rig.apply()
    rig.rotate()
    old = rig.value()
    code = run_killed(kt, point, "rotate", rig.cred, "--reason", "crash", env={})
    assert code == -9, point
    keys = aws.keys(user)
    assert 1 <= len(keys) <= 2 and "Active" in keys.values()
    rig.finish()
    new = rig.value()
    assert new != old
    assert list(aws.keys(user)) == [new["access_key_id"]] == rig.key_ids("current")
    assert aws.works(new["access_key_id"], new["secret_access_key"])
    assert not aws.works(old["access_key_id"], old["secret_access_key"])
    assert rig.states().count("current") == 1 and "pending" not in rig.states()


@pytest.mark.parametrize("point", ["create:issued", "test:effect", "revoke:effect"])
def test_ses_killed_then_resumed(kt: Harness, aws: Aws, user: str, point: str) -> None:
    rig = _rig(kt, aws, user, "aws-ses-smtp")
    rig.apply()
    rig.rotate()
    old = rig.value()
    assert run_killed(kt, point, "rotate", rig.cred, "--reason", "crash", env={}) == -9
    rig.finish()
    new = rig.value()
    assert list(aws.keys(user)) == [new["username"]]
    assert _smtp_login(new["username"], new["password"])
    assert not _smtp_login(old["username"], old["password"])


def test_no_key_in_logs_audit_or_errors(
    kt: Harness, aws: Aws, user: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    rig = _rig(kt, aws, user, "aws-ses-smtp")
    rig.apply()
    outputs = [rig.rotate().out]
    values = [rig.value()]
    outputs += [rig.rotate().out, kt.cli("verify", rig.cred).out]
    values.append(rig.value())
    aws.iam.create_access_key(UserName=user)  # a third key: the next rotation fails
    failed = kt.cli("rotate", rig.cred, "--reason", "x")
    outputs += [failed.out, failed.err, kt.cli("show", rig.cred, "--json").out]
    texts = written_texts(kt, [*outputs, caplog.text])
    for value in values:
        assert value["password"] not in texts
    assert aws.admin_secret not in texts
