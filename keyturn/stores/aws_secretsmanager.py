"""AWS Secrets Manager as a store, through boto3.

Each credential is one secret, named by a template (`{tenant}/{name}`). Each keyturn version
is one Secrets Manager version whose id, the `ClientRequestToken`, is derived from the
credential id and version number: a replayed publish sends the same token, and Secrets
Manager creates no second version. The staging labels follow keyturn's states: the new value
is put as AWSPENDING, then AWSCURRENT is moved onto it (Secrets Manager moves AWSPREVIOUS to
the version it leaves), then AWSPENDING is taken off.

The version id keyturn last made AWSCURRENT is its mark: a secret whose AWSCURRENT moved
elsewhere was written by someone else, and keyturn does not overwrite it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

from pydantic import field_validator

from keyturn.domain.errors import PluginMissing
from keyturn.domain.model import Secret
from keyturn.stores.base import (
    Found,
    Held,
    Published,
    PublishView,
    Store,
    StoreConfig,
    StoreConflict,
    StoreRefused,
    StoreUnreachable,
    reference,
)
from keyturn.targets.base import redact

# uuid5 namespace of keyturn's ClientRequestTokens (fixed: tokens must stay the same).
TOKENS = uuid.UUID("5b0e6c1e-7f4c-4e1f-9a55-6b6579747572")
NOT_FOUND = "ResourceNotFoundException"
CURRENT = "AWSCURRENT"
DOWN = {"InternalServiceError", "ThrottlingException", "ServiceUnavailable", "RequestTimeout"}
# What to do about the errors of keyturn's own AWS identity (AWS's JSON codes, and the codes of
# the XML bodies moto, a proxy or a VPC endpoint may answer with).
HINTS = {
    "UnrecognizedClientException": "keyturn's AWS access key id is not valid",
    "InvalidClientTokenId": "keyturn's AWS access key id is not valid",
    "InvalidSignatureException": "keyturn's AWS secret access key does not match its key id",
    "SignatureDoesNotMatch": "keyturn's AWS secret access key does not match its key id",
    "ExpiredTokenException": "keyturn's AWS session token has expired",
}


def _error(response: dict[str, Any]) -> tuple[str, str]:
    """AWS's error code and message; a body that is markup (XML, an HTML page) is never
    repeated: its <Code> is kept, else the HTTP status."""
    error = response.get("Error", {})
    code, message = str(error.get("Code", "")), str(error.get("Message", ""))
    if message.lstrip().startswith("<"):
        found = re.search(r"<Code>([^<]{1,100})</Code>", message)
        code = found.group(1) if found else f"HTTP {code}"
        message = ""
    return code, HINTS.get(code, message)


class AwsSecretsManagerConfig(StoreConfig):
    region: str = "us-east-1"
    endpoint: str | None = None
    name: str = "{tenant}/{name}"
    kms_key_id: str | None = None
    # Credentials by reference; without them boto3's default chain (role, profile) is used.
    access_key_id: str | None = None
    secret_access_key: str | None = None
    timeout: float = 10.0

    @field_validator("access_key_id", "secret_access_key")
    @classmethod
    def _reference(cls, value: str | None) -> str | None:
        return reference(value, "aws-secretsmanager store", "access_key_id/secret_access_key")


def request_token(credential_id: str, number: int) -> str:
    """The ClientRequestToken (and so the version id) of a keyturn version."""
    return str(uuid.uuid5(TOKENS, f"{credential_id}#{number}"))


class AwsSecretsManagerStore(Store):
    """Publishes to Secrets Manager; see the module docstring."""

    name = "aws-secretsmanager"
    config_model = AwsSecretsManagerConfig
    config: AwsSecretsManagerConfig
    _client: Any = None

    def secret_name(self, credential_id: str, tenant: str) -> str:
        head, _, rest = credential_id.partition("/")
        name = rest if head == tenant and rest else credential_id
        return self.config.name.format(id=credential_id, tenant=tenant, name=name)

    def client(self) -> Any:
        if self._client is None:
            try:
                import boto3
                from botocore.config import Config
            except ImportError as exc:
                raise PluginMissing(
                    "the aws-secretsmanager store needs boto3: pip install 'keyturn[aws]'"
                ) from exc
            keys: dict[str, str] = {}
            if self.config.access_key_id and self.config.secret_access_key:
                keys = {
                    "aws_access_key_id": self.context.resolve(self.config.access_key_id).reveal(),
                    "aws_secret_access_key": self.context.resolve(
                        self.config.secret_access_key
                    ).reveal(),
                }
            self._client = boto3.client(
                "secretsmanager",
                region_name=self.config.region,
                endpoint_url=self.config.endpoint,
                config=Config(
                    connect_timeout=self.config.timeout,
                    read_timeout=self.config.timeout,
                    retries={"max_attempts": 2},
                ),
                **keys,
            )
        return self._client

    def _call(self, doing: str, method: str, *values: Secret | None, **kwargs: Any) -> Any:
        """One API call, its errors mapped once; None when the secret does not exist."""
        from botocore.exceptions import BotoCoreError, ClientError

        where = f"{self.context.name or self.name} ({self.config.region})"
        try:
            return getattr(self.client(), method)(**kwargs)
        except ClientError as exc:
            code, message = _error(exc.response)
            if code == NOT_FOUND:
                return None
            why = redact(f"{code}: {message}" if message else code, values)
            if code in DOWN:
                raise StoreUnreachable(f"{where}: cannot {doing}: {why}") from exc
            if code == "ResourceExistsException":
                raise StoreConflict(f"{where}: cannot {doing}: {why}") from exc
            raise StoreRefused(f"{where}: cannot {doing}: {why}") from exc
        except BotoCoreError as exc:
            raise StoreUnreachable(f"{where}: cannot {doing}: {type(exc).__name__}") from exc

    def _stages(self, name: str) -> dict[str, list[str]] | None:
        found = self._call(f"describe {name}", "describe_secret", SecretId=name)
        return None if found is None else dict(found.get("VersionIdsToStages") or {})

    # -- verbs -----------------------------------------------------------------------------

    def publish(self, view: PublishView, mark: str | None) -> str | None:
        """Put the version (its token as id), then move AWSCURRENT onto it."""
        name = self.secret_name(view.credential_id, view.tenant)
        token = request_token(view.credential_id, view.current.number)
        stages = self._stages(name)
        if stages is None:
            self._create(name, token, view)
            return token
        # One version has AWSCURRENT; moto can leave it on two after a foreign put, which
        # is a write keyturn did not make either way.
        currents = [vid for vid, labels in stages.items() if CURRENT in labels]
        if currents == [token]:
            self._drop_pending(name, token, stages)
            return token  # a replay
        current = currents[0] if currents else None
        if currents and currents != [mark] and not self._holds_previous(name, view, mark):
            raise StoreConflict(
                f"{self.context.name or self.name}: {name} has AWSCURRENT on version "
                f"{current}, not {mark or 'one keyturn wrote'}: someone else wrote it; keyturn "
                f"does not overwrite it. Check who did, then run `keyturn verify --repair "
                f"{view.credential_id}`"
            )
        value = view.current.value
        self._call(
            f"put a version of {name}",
            "put_secret_value",
            value,
            SecretId=name,
            ClientRequestToken=token,
            SecretString=value.reveal(),
            VersionStages=["AWSPENDING"],
        )
        move = {"MoveToVersionId": token}
        if current is not None:
            move["RemoveFromVersionId"] = current
        self._call(
            f"move AWSCURRENT of {name}",
            "update_secret_version_stage",
            SecretId=name,
            VersionStage="AWSCURRENT",
            **move,
        )
        self._drop_pending(name, token, self._stages(name) or {})
        return token

    def _holds_previous(self, name: str, view: PublishView, mark: str | None) -> bool:
        """First publish over a secret keyturn did not make (imported): fine if it holds
        keyturn's previous value."""
        if mark is not None or view.previous is None:
            return False
        found = self._call(f"read {name}", "get_secret_value", SecretId=name, VersionStage=CURRENT)
        return bool(found) and found.get("SecretString") == view.previous.value.reveal()

    def _create(self, name: str, token: str, view: PublishView) -> None:
        kwargs: dict[str, Any] = {
            "Name": name,
            "ClientRequestToken": token,
            "SecretString": view.current.value.reveal(),
            "Description": f"published by keyturn: {view.credential_id}",
            "Tags": [{"Key": "keyturn:credential", "Value": view.credential_id}],
        }
        if self.config.kms_key_id:
            kwargs["KmsKeyId"] = self.config.kms_key_id
        self._call(f"create {name}", "create_secret", view.current.value, **kwargs)

    def _drop_pending(self, name: str, token: str, stages: dict[str, list[str]]) -> None:
        if "AWSPENDING" in stages.get(token, []):
            self._call(
                f"take AWSPENDING off {name}",
                "update_secret_version_stage",
                SecretId=name,
                VersionStage="AWSPENDING",
                RemoveFromVersionId=token,
            )

    def held(self, credential_id: str, tenant: str) -> Held | None:
        """AWSCURRENT's version id (the mark) and value: Secrets Manager has no metadata
        per version that keyturn could read instead."""
        name = self.secret_name(credential_id, tenant)
        found = self._call(f"read {name}", "get_secret_value", SecretId=name, VersionStage=CURRENT)
        if found is None or "SecretString" not in found:
            return None
        return Held(None, mark=found["VersionId"], value=Secret(found["SecretString"]))

    def read(self, credential_id: str) -> tuple[Published, Secret] | None:
        held = self.held(credential_id, credential_id.partition("/")[0])
        if held is None or held.value is None:
            return None
        return Published(None), held.value

    def scan(self, prefix: str) -> Iterator[Found]:
        """Every secret whose name starts with *prefix*, with its AWSCURRENT value."""
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"MaxResults": 100}
            if prefix:
                kwargs["Filters"] = [{"Key": "name", "Values": [prefix]}]
            if token:
                kwargs["NextToken"] = token
            page = self._call("list secrets", "list_secrets", **kwargs) or {}
            for entry in page.get("SecretList", []):
                if not entry["Name"].startswith(prefix):
                    continue
                found = self._call(  # the stage named, as every other read here names it
                    f"read {entry['Name']}",
                    "get_secret_value",
                    SecretId=entry["ARN"],
                    VersionStage=CURRENT,
                )
                if found and "SecretString" in found:
                    yield Found(entry["Name"], Secret(found["SecretString"]))
            token = page.get("NextToken")
            if not token:
                return

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


__all__ = ["AwsSecretsManagerStore", "request_token"]
