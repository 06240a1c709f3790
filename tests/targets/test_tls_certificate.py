"""tls-certificate against real servers: nginx on loopback (one per test, reloaded with
`nginx -s reload`), certificates from Debian's pebble (an RFC 8555 ACME test server, with
HTTP-01 validated through a webroot nginx serves; scripts/services.d/acme.sh) or from a local
CA whose key is itself a keyturn credential. Checks are fresh TLS handshakes, not the plugin.
"""

from __future__ import annotations

import logging
import os
import secrets
import ssl
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from keyturn.db.models import Credential
from keyturn.domain.errors import TargetRejected
from keyturn.domain.model import PasswordRules, Secret
from keyturn.targets import tls_issue
from keyturn.targets.base import Account
from keyturn.targets.tls_certificate import TlsCertificateTarget, fingerprint
from tests.support.keyturn import Harness
from tests.support.tls_server import HandshakeLoop, LocalCa, Nginx
from tests.targets.conftest import Refs
from tests.targets.engine_support import run_killed
from tests.targets.provider_support import CRASH_POINTS, ProviderRig, written_texts


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run scripts/services, then source .test-env")
    return value


@pytest.fixture(scope="session")
def pebble_root() -> str:
    """Pebble's issuing root (it makes a new one each time it starts)."""
    trust = ssl.create_default_context(cafile=_env("KEYTURN_TEST_ACME_CA_FILE"))
    return httpx.get(_env("KEYTURN_TEST_ACME_ROOTS"), verify=trust).text


@pytest.fixture
def ca(tmp_path: Path) -> LocalCa:
    folder = tmp_path / "ca"
    folder.mkdir()
    return LocalCa(folder)


@pytest.fixture
def site(tmp_path: Path, ca: LocalCa, pebble_root: str) -> Iterator[Nginx]:
    """nginx serving a certificate of the local CA for a random name; clients trust the local
    CA and pebble's root (trust.pem)."""
    folder = tmp_path / "site"
    folder.mkdir()
    server = Nginx(folder, f"kte-{secrets.token_hex(4)}.keyturn.test")
    (folder / "trust.pem").write_text(ca.cert_path.read_text() + pebble_root)
    server.start(ca.bundle([server.name]))
    yield server
    server.stop()


def settings(site: Nginx, issuer: str = "local-ca", **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "domains": [site.name],
        "issuer": issuer,
        "cert_file": str(site.folder / "cert.pem"),
        "key_file": str(site.folder / "key.pem"),
        "reload_command": site.reload_command,
        "host": "127.0.0.1",
        "port": site.port,
        "ca_file": str(site.folder / "trust.pem"),
        "reload_timeout": 10,
    }
    if issuer == "acme":
        base.update(
            acme_directory=_env("KEYTURN_TEST_ACME_DIRECTORY"),
            acme_ca_file=_env("KEYTURN_TEST_ACME_CA_FILE"),
            acme_webroot=_env("KEYTURN_TEST_ACME_WEBROOT"),
        )
    else:
        base.update(ca_cert=str(site.folder.parent / "ca" / "ca.pem"), ca_key="keyturn:pki/ca")
    return {**base, **extra}


def plugin(site: Nginx, ca: LocalCa, refs: Refs, issuer: str = "local-ca", **extra: Any) -> Any:
    refs.add(ca.key_pem, "keyturn:pki/ca")
    return TlsCertificateTarget.from_settings(settings(site, issuer, **extra), refs.context())


def served_bundle(site: Nginx) -> str:
    return fingerprint(site.served())


# -- the plugin ---------------------------------------------------------------------------------


@pytest.mark.parametrize("issuer", ["local-ca", "acme"])
def test_generate_set_test(site: Nginx, ca: LocalCa, refs: Refs, issuer: str) -> None:
    target = plugin(site, ca, refs, issuer)
    account = Account(site.name)
    old = Secret((site.folder / "key.pem").read_text() + (site.folder / "cert.pem").read_text())
    assert target.test(account, old)
    new = target.generate(PasswordRules())
    bundle = tls_issue.parse_bundle(new, "test")
    assert bundle.leaf.subject.rfc4514_string() == f"CN={site.name}" or issuer == "acme"
    assert len(bundle.certs) >= 2  # leaf and chain
    assert not target.test(account, new)  # not served yet
    target.set(account, new, old)
    assert fingerprint(site.served()) == fingerprint(bundle.leaf)  # a verifying handshake
    assert target.test(account, new) and not target.test(account, old)
    target.set(account, new, old)  # idempotent: served already, nothing rewritten
    assert stat.S_IMODE((site.folder / "key.pem").stat().st_mode) == 0o600
    assert (site.folder / "key.pem").read_text() == bundle.key_pem.reveal()
    assert not list(Path(_env("KEYTURN_TEST_ACME_WEBROOT")).rglob(".keyturn-*"))


def test_a_failed_reload_puts_the_current_files_back(site: Nginx, ca: LocalCa, refs: Refs) -> None:
    target = plugin(site, ca, refs)
    old = Secret((site.folder / "key.pem").read_text() + (site.folder / "cert.pem").read_text())
    before = (site.folder / "cert.pem").read_text()
    broken = plugin(site, ca, refs, reload_command=["false"])
    new = target.generate(PasswordRules())
    with pytest.raises(TargetRejected, match="reload_command exited with 1"):
        broken.set(Account(site.name), new, old)
    assert (site.folder / "cert.pem").read_text() == before
    assert target.test(Account(site.name), old)


def test_a_chain_that_does_not_verify_is_an_error(
    site: Nginx, ca: LocalCa, refs: Refs, tmp_path: Path
) -> None:
    other = tmp_path / "other.pem"
    other.write_text(LocalCa(tmp_path / "ca").cert_path.read_text())  # a stranger's CA
    target = plugin(site, ca, refs, ca_file=str(other))
    old = Secret((site.folder / "key.pem").read_text() + (site.folder / "cert.pem").read_text())
    with pytest.raises(TargetRejected, match="chain does not verify"):
        target.test(Account(site.name), old)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"issuer": "acme"}, "acme_directory"),
        ({"reload_command": None}, "reload_command"),
        ({"ca_key": "-----BEGIN PRIVATE KEY-----x"}, "literally"),
        ({"domains": []}, "domains"),
    ],
)
def test_settings_are_checked(site: Nginx, change: dict[str, Any], error: str) -> None:
    with pytest.raises(Exception, match=error) as caught:
        TlsCertificateTarget.config_model.model_validate({**settings(site), **change})
    assert "BEGIN PRIVATE" not in str(caught.value)


# -- through keyturn -----------------------------------------------------------------------------


def _rig(kt: Harness, site: Nginx, ca: LocalCa, issuer: str = "local-ca", **kw: Any) -> ProviderRig:
    (kt.home / "ca.key").write_text(ca.key_pem)
    (kt.home / "initial.pem").write_text(
        (site.folder / "key.pem").read_text() + (site.folder / "cert.pem").read_text()
    )
    extra = """
[[credentials]]
id = "pki/ca"
kind = "encryption-key"
initial_secret = "file:ca.key"
"""
    rig = ProviderRig(
        kt,
        "tls-certificate",
        settings(site, issuer),
        site.name,
        kind="tls-certificate",
        strategy="single",
        cred="acme/www-tls",
        extra=extra,
        initial_ref="file:initial.pem",
        **kw,
    )
    return rig


@pytest.mark.parametrize("issuer", ["local-ca", "acme"])
def test_rotation_under_a_handshake_loop_drops_nothing(
    kt: Harness, site: Nginx, ca: LocalCa, issuer: str
) -> None:
    rig = _rig(kt, site, ca, issuer)
    rig.apply()
    assert kt.cli("verify", rig.cred).code == 0
    first = site.served().serial_number
    with HandshakeLoop(site) as loop:
        rig.rotate()
        rig.rotate()
    assert rig.last_rotation()["status"] == "done"
    assert loop.failures == [] and loop.ok > 0
    assert loop.serials[0] == first and len(set(loop.serials)) == 3  # two new certificates
    served = site.served()
    assert fingerprint(served) == fingerprint(tls_issue.parse_bundle(Secret(rig.get()), "t").leaf)
    assert served.serial_number == loop.serials[-1]
    assert rig.states() == ["current", "retired", "retired"]
    assert kt.cli("verify", rig.cred).code == 0


@pytest.mark.parametrize("point", [p for p in CRASH_POINTS if p != "create:issued"])
def test_killed_at_every_step_then_resumed(
    kt: Harness, site: Nginx, ca: LocalCa, point: str
) -> None:
    rig = _rig(kt, site, ca)
    rig.apply()
    old = site.served().serial_number
    assert run_killed(kt, point, "rotate", rig.cred, "--reason", "crash", env={}) == -9
    site.served()  # whatever the crash left, the endpoint serves a chain that verifies
    rig.finish()
    current = tls_issue.parse_bundle(Secret(rig.get()), "t")
    assert site.served().serial_number == current.leaf.serial_number != old
    assert (site.folder / "key.pem").read_text() == current.key_pem.reveal()
    assert rig.states() == ["current", "retired"]


def test_expiry_makes_a_certificate_due_before_its_max_age(
    kt: Harness, site: Nginx, ca: LocalCa
) -> None:
    """A 30-day certificate under a 365-day policy is due at 2/3 of its life (renew_at)."""
    short = ca.bundle([site.name], validity=timedelta(days=30))
    rig = _rig(kt, site, ca)
    (kt.home / "initial.pem").write_text(short.reveal())
    rig.policy = {"max_age": "365d"}
    rig.apply()
    with kt.app.db.read() as session:
        cred = session.execute(select(Credential).where(Credential.id == rig.cred)).scalar_one()
        due = cred.due_at
    not_before, not_after = tls_issue.parse_bundle(short, "t").validity()
    assert due is not None
    assert abs(due - (not_before + (not_after - not_before) * 2 / 3)) < timedelta(seconds=1)
    assert due < datetime.now(UTC) + timedelta(days=21)
    later = (due + timedelta(hours=1)).isoformat()
    assert rig.ok("run-due", "--at", later, "--execute").code == 0
    assert rig.last_rotation()["status"] == "done"
    renewed = tls_issue.parse_bundle(Secret(rig.get()), "t").leaf
    assert fingerprint(site.served()) == fingerprint(renewed)


def test_no_private_key_in_logs_audit_or_errors(
    kt: Harness, site: Nginx, ca: LocalCa, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    rig = _rig(kt, site, ca)
    rig.apply()
    outputs = [rig.rotate().out, kt.cli("verify", rig.cred).out]
    keys = [tls_issue.parse_bundle(Secret(rig.get()), "t").key_pem.reveal(), ca.key_pem]
    rig.settings["reload_command"] = ["false"]
    rig.kt.write("keyturn.toml", rig.inventory())
    rig.ok("apply", "keyturn.toml")
    failed = kt.cli("rotate", rig.cred, "--reason", "x")
    outputs += [failed.out, failed.err, kt.cli("show", rig.cred, "--json").out]
    texts = written_texts(kt, [*outputs, caplog.text], inputs=("initial.pem",))
    for key in keys:
        body = [line for line in key.splitlines() if "-----" not in line]
        assert body and not any(line in texts for line in body)


def test_reload_by_signal_to_the_pid_file(site: Nginx, ca: LocalCa, refs: Refs) -> None:
    """reload_signal = "HUP" with pid_file: nginx re-reads its files on SIGHUP."""
    target = plugin(
        site,
        ca,
        refs,
        reload_command=None,
        reload_signal="HUP",
        pid_file=str(site.folder / "nginx.pid"),
    )
    old = Secret((site.folder / "key.pem").read_text() + (site.folder / "cert.pem").read_text())
    new = target.generate(PasswordRules())
    target.set(Account(site.name), new, old)
    assert target.test(Account(site.name), new) and not target.test(Account(site.name), old)
