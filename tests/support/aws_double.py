"""A strict double of AWS IAM, STS and the SES SMTP interface: moto in server mode, tightened.

AWS cannot run here, so the aws-iam-key and aws-ses-smtp targets are tested against moto's
server (the same HTTP APIs boto3 speaks to AWS), started by ``scripts/services.d/aws.sh``.
Read from moto 5.2's code (``moto/iam/models.py``, ``moto/iam/access_control.py``,
``moto/core/authorization.py``, ``moto/sts/models.py``), this is what moto enforces and where it
is laxer than AWS, and what this double changes:

- Enforced by moto: two access keys per user (``LimitExceeded``), ``NoSuchEntity`` for an
  unknown user or key, the SigV4 signature of every request (once request authentication is
  on: ``INITIAL_NO_AUTH_ACTION_COUNT = 0`` here, so a wrong secret gets
  ``SignatureDoesNotMatch`` and an unknown key ``InvalidClientTokenId``), IAM policies of the
  caller (``AccessDenied``); ``GetCallerIdentity`` is always allowed, as in AWS.
- Laxer than AWS, made strict here: moto authenticates a request signed by an *Inactive* key
  (it looks the key up without its status); AWS refuses it with ``InvalidClientTokenId``. The
  double patches that lookup to refuse inactive keys.
- Laxer than AWS, left as is (the targets do not rely on it): moto is immediately consistent
  where IAM is eventually consistent (a new key may be refused for seconds; the targets wait
  for it, see ``propagation_seconds``), and moto records a key's last use even for refused
  requests.
- Not in moto at all: SES's SMTP interface. The double listens for SMTP (aiosmtpd, STARTTLS
  required as SES does, AUTH PLAIN/LOGIN) and accepts a login when the username is an Active
  access key of an IAM user allowed ``ses:SendRawEmail`` and the password is the key's SMTP
  password for the double's region, computed here independently of keyturn's code with AWS's
  documented algorithm.

The admin user ``kt-admin`` (an inline policy allowing everything) is made in-process before
the server serves, and its key written to ``--admin-file`` (JSON, mode 0600).

    python -m tests.support.aws_double --port 45100 --smtp-port 45125 --state DIR
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import ipaddress
import json
import os
import signal
import ssl
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ADMIN_USER = "kt-admin"
ACCOUNT = "123456789012"
ALLOW_ALL = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
)


def smtp_password(secret: str, region: str) -> str:
    """SES's SMTP password of a secret access key (AWS's documented derivation)."""
    digest = ("AWS4" + secret).encode()
    for part in ("11111111", region, "ses", "aws4_request", "SendRawEmail"):
        digest = hmac.new(digest, part.encode(), hashlib.sha256).digest()
    return base64.b64encode(b"\x04" + digest).decode()


def _strict_access_keys() -> None:
    """Refuse requests signed by an Inactive key, as AWS does (moto accepts them)."""
    from moto.iam import access_control

    original = access_control.IAMUserAccessKey.__init__

    def init(self: Any, account_id: str, partition: str, access_key_id: str, headers: Any) -> None:
        original(self, account_id, partition, access_key_id, headers)
        key = self.backend.get_user(self._owner_user_name).get_access_key_by_id(access_key_id)
        if key.status != "Active":
            raise access_control.CreateAccessKeyFailure(reason="InvalidId")

    access_control.IAMUserAccessKey.__init__ = init  # type: ignore[method-assign]


def _iam() -> Any:
    from moto.iam.models import iam_backends

    return iam_backends[ACCOUNT]["aws"]


def _bootstrap_admin(path: Path) -> None:
    iam = _iam()
    iam.create_user(region_name="us-east-1", user_name=ADMIN_USER, path="/")
    iam.put_user_policy(ADMIN_USER, "everything", ALLOW_ALL)
    key = iam.create_access_key(ADMIN_USER)
    path.write_text(
        json.dumps({"access_key_id": key.access_key_id, "secret": key.secret_access_key})
    )
    path.chmod(0o600)


# -- SES SMTP ------------------------------------------------------------------------------------


def _may_send(user_name: str, key_id: str) -> bool:
    from moto.iam.access_control import IAMPolicy, IAMUserAccessKey, PermissionResult

    access = IAMUserAccessKey(ACCOUNT, "aws", key_id, {})
    results = [
        IAMPolicy(policy).is_action_permitted("ses:SendRawEmail", "*")
        for policy in access.collect_policies()
    ]
    return PermissionResult.PERMITTED in results and PermissionResult.DENIED not in results


def smtp_accepts(username: str, password: str, region: str) -> bool:
    """Would SES's SMTP endpoint in *region* accept this login?"""
    for user in list(_iam().users.values()):
        for key in user.access_keys:
            if key.access_key_id != username:
                continue
            expected = smtp_password(key.secret_access_key, region)
            return (
                key.status == "Active"
                and hmac.compare_digest(expected.encode(), password.encode())
                and _may_send(user.name, key.access_key_id)
            )
    return False


def _tls_context(state: Path) -> ssl.SSLContext:
    """A self-made CA and a server certificate for 127.0.0.1 (the CA goes to smtp-ca.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.now(UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "keyturn test SES CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    (state / "smtp-ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pem = state / "smtp-server.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        + cert.public_bytes(serialization.Encoding.PEM)
    )
    pem.chmod(0o600)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pem)
    return context


def _start_smtp(port: int, region: str, state: Path) -> Any:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user, password = data.login.decode(), data.password.decode()
        return AuthResult(success=smtp_accepts(user, password, region), handled=False)

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            return "250 Ok"

    controller = Controller(
        Handler(),
        hostname="127.0.0.1",
        port=port,
        authenticator=authenticator,
        auth_require_tls=True,
        require_starttls=True,
        tls_context=_tls_context(state),
        auth_exclude_mechanism=["DONT"],
    )
    controller.start()
    return controller


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=45100)
    parser.add_argument("--smtp-port", type=int, default=45125)
    parser.add_argument("--region", default="eu-west-1")
    parser.add_argument("--state", type=Path, required=True)
    args = parser.parse_args()
    args.state.mkdir(parents=True, exist_ok=True)

    from moto import settings
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer

    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0  # every request authenticated and authorised
    _strict_access_keys()
    _bootstrap_admin(args.state / "admin.json")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=args.port, verbose=False)
    server.start()
    smtp = _start_smtp(args.smtp_port, args.region, args.state)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    (args.state / "pid").write_text(str(os.getpid()))
    stop.wait()
    smtp.stop()
    server.stop()


if __name__ == "__main__":
    main()
