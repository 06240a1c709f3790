"""A TLS endpoint's private key and certificate (``tls-certificate``), strategy ``single``.

A rotation is: ``generate`` a new private key and have it certified (ACME or a local CA, see
``tls_issue.py``) -> the PEM bundle is committed, encrypted, before anything else hears of it
-> ``set`` writes key, certificate and chain atomically (temporary file, fsync, rename; the key
with mode 0600) and reloads the server (``reload_command``, or ``reload_signal`` to the process
in ``pid_file``) -> ``test`` makes a TLS handshake to the endpoint and checks that it serves
the new certificate with a chain that verifies against ``ca_file`` (or the system store) for
the certificate's first name. Servers that reload gracefully (nginx, HAProxy, Apache) keep
every connection working across it.

If the reload does not make the endpoint serve the new certificate, ``set`` puts the current
files back and reloads again before it reports the failure: the files on disk never stay on
a value keyturn has not promoted.

Scheduling: certificates expire, so besides the policy's ``max_age`` a certificate is due at
``renew_at`` (default 2/3) of its lifetime, whichever comes first (``validity`` tells keyturn
a value's notBefore and notAfter).

Nothing is revoked at the CA: the old certificate is no longer served once ``set`` is done,
and it expires on its own.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from pydantic import Field, field_validator, model_validator

from keyturn.domain.durations import parse_duration
from keyturn.domain.errors import TargetRejected, TargetUnreachable
from keyturn.domain.model import PasswordRules, Secret
from keyturn.refs import SecretRef, settings_path
from keyturn.targets import tls_issue
from keyturn.targets.base import Account, Target, TargetConfig, TargetContext

# Handshakes in a row that must get the new certificate before `set` is done.
SETTLED = 5


class TlsConfig(TargetConfig):
    """Settings of a tls-certificate target: the names, the issuer, the files, the endpoint."""

    domains: list[str] = Field(min_length=1, max_length=100)
    key_type: Literal["ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096"] = "ec-p256"
    issuer: Literal["acme", "local-ca"]
    # acme
    acme_directory: str | None = None
    acme_webroot: str | None = None
    acme_ca_file: str | None = None  # trust for the ACME server's own HTTPS (a private CA)
    acme_account_key: SecretRef | None = None  # a reference to the account's PEM private key
    acme_email: str | None = None
    acme_timeout: float = 90
    # local-ca
    ca_cert: str | None = None
    ca_key: SecretRef | None = None  # a reference: keyturn:ID, file:PATH, env:NAME
    validity: str = "90d"
    # files the server reads (chain_file absent: the chain follows the leaf in cert_file)
    cert_file: str
    key_file: str
    chain_file: str | None = None
    # how the server picks them up
    reload_command: list[str] | None = None
    reload_signal: Literal["HUP", "USR1", "USR2"] | None = None
    pid_file: str | None = None
    reload_timeout: float = 30
    # the endpoint the test shakes hands with
    host: str = "127.0.0.1"
    port: int = 443
    ca_file: str | None = None
    timeout: float = 10

    @field_validator("validity")
    @classmethod
    def _validity(cls, value: str) -> str:
        parse_duration(value, "validity")
        return value

    @model_validator(mode="after")
    def _complete(self) -> TlsConfig:
        if self.issuer == "acme" and not (self.acme_directory and self.acme_webroot):
            raise ValueError("issuer acme needs acme_directory and acme_webroot")
        if self.issuer == "local-ca" and not (self.ca_cert and self.ca_key):
            raise ValueError("issuer local-ca needs ca_cert and ca_key (a reference)")
        if (self.reload_command is None) == (self.reload_signal is None):
            raise ValueError("set one of reload_command (an argv list) or reload_signal")
        if self.reload_signal and not self.pid_file:
            raise ValueError("reload_signal needs pid_file")
        return self


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


class TlsCertificateTarget(Target):
    """The certificate a TLS endpoint serves (strategy `single`: one certificate at a time)."""

    name = "tls-certificate"
    max_active_secrets = 1
    strategies = ("single",)
    config_model: ClassVar[type[TargetConfig]] = TlsConfig
    config: TlsConfig

    def __init__(self, config: Any, context: TargetContext) -> None:
        super().__init__(config, context)
        self.where = f"TLS {self.config.host}:{self.config.port} ({self.config.domains[0]})"

    def _path(self, name: str) -> Path:
        return settings_path(self.context.base_dir, name)

    # -- values ------------------------------------------------------------------------------

    def generate(self, rules: PasswordRules) -> Secret:
        """A new private key, certified by the configured issuer: the PEM bundle."""
        cfg = self.config
        key = tls_issue.new_key(cfg.key_type)
        if cfg.issuer == "local-ca":
            assert cfg.ca_cert is not None and cfg.ca_key is not None
            try:
                ca_pem = self._path(cfg.ca_cert).read_bytes()
            except OSError as exc:
                raise TargetRejected(f"{self.where}: cannot read ca_cert: {exc.strerror}") from exc
            ca_key = tls_issue.load_key(self.context.resolve(cfg.ca_key), "ca_key")
            validity = parse_duration(cfg.validity, "validity")
            certs = tls_issue.issue_local(key, cfg.domains, ca_pem, ca_key, validity)
        else:
            assert cfg.acme_directory is not None and cfg.acme_webroot is not None
            account = cfg.acme_account_key
            settings = tls_issue.AcmeSettings(
                directory=cfg.acme_directory,
                webroot=self._path(cfg.acme_webroot),
                ca_file=str(self._path(cfg.acme_ca_file)) if cfg.acme_ca_file else None,
                account_key=self.context.resolve(account) if account else None,
                email=cfg.acme_email,
                timeout=cfg.acme_timeout,
            )
            certs = tls_issue.issue_acme(key, cfg.domains, settings)
        return tls_issue.Bundle(tls_issue.key_pem(key), certs).to_secret()

    @classmethod
    def validity(cls, value: Secret) -> tuple[datetime, datetime]:
        """notBefore and notAfter of the value's certificate (for the expiry schedule)."""
        return tls_issue.parse_bundle(value, "tls-certificate").validity()

    # -- the endpoint ------------------------------------------------------------------------

    def served(self) -> x509.Certificate:
        """The certificate the endpoint presents (unverified: compared, then verified)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        der = self._handshake(context)
        return x509.load_der_x509_certificate(der)

    def _handshake(self, context: ssl.SSLContext) -> bytes:
        try:
            with (
                socket.create_connection(
                    (self.config.host, self.config.port), timeout=self.config.timeout
                ) as raw,
                context.wrap_socket(raw, server_hostname=self.config.domains[0]) as tls,
            ):
                der = tls.getpeercert(binary_form=True)
        except ssl.SSLCertVerificationError as exc:
            raise TargetRejected(
                f"{self.where}: the certificate chain does not verify ({exc.verify_message})"
            ) from exc
        except (OSError, ssl.SSLError) as exc:
            raise TargetUnreachable(
                f"{self.where}: no TLS handshake ({type(exc).__name__})"
            ) from exc
        if not der:
            raise TargetUnreachable(f"{self.where}: the server presented no certificate")
        return der

    def _verify_chain(self) -> None:
        context = ssl.create_default_context(
            cafile=str(self._path(self.config.ca_file)) if self.config.ca_file else None
        )
        self._handshake(context)

    # -- verbs -------------------------------------------------------------------------------

    def test(self, account: Account, value: Secret) -> bool:
        """Accepted if the endpoint serves this value's certificate, with a chain that
        verifies for the first name; another certificate served is a refusal."""
        bundle = tls_issue.parse_bundle(value, self.where)
        if fingerprint(self.served()) != fingerprint(bundle.leaf):
            return False
        self._verify_chain()
        return True

    def set(self, account: Account, new: Secret, current: Secret | None) -> None:
        """Write the files, reload, wait until the endpoint serves *new*; on failure put the
        current files back (and reload) before raising."""
        bundle = tls_issue.parse_bundle(new, self.where)
        if self._serves(bundle):
            return
        self.write_files(bundle)
        try:
            self.reload()
            self._wait_for(bundle)
        except (TargetRejected, TargetUnreachable):
            if current is not None:
                self.write_files(tls_issue.parse_bundle(current, self.where))
                self.reload()
            raise

    def revoke(self, account: Account, old: Secret) -> None:
        """Nothing to do: the endpoint stopped serving the old certificate at `set`."""

    def _serves(self, bundle: tls_issue.Bundle) -> bool:
        try:
            return fingerprint(self.served()) == fingerprint(bundle.leaf)
        except TargetUnreachable:
            return False

    def _wait_for(self, bundle: tls_issue.Bundle) -> None:
        """Until SETTLED handshakes in a row get the new certificate: during a graceful reload
        the old workers still accept connections for a moment, with the old one."""
        deadline = time.monotonic() + self.config.reload_timeout
        streak = 0
        while streak < SETTLED:
            streak = streak + 1 if self._serves(bundle) else 0
            if streak == 0 and time.monotonic() >= deadline:
                raise TargetRejected(
                    f"{self.where}: still not serving the new certificate "
                    f"{self.config.reload_timeout:g}s after the reload"
                )
            time.sleep(0.05)

    def write_files(self, bundle: tls_issue.Bundle) -> None:
        """Key (0600), certificate and chain, each replaced atomically (the server reads
        them when keyturn reloads it, after all three are in place)."""
        cfg = self.config
        _atomic_write(self._path(cfg.key_file), bundle.key_pem.reveal(), 0o600)
        if cfg.chain_file:
            _atomic_write(self._path(cfg.chain_file), bundle.chain_pem(), 0o644)
            _atomic_write(self._path(cfg.cert_file), bundle.cert_pem(), 0o644)
        else:
            _atomic_write(self._path(cfg.cert_file), bundle.cert_pem() + bundle.chain_pem(), 0o644)

    def reload(self) -> None:
        cfg = self.config
        if cfg.reload_command:
            try:
                # Relative paths in the command mean what they mean for cert_file: from the
                # inventory's folder.
                done = subprocess.run(
                    cfg.reload_command,
                    capture_output=True,
                    timeout=cfg.reload_timeout,
                    check=False,
                    cwd=self.context.base_dir,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise TargetUnreachable(
                    f"{self.where}: reload_command failed to run ({type(exc).__name__})"
                ) from exc
            if done.returncode != 0:
                raise TargetRejected(f"{self.where}: reload_command exited with {done.returncode}")
            return
        assert cfg.pid_file is not None and cfg.reload_signal is not None
        try:
            pid = int(self._path(cfg.pid_file).read_text().strip())
            os.kill(pid, getattr(signal, f"SIG{cfg.reload_signal}"))
        except (OSError, ValueError) as exc:
            raise TargetUnreachable(
                f"{self.where}: cannot signal the server in {cfg.pid_file} ({type(exc).__name__})"
            ) from exc


def _atomic_write(path: Path, text: str, mode: int) -> None:
    """Temporary file beside *path* (created with *mode*), fsync, rename over *path*."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
