"""`keyturn demo --no-serve` runs seed 000 end to end on a fresh directory and exits 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from keyturn.app import Keyturn
from keyturn.db import repo
from keyturn.settings import Settings
from tests.support.keyturn import ROOT


def test_demo_shows_rotation_notice_mails_and_verified_audit(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "tests.support.cli", "demo", "--no-serve", "--dir", "demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "rotated: acme/smtp-admin; notice sent for: globex/smtp-admin" in out
    assert "admins@acme.example" in out and "acme/smtp-admin rotated" in out
    assert "globex/smtp-admin will be rotated on" in out
    assert "Hello from the rotated account" in out and "old password is refused" in out
    assert "audit log verified" in out and "Traceback" not in result.stderr
    # The demo's secrets are nowhere in what it printed.
    home = tmp_path / "demo"
    app = Keyturn.open(
        Settings(db=f"sqlite:///{home / 'keyturn.db'}", master_key_file=str(home / "keyturn.key"))
    )
    try:
        with app.db.read() as session:
            values = [
                app.vault.reveal(v).reveal()
                for c in repo.list_credentials(session)
                for v in repo.versions(session, c.id)
            ]
    finally:
        app.close()
    assert len(values) == 4
    assert not any(v in out or v in result.stderr for v in values)
    # Running it again starts afresh.
    again = subprocess.run(
        [sys.executable, "-m", "tests.support.cli", "demo", "--no-serve", "--dir", "demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert again.returncode == 0, again.stderr
