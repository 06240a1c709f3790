"""TLS test endpoints: a real nginx per test on a free loopback port (Debian's nginx-light,
installed by scripts/services.d/acme.sh), reading the certificate files keyturn writes and
reloading gracefully on `nginx -s reload`; and a local CA to issue certificates with."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from keyturn.domain.model import Secret
from keyturn.targets import tls_issue


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalCa:
    """A CA made for one test: its certificate file and its key (PEM)."""

    folder: Path
    key_pem: str = ""
    cert_path: Path = Path()

    def __post_init__(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "keyturn test CA")])
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        self.key_pem = tls_issue.key_pem(key).reveal()
        self.cert_path = self.folder / "ca.pem"
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self._key = key

    def bundle(self, domains: list[str], validity: timedelta = timedelta(days=90)) -> Secret:
        key = tls_issue.new_key("ec-p256")
        certs = tls_issue.issue_local(
            key, domains, self.cert_path.read_bytes(), self._key, validity
        )
        return tls_issue.Bundle(tls_issue.key_pem(key), certs).to_secret()


@dataclass
class Nginx:
    """nginx serving HTTPS on 127.0.0.1:port from cert.pem (leaf + chain) and key.pem."""

    folder: Path
    name: str
    port: int = field(default_factory=free_port)

    @property
    def conf(self) -> Path:
        return self.folder / "nginx.conf"

    @property
    def reload_command(self) -> list[str]:
        return ["nginx", "-p", str(self.folder), "-c", str(self.conf), "-s", "reload"]

    def write_conf(self) -> None:
        temp = self.folder / "tmp"
        temp.mkdir(exist_ok=True)
        self.conf.write_text(
            f"""
worker_processes 1;
pid {self.folder}/nginx.pid;
error_log {self.folder}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {temp};
    proxy_temp_path {temp};
    fastcgi_temp_path {temp};
    uwsgi_temp_path {temp};
    scgi_temp_path {temp};
    server {{
        listen 127.0.0.1:{self.port} ssl;
        server_name {self.name};
        ssl_certificate {self.folder}/cert.pem;
        ssl_certificate_key {self.folder}/key.pem;
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""
        )

    def start(self, bundle: Secret) -> Nginx:
        parsed = tls_issue.parse_bundle(bundle, "test")
        (self.folder / "key.pem").write_text(parsed.key_pem.reveal())
        (self.folder / "key.pem").chmod(0o600)
        (self.folder / "cert.pem").write_text(parsed.cert_pem() + parsed.chain_pem())
        self.write_conf()
        subprocess.run(
            ["nginx", "-p", str(self.folder), "-c", str(self.conf)], check=True, timeout=30
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                assert time.monotonic() < deadline, (self.folder / "error.log").read_text()
                time.sleep(0.05)

    def stop(self) -> None:
        pid_file = self.folder / "nginx.pid"
        if pid_file.exists():
            subprocess.run(
                ["nginx", "-p", str(self.folder), "-c", str(self.conf), "-s", "quit"],
                check=False,
                timeout=30,
            )
            deadline = time.monotonic() + 10
            while pid_file.exists() and time.monotonic() < deadline:
                time.sleep(0.05)

    def served(self) -> x509.Certificate:
        """The certificate a fresh, verifying handshake gets (raises if it does not verify)."""
        context = ssl.create_default_context(cafile=str(self.folder / "trust.pem"))
        with (
            socket.create_connection(("127.0.0.1", self.port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=self.name) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der)


@dataclass
class HandshakeLoop:
    """Fresh verified TLS handshakes plus one HTTP request each, in a thread, until stopped;
    bounded (at most *limit* handshakes or *seconds*), counting failures and serials seen."""

    nginx: Nginx
    limit: int = 5000
    seconds: float = 120
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    serials: list[int] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        context = ssl.create_default_context(cafile=str(self.nginx.folder / "trust.pem"))
        deadline = time.monotonic() + self.seconds
        while not self._stop.is_set() and self.ok + len(self.failures) < self.limit:
            if time.monotonic() > deadline:
                break
            try:
                with (
                    socket.create_connection(("127.0.0.1", self.nginx.port), timeout=5) as raw,
                    context.wrap_socket(raw, server_hostname=self.nginx.name) as tls,
                ):
                    tls.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
                    answer = tls.recv(64)
                    der = tls.getpeercert(binary_form=True)
                assert answer.startswith(b"HTTP/1.1 200"), answer
                assert der is not None
                serial = x509.load_der_x509_certificate(der).serial_number
                if not self.serials or self.serials[-1] != serial:
                    self.serials.append(serial)
                self.ok += 1
            except (OSError, AssertionError, ssl.SSLError) as exc:
                self.failures.append(repr(exc))

    def __enter__(self) -> HandshakeLoop:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        while self.ok == 0 and not self.failures:  # the loop is running before we go on
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.2)  # a few handshakes after the rotation, too
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=30)
