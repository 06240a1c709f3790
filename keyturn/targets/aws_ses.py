"""Amazon SES SMTP credentials (``aws-ses-smtp``): an IAM access key seen through SMTP.

SES's SMTP interface takes an IAM user's access key id as the username and a password derived
from the secret access key (AWS's documented algorithm, below). Rotating SMTP credentials is
therefore the aws-iam-key rotation (reconcile, create, verify, move consumers, deactivate and
delete the old key; see ``aws_iam.py``), storing the SMTP login instead of the key pair::

    {"username": "AKIA...", "password": "BAhX..."}

The secret access key itself is dropped once the password is derived: consumers of an SMTP
credential get what SMTP needs and nothing that signs AWS API calls. The password depends on
the region (``ses_region``), so one credential serves one SES region.

``test`` logs in to the region's SMTP endpoint (``email-smtp.<region>.amazonaws.com:587``,
STARTTLS) with one AUTH attempt; the IAM user needs ``ses:SendRawEmail``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from keyturn.domain.errors import TargetRejected
from keyturn.domain.model import Secret
from keyturn.targets.aws_iam import AwsIamConfig, AwsIamKeyTarget, KeyPair
from keyturn.targets.smtp import DEFAULT_PORTS, SmtpEndpoint, SmtpSettings, ca_path

# AWS's constants for SES SMTP passwords: a SigV4-style HMAC chain over a fixed date, the
# region, the service and the SendRawEmail message, prefixed with the version byte 0x04.
_DATE = "11111111"
_SERVICE = "ses"
_TERMINAL = "aws4_request"
_MESSAGE = "SendRawEmail"
_VERSION = 0x04


def smtp_password(secret_access_key: Secret, region: str) -> Secret:
    """The SES SMTP password of *secret_access_key* in *region*."""
    signature = hmac.new(
        ("AWS4" + secret_access_key.reveal()).encode(), _DATE.encode(), hashlib.sha256
    ).digest()
    for part in (region, _SERVICE, _TERMINAL, _MESSAGE):
        signature = hmac.new(signature, part.encode(), hashlib.sha256).digest()
    return Secret(base64.b64encode(bytes([_VERSION]) + signature).decode())


class AwsSesSmtpConfig(AwsIamConfig, SmtpSettings):
    """Settings of an aws-ses-smtp target: the IAM side, and the SES region's SMTP endpoint."""

    ses_region: str

    def endpoint(self, base_dir: str) -> SmtpEndpoint:
        """The configured SMTP endpoint, or the SES region's own (a relative `smtp_ca_file`
        from *base_dir*)."""
        return SmtpEndpoint(
            host=self.smtp_host or f"email-smtp.{self.ses_region}.amazonaws.com",
            port=self.smtp_port or DEFAULT_PORTS[self.smtp_tls],
            tls=self.smtp_tls,
            mechanism=self.smtp_auth,
            ca_file=ca_path(self.smtp_ca_file, base_dir),
            timeout=self.smtp_timeout,
        )


def parse_login(value: Secret, where: str) -> tuple[str, Secret]:
    try:
        data = json.loads(value.reveal())
        return str(data["username"]), Secret(str(data["password"]))
    except (ValueError, KeyError, TypeError):
        raise TargetRejected(
            f'{where}: the value is not an SES SMTP login; it must be JSON {{"username": '
            '"AKIA...", "password": "..."}'
        ) from None


class AwsSesSmtpTarget(AwsIamKeyTarget):
    """SES SMTP credentials of an IAM user (strategy `dual`), verified by SMTP AUTH."""

    name = "aws-ses-smtp"
    config_model = AwsSesSmtpConfig
    config: AwsSesSmtpConfig

    def __init__(self, config: Any, context: Any) -> None:
        super().__init__(config, context)
        self.endpoint = self.config.endpoint(self.context.base_dir)

    def issued_value(self, pair: KeyPair) -> Secret:
        password = smtp_password(pair.secret_access_key, self.config.ses_region)
        return Secret(json.dumps({"username": pair.access_key_id, "password": password.reveal()}))

    def key_id_of(self, value: Secret, where: str) -> str:
        return parse_login(value, where)[0]

    def accepts(self, user: str, value: Secret) -> bool:
        """One SMTP AUTH with the login: True on 235, False on 535."""
        username, password = parse_login(value, f"SES SMTP login of {user}")
        return self.endpoint.login(username, password, f"SES SMTP login of IAM user {user}")
