"""Where a tls-certificate target gets its certificates: an ACME CA (RFC 8555), or a local CA.

Both take a fresh private key keyturn generated and the names to certify, and return the
certificate with its chain; neither sees a key but its own (the CSR carries the public key).

- ACME (the ``acme`` package, the protocol library of certbot): account key from a reference
  (``acme_account_key``; an account is created for it, or found when it exists) or, without
  one, a fresh account per issuance; HTTP-01 answered by writing the token file into
  ``acme_webroot`` (the directory the site serves at ``/.well-known/acme-challenge/``), removed
  once the order is final.
- Local CA: ``ca_cert`` (a PEM file) and ``ca_key``, a reference to its private key, so the
  CA's key can itself be a keyturn credential (``keyturn:pki/internal-ca``) and never sits in
  the inventory. Certificates last ``validity``.

A certificate value, as keyturn stores it, is one PEM bundle: the private key, then the leaf
certificate, then the chain (what HAProxy reads as one file).
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from keyturn.domain.errors import PluginMissing, TargetRejected, TargetUnreachable
from keyturn.domain.model import Secret

_KEY_BLOCK = re.compile(
    r"-----BEGIN (?:EC |RSA )?PRIVATE KEY-----.+?-----END (?:EC |RSA )?PRIVATE KEY-----\n?",
    re.S,
)
KEY_TYPES = ("ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096")


@dataclass(frozen=True)
class Bundle:
    """A private key (PEM, PKCS#8) and its certificate chain, leaf first."""

    key_pem: Secret
    certs: tuple[x509.Certificate, ...]

    @property
    def leaf(self) -> x509.Certificate:
        return self.certs[0]

    def cert_pem(self) -> str:
        return _pem(self.certs[:1])

    def chain_pem(self) -> str:
        return _pem(self.certs[1:])

    def to_secret(self) -> Secret:
        return Secret(self.key_pem.reveal() + self.cert_pem() + self.chain_pem())

    def validity(self) -> tuple[datetime, datetime]:
        return self.leaf.not_valid_before_utc, self.leaf.not_valid_after_utc


def _pem(certs: tuple[x509.Certificate, ...]) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


def parse_bundle(value: Secret, where: str) -> Bundle:
    """The key and certificates of a stored value; errors never quote it."""
    text = value.reveal()
    match = _KEY_BLOCK.search(text)
    try:
        certs = tuple(x509.load_pem_x509_certificates(text.encode())) if match else ()
    except ValueError:
        certs = ()
    if match is None or not certs:
        raise TargetRejected(
            f"{where}: the value is not a PEM bundle of a private key and its certificate chain"
        )
    return Bundle(Secret(match.group(0).rstrip("\n") + "\n"), certs)


def new_key(key_type: str) -> Any:
    if key_type.startswith("ec-"):
        curve = ec.SECP256R1() if key_type == "ec-p256" else ec.SECP384R1()
        return ec.generate_private_key(curve)
    return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[4:]))


def key_pem(key: Any) -> Secret:
    raw = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return Secret(raw.decode())


def load_key(value: Secret, where: str) -> Any:
    try:
        return serialization.load_pem_private_key(value.reveal().encode(), password=None)
    except (ValueError, TypeError):
        raise TargetRejected(f"{where}: not an unencrypted PEM private key") from None


# -- local CA ------------------------------------------------------------------------------------


def issue_local(
    key: Any, domains: list[str], ca_cert_pem: bytes, ca_key: Any, validity: timedelta
) -> tuple[x509.Certificate, ...]:
    """A leaf for *domains* signed by the local CA; the chain is the CA certificate."""
    try:
        ca = x509.load_pem_x509_certificate(ca_cert_pem)
    except ValueError:
        raise TargetRejected("ca_cert is not a PEM certificate") from None
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domains[0])]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(min(now + validity, ca.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName([_san(d) for d in domains]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, ca


def _san(name: str) -> x509.GeneralName:
    import ipaddress

    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


# -- ACME ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AcmeSettings:
    directory: str
    webroot: Path
    ca_file: str | None
    account_key: Secret | None
    email: str | None
    timeout: float


def issue_acme(key: Any, domains: list[str], acme: AcmeSettings) -> tuple[x509.Certificate, ...]:
    """Order a certificate for *domains*, answer HTTP-01 through the webroot, finalize."""
    try:
        import josepy
        from acme import client, crypto_util, errors, messages
    except ImportError as exc:
        raise PluginMissing(
            "ACME issuance needs the acme package: pip install 'keyturn[tls]'"
        ) from exc
    where = f"ACME {acme.directory}"
    try:
        net, directory = _acme_account(acme, josepy, client, errors, messages)
        order_client = client.ClientV2(directory, net=net)
        csr = crypto_util.make_csr(key_pem(key).reveal().encode(), domains)
        order = order_client.new_order(csr)
        tokens = _answer_http01(order_client, order, net.key, acme.webroot)
        try:
            deadline = datetime.now() + timedelta(seconds=acme.timeout)
            final = order_client.poll_and_finalize(order, deadline=deadline)
        finally:
            for token in tokens:
                token.unlink(missing_ok=True)
    except errors.ValidationError as exc:
        raise TargetRejected(
            f"{where}: the CA could not validate {', '.join(domains)} over "
            f"HTTP-01: is acme_webroot served at /.well-known/acme-challenge/?"
        ) from exc
    except errors.TimeoutError as exc:
        raise TargetUnreachable(f"{where}: the order did not complete in time") from exc
    except messages.Error as exc:
        raise TargetRejected(f"{where}: the CA refused ({exc.typ or 'error'})") from exc
    except (errors.Error, OSError) as exc:
        raise TargetUnreachable(f"{where}: {type(exc).__name__}") from exc
    return tuple(x509.load_pem_x509_certificates(final.fullchain_pem.encode()))


def _acme_account(acme: AcmeSettings, josepy: Any, client: Any, errors: Any, messages: Any) -> Any:
    account_key = (
        load_key(acme.account_key, "acme_account_key") if acme.account_key else new_key("ec-p256")
    )
    jwk = (
        josepy.JWKEC(key=account_key)
        if isinstance(account_key, ec.EllipticCurvePrivateKey)
        else josepy.JWKRSA(key=account_key)
    )
    alg = josepy.ES256 if isinstance(account_key, ec.EllipticCurvePrivateKey) else josepy.RS256
    net = client.ClientNetwork(jwk, alg=alg, user_agent="keyturn", timeout=int(acme.timeout))
    if acme.ca_file:
        net.verify_ssl = acme.ca_file  # requests takes a CA bundle path where a bool goes
    directory = client.ClientV2.get_directory(acme.directory, net)
    acme_client = client.ClientV2(directory, net=net)
    registration = messages.NewRegistration.from_data(
        email=acme.email, terms_of_service_agreed=True
    )
    try:
        acme_client.new_account(registration)
    except errors.ConflictError as exists:  # this key has an account already: use it
        net.account = messages.RegistrationResource(
            uri=exists.location, body=messages.Registration()
        )
    return net, directory


def _answer_http01(order_client: Any, order: Any, jwk: Any, webroot: Path) -> list[Path]:
    from acme import challenges

    folder = webroot / ".well-known" / "acme-challenge"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for authz in order.authorizations:
        found = [c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01)]
        if not found:
            raise TargetRejected(
                f"the CA offers no HTTP-01 challenge for {authz.body.identifier.value}"
            )
        response, validation = found[0].response_and_validation(jwk)
        path = folder / found[0].chall.encode("token")
        _write_public(path, validation)
        written.append(path)
        order_client.answer_challenge(found[0], response)
    return written


def _write_public(path: Path, text: str) -> None:
    """A world-readable file (the web server's workers read it), written atomically."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".keyturn-")
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
