"""The SDK in a fresh venv (no site packages of the suite's) with keyturn's code and httpx
only: `keyturn.client` imports, reads and falls back without FastAPI, SQLAlchemy or
cryptography being installed at all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs.test_readme_install import _copy_repository, _newcomer_env
from tests.servers import unused_port

INSTALL_SECONDS = 600
PROBE = """
import sys, pathlib
from keyturn.client import Client, errors
for absent in ("fastapi", "sqlalchemy", "cryptography", "pydantic", "typer"):
    try:
        __import__(absent)
    except ImportError:
        continue
    raise SystemExit(f"{absent} is installed")
folder = pathlib.Path(sys.argv[1])
(folder / "acme").mkdir()
(folder / "acme" / "db").write_text("s3cret-value")
with Client.files(folder, watch=False) as client:
    assert client.use("acme/db", lambda v: v.value) == "s3cret-value"
print("sdk ok", sorted(m for m in sys.modules if m.split(".")[0] == "keyturn"))
"""


@pytest.mark.timeout(INSTALL_SECONDS + 60)
def test_sdk_needs_only_httpx(tmp_path: Path) -> None:
    clone = tmp_path / "keyturn"
    _copy_repository(clone)
    venv = tmp_path / "venv"
    env = _newcomer_env(unused_port())
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "--no-deps", str(clone)], check=True, env=env, timeout=INSTALL_SECONDS)
    subprocess.run([*pip, "httpx"], check=True, env=env, timeout=INSTALL_SECONDS)
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c", PROBE, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert probe.returncode == 0, probe.stderr
    assert "sdk ok" in probe.stdout and "keyturn.db" not in probe.stdout
