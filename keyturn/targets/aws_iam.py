"""AWS IAM access keys (``aws-iam-key``): an IAM user's key pair, rotated with ``dual``.

IAM lets a user hold two access keys, so a rotation never leaves consumers without a working
one: keyturn reconciles, creates, stores, verifies, moves consumers, then deactivates and
deletes the old key. The value keyturn stores and publishes is a JSON document::

    {"access_key_id": "AKIA...", "secret_access_key": "..."}

Which keys are keyturn's. keyturn never deletes a key it did not make. Every key it creates
carries the user tag ``<AccessKeyId> = "keyturn"`` (the key's *description* in the AWS
console), and just before ``CreateAccessKey`` it tags the user ``keyturn:issuing`` with the ids
of the keys the user already holds and the time, removed once the new key is described. A
crash between ``CreateAccessKey`` and keyturn's commit therefore leaves a key that the next run
recognises (described as keyturn's, or absent from the mark and created within MARK_WINDOW of
it, which also absorbs clock skew between keyturn and AWS): ``list_active`` returns
only such keys, and the engine deletes the ones it holds no secret for (nobody can hold one:
IAM shows a secret once). A key imported with ``initial_secret`` or made by someone else is
never listed, so never removed as an orphan; the imported one is revoked by the rotation that
replaces it.

Safety rules, checked by the target itself: the user never holds three keys (``create``
refuses when it holds two, naming them), and the only active key is never deactivated or
deleted.

``test`` signs ``sts:GetCallerIdentity`` with the key and checks the caller is the user. IAM
is eventually consistent: a new key can be refused, and a deactivated one accepted, for a few
seconds, so ``test`` asks IAM for the key's status first and waits up to
``propagation_seconds`` for STS to agree before it answers.

Credentials of keyturn itself: ``admin_access_key_id``/``admin_secret_access_key``
(references), or ``admin_profile``, or boto3's default chain (environment, instance role).
It needs ``iam:ListAccessKeys``, ``iam:CreateAccessKey``, ``iam:UpdateAccessKey``,
``iam:DeleteAccessKey``, ``iam:ListUserTags``, ``iam:TagUser`` and ``iam:UntagUser`` on the
users it rotates.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import urlsplit

from pydantic import field_validator, model_validator

from keyturn.domain.errors import PluginMissing, TargetRejected, TargetUnreachable
from keyturn.domain.model import Secret
from keyturn.refs import SecretRef
from keyturn.targets.base import Account, IssuedSecret, Target, TargetConfig, TargetContext
from keyturn.targets.smtp import is_loopback

ISSUING_TAG = "keyturn:issuing"
MARK_WINDOW = timedelta(minutes=5)
_SESSION: Any = None
_SESSION_LOCK = threading.Lock()
# What an STS call signed by a key answers when IAM does not (or no longer) accept the key.
REFUSED = {
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "AuthFailure",
    "UnrecognizedClientException",
    "InvalidAccessKeyId",
}
THROTTLED = {"Throttling", "ThrottlingException", "RequestLimitExceeded", "ServiceUnavailable"}


def check_endpoint(value: str | None) -> str | None:
    """An endpoint override: https, or http on loopback only (a double such as moto)."""
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("endpoint_url must look like https://iam.amazonaws.com")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ValueError("endpoint_url is plain http: allowed only on loopback; use https")
    return value.rstrip("/")


class AwsIamConfig(TargetConfig):
    """Settings of an aws-iam-key target (one per AWS account, or per admin identity)."""

    # Region used to sign IAM and STS calls (IAM is global; STS answers in every region).
    region: str = "us-east-1"
    # Overrides for AWS's endpoints (a VPC endpoint, or a double on loopback).
    endpoint_url: str | None = None
    sts_endpoint_url: str | None = None
    admin_access_key_id: SecretRef | None = None  # references: env:NAME, file:PATH, keyturn:ID
    admin_secret_access_key: SecretRef | None = None
    admin_profile: str | None = None
    # The description tag of the keys keyturn creates (visible in the AWS console).
    description: str = "keyturn"
    # How long IAM may take to agree with itself about a new or deactivated key.
    propagation_seconds: float = 20
    timeout: float = 15

    _endpoints = field_validator("endpoint_url", "sts_endpoint_url")(check_endpoint)

    @model_validator(mode="after")
    def _pair(self) -> AwsIamConfig:
        if (self.admin_access_key_id is None) != (self.admin_secret_access_key is None):
            raise ValueError("set both admin_access_key_id and admin_secret_access_key, or neither")
        if self.admin_profile and self.admin_access_key_id:
            raise ValueError("set admin_profile or the admin key pair, not both")
        return self


@dataclass(frozen=True)
class KeyPair:
    """An access key as keyturn stores it."""

    access_key_id: str
    secret_access_key: Secret

    def to_secret(self) -> Secret:
        return Secret(
            json.dumps(
                {
                    "access_key_id": self.access_key_id,
                    "secret_access_key": self.secret_access_key.reveal(),
                }
            )
        )


def parse_pair(value: Secret, where: str) -> KeyPair:
    """The key pair in a stored value; the error never quotes it."""
    try:
        data = json.loads(value.reveal())
        pair = KeyPair(str(data["access_key_id"]), Secret(str(data["secret_access_key"])))
    except (ValueError, KeyError, TypeError):
        raise TargetRejected(
            f"{where}: the value is not an access key pair; it must be JSON "
            '{"access_key_id": "AKIA...", "secret_access_key": "..."}'
        ) from None
    return pair


@dataclass(frozen=True)
class KeyInfo:
    """What IAM lists about one of a user's keys."""

    key_id: str
    active: bool
    created: datetime


@dataclass(frozen=True)
class IssuingMark:
    """The ``keyturn:issuing`` tag: the user's keys just before CreateAccessKey, and when.

    IAM tag values may not hold commas: ``"AKIA1 AKIA2 @1733042000"``.
    """

    before: frozenset[str]
    at: datetime

    def render(self) -> str:
        return " ".join([*sorted(self.before), f"@{int(self.at.timestamp())}"])

    @classmethod
    def parse(cls, text: str | None) -> IssuingMark | None:
        parts = (text or "").split()
        if not parts or not parts[-1].startswith("@") or not parts[-1][1:].isdigit():
            return None
        return cls(frozenset(parts[:-1]), datetime.fromtimestamp(int(parts[-1][1:]), UTC))

    def made(self, key: KeyInfo) -> bool:
        """Was *key* created by the CreateAccessKey this mark announced? (Its CreateDate is
        within MARK_WINDOW of the mark, which also absorbs clock skew between us and AWS.)"""
        return key.key_id not in self.before and abs(key.created - self.at) <= MARK_WINDOW


class IamApi:
    """The IAM and STS calls keyturn makes; botocore errors mapped here, once."""

    def __init__(self, config: AwsIamConfig, context: TargetContext) -> None:
        self.config = config
        self.context = context
        self._iam: Any = None

    def _boto(self) -> tuple[Any, Any]:
        try:
            import boto3
            import botocore.config
        except ImportError as exc:
            raise PluginMissing(
                "the aws-iam-key target needs boto3: pip install 'keyturn[aws]'"
            ) from exc
        return boto3, botocore.config.Config(
            connect_timeout=self.config.timeout,
            read_timeout=self.config.timeout,
            retries={"max_attempts": 3, "mode": "standard"},
        )

    def _client(self, service: str, endpoint: str | None, **credentials: str) -> Any:
        """A client of the one shared session (a session per client would parse botocore's
        service models again: ~0.2 s each); sessions are not thread-safe, hence the lock."""
        global _SESSION
        boto3, botocfg = self._boto()
        with _SESSION_LOCK:
            if self.config.admin_profile and not credentials:
                session = boto3.session.Session(profile_name=self.config.admin_profile)
            else:
                _SESSION = _SESSION or boto3.session.Session()
                session = _SESSION
            return session.client(
                service,
                region_name=self.config.region,
                endpoint_url=endpoint,
                config=botocfg,
                **credentials,
            )

    @property
    def iam(self) -> Any:
        if self._iam is None:
            cfg, credentials = self.config, {}
            if cfg.admin_access_key_id and cfg.admin_secret_access_key:
                credentials = {
                    "aws_access_key_id": self.context.resolve(cfg.admin_access_key_id).reveal(),
                    "aws_secret_access_key": self.context.resolve(
                        cfg.admin_secret_access_key
                    ).reveal(),
                }
            self._iam = self._client("iam", cfg.endpoint_url, **credentials)
        return self._iam

    def sts_as(self, pair: KeyPair) -> Any:
        """An STS client signing with *pair* (not keyturn's own credentials)."""
        return self._client(
            "sts",
            self.config.sts_endpoint_url or self.config.endpoint_url,
            aws_access_key_id=pair.access_key_id,
            aws_secret_access_key=pair.secret_access_key.reveal(),
        )

    def call(self, what: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
        """One IAM call; a keyturn error naming *what* on failure (AWS's code, never a value)."""
        import botocore.exceptions as bce

        try:
            return fn(**kwargs)
        except bce.ClientError as exc:
            raise client_error(what, exc) from exc
        except (bce.NoCredentialsError, bce.PartialCredentialsError) as exc:
            raise TargetRejected(
                f"{what}: keyturn has no AWS credentials; set admin_access_key_id and "
                "admin_secret_access_key (references), admin_profile, or the environment"
            ) from exc
        except bce.ProfileNotFound as exc:
            raise TargetRejected(f"{what}: no AWS profile {self.config.admin_profile!r}") from exc
        except (bce.BotoCoreError, OSError) as exc:
            raise TargetUnreachable(f"{what}: cannot reach AWS ({type(exc).__name__})") from exc

    def keys(self, user: str) -> list[KeyInfo]:
        pages = self.call(
            f"IAM ListAccessKeys for {user}", self.iam.list_access_keys, UserName=user
        )
        return [
            KeyInfo(k["AccessKeyId"], k["Status"] == "Active", k["CreateDate"].astimezone(UTC))
            for k in pages["AccessKeyMetadata"]
        ]

    def tags(self, user: str) -> dict[str, str]:
        data = self.call(f"IAM ListUserTags for {user}", self.iam.list_user_tags, UserName=user)
        return {t["Key"]: t["Value"] for t in data.get("Tags", [])}

    def tag(self, user: str, key: str, value: str) -> None:
        self.call(
            f"IAM TagUser {user}",
            self.iam.tag_user,
            UserName=user,
            Tags=[{"Key": key, "Value": value}],
        )

    def untag(self, user: str, key: str) -> None:
        self.call(f"IAM UntagUser {user}", self.iam.untag_user, UserName=user, TagKeys=[key])

    def caller(self, pair: KeyPair) -> str | None:
        """The ARN STS says signed the call, or None if the key is refused."""
        import botocore.exceptions as bce

        what = f"STS GetCallerIdentity with key {pair.access_key_id}"
        try:
            return str(self.sts_as(pair).get_caller_identity()["Arn"])
        except bce.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in REFUSED:
                return None
            raise client_error(what, exc) from exc
        except (bce.BotoCoreError, OSError) as exc:
            raise TargetUnreachable(f"{what}: cannot reach AWS ({type(exc).__name__})") from exc

    def close(self) -> None:
        if self._iam is not None:
            self._iam.close()
            self._iam = None


def client_error(what: str, exc: Any) -> Exception:
    """The keyturn error for an AWS error response."""
    error = exc.response.get("Error", {})
    code = str(error.get("Code", "Unknown"))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    if code in THROTTLED or status >= 500:
        return TargetUnreachable(f"{what}: AWS answered {code}; keyturn retries later")
    hints = {
        "NoSuchEntity": "no such IAM user or key: check the credential's username",
        "LimitExceeded": "the user already holds two access keys, the most IAM allows",
        "AccessDenied": "keyturn's AWS identity lacks a permission; see docs/targets/aws-iam.md",
        "InvalidClientTokenId": "keyturn's own AWS access key is not valid",
        "SignatureDoesNotMatch": "keyturn's own AWS secret key does not match its key id",
    }
    return TargetRejected(f"{what}: AWS answered {code}: {hints.get(code, 'refused')}")


def user_of(arn: str) -> str:
    """``arn:aws:iam::123456789012:user/path/name`` -> ``name``."""
    return arn.rsplit("/", 1)[-1] if ":user/" in arn else ""


class AwsIamKeyTarget(Target):
    """An IAM user's access keys (strategy `dual`): AWS issues them, keyturn tracks their ids."""

    name = "aws-iam-key"
    max_active_secrets = 2
    strategies = ("dual",)
    issues_secrets: ClassVar[bool] = True
    config_model: ClassVar[type[TargetConfig]] = AwsIamConfig
    config: AwsIamConfig

    def __init__(self, config: Any, context: TargetContext) -> None:
        super().__init__(config, context)
        self.api = IamApi(self.config, context)
        # Tests shorten the waits; production waits for IAM between polls.
        self.sleep: Callable[[float], None] = time.sleep

    # -- values ------------------------------------------------------------------------------

    def issued_value(self, pair: KeyPair) -> Secret:
        """What keyturn stores for a new key (aws-ses-smtp stores the SMTP login instead)."""
        return pair.to_secret()

    def key_id_of(self, value: Secret, where: str) -> str:
        return parse_pair(value, where).access_key_id

    def accepts(self, user: str, value: Secret) -> bool:
        """One check of *value* at AWS: STS signed by the key says it is *user*."""
        pair = parse_pair(value, f"IAM user {user}")
        arn = self.api.caller(pair)
        if arn is None:
            return False
        if user_of(arn) != user:
            raise TargetRejected(
                f"IAM user {user}: key {pair.access_key_id} belongs to {arn}, not to {user}"
            )
        return True

    # -- verbs -------------------------------------------------------------------------------

    def list_active(self, account: Account) -> list[str]:
        """Ids of the user's keys that keyturn made: described as keyturn's, or created just
        after a `keyturn:issuing` mark (a crash before the description)."""
        user = account.username
        keys, tags = self.api.keys(user), self.api.tags(user)
        mark = IssuingMark.parse(tags.get(ISSUING_TAG))
        return [
            k.key_id
            for k in keys
            if tags.get(k.key_id) == self.config.description or (mark and mark.made(k))
        ]

    def create(self, account: Account) -> IssuedSecret:
        """CreateAccessKey, between the issuing mark and the key's description tag."""
        user = account.username
        keys = self.api.keys(user)
        if len(keys) >= 2:
            held = ", ".join(f"{k.key_id} ({'active' if k.active else 'inactive'})" for k in keys)
            raise TargetRejected(
                f"IAM user {user} already holds two access keys ({held}) and IAM allows two: "
                "keyturn never deletes a key it did not make; finish the previous rotation "
                "(keyturn resume) or delete the key nobody uses"
            )
        mark = IssuingMark(frozenset(k.key_id for k in keys), datetime.now(UTC))
        self.api.tag(user, ISSUING_TAG, mark.render())
        made = self.api.call(
            f"IAM CreateAccessKey for {user}", self.api.iam.create_access_key, UserName=user
        )["AccessKey"]
        pair = KeyPair(made["AccessKeyId"], Secret(made["SecretAccessKey"]))
        self.api.tag(user, pair.access_key_id, self.config.description)
        self.api.untag(user, ISSUING_TAG)
        return IssuedSecret(key_id=pair.access_key_id, value=self.issued_value(pair))

    def set(self, account: Account, new: Secret, current: Secret | None) -> None:
        """Nothing to do: IAM made the key active when it issued it."""

    def test(self, account: Account, value: Secret) -> bool:
        """Accepted if STS, signed by the key, names the user. IAM's listing says what to
        expect; a disagreement is waited out for up to `propagation_seconds`."""
        user = account.username
        key_id = self.key_id_of(value, f"IAM user {user}")
        listed = {k.key_id: k.active for k in self.api.keys(user)}
        expected = listed.get(key_id, False)
        deadline = time.monotonic() + self.config.propagation_seconds
        delay = 0.5
        while True:
            answer = self.accepts(user, value)
            if answer == expected or time.monotonic() >= deadline:
                return answer
            self.sleep(delay)
            delay = min(delay * 2, 4.0)

    def revoke(self, account: Account, old: Secret) -> None:
        """Deactivate the key, then delete it and its description. A key keyturn holds no
        secret for (*old* empty: an orphan) is removed only if keyturn made it."""
        user = account.username
        key_id = account.key_id
        if old.reveal():
            key_id = self.key_id_of(old, f"IAM user {user}")
        if key_id is None:
            raise TargetRejected(f"IAM user {user}: revoke without a key id")
        keys = {k.key_id: k for k in self.api.keys(user)}
        if key_id in keys:
            self._check_removable(user, keys[key_id], list(keys.values()), orphan=not old.reveal())
            if keys[key_id].active:
                self.api.call(
                    f"IAM UpdateAccessKey {key_id} of {user}",
                    self.api.iam.update_access_key,
                    UserName=user,
                    AccessKeyId=key_id,
                    Status="Inactive",
                )
            self.api.call(
                f"IAM DeleteAccessKey {key_id} of {user}",
                self.api.iam.delete_access_key,
                UserName=user,
                AccessKeyId=key_id,
            )
        if key_id in self.api.tags(user):
            self.api.untag(user, key_id)

    def _check_removable(
        self, user: str, key: KeyInfo, keys: list[KeyInfo], *, orphan: bool
    ) -> None:
        """An orphan (no secret held) goes only if keyturn made it; a key someone holds goes
        only if another active key remains."""
        if orphan:
            if key.key_id not in self.list_active(Account(user)):
                raise TargetRejected(
                    f"IAM user {user}: key {key.key_id} was not made by keyturn (no "
                    f"{self.config.description!r} description), so keyturn does not delete it"
                )
            return  # nobody holds its secret (IAM shows it once): no consumer can break
        if key.active and not any(k.active for k in keys if k.key_id != key.key_id):
            raise TargetRejected(
                f"IAM user {user}: key {key.key_id} is the user's only active key; keyturn "
                "never deactivates it (is the current key deleted or inactive?)"
            )

    def ensure(self, account: Account, value: Secret) -> bool:
        """An imported key (initial_secret) must be one of the user's active keys."""
        user = account.username
        key_id = self.key_id_of(value, f"IAM user {user}")
        listed = {k.key_id: k.active for k in self.api.keys(user)}
        if not listed.get(key_id):
            raise TargetRejected(
                f"IAM user {user}: the imported key {key_id} is not one of its active keys"
            )
        return False

    def close(self) -> None:
        self.api.close()
