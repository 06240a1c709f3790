"""`pip install 'keyturn[client]'` as an application's author runs it: in a fresh venv (no site
packages of the suite's), from the package index, in a copy of the repository. The SDK imports,
reads and falls back; FastAPI, SQLAlchemy and cryptography are not installed at all; the
`keyturn` command says in one line that it needs the server extra.

It installs from the index (pip's cache makes later runs faster), as
tests/docs/test_readme_install.py does; it runs on the SQLite pass only.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs.test_readme_install import _copy_repository, _newcomer_env
from tests.servers import unused_port

INSTALL_SECONDS = 600
LIBS = ("fastapi", "sqlalchemy", "cryptography", "pydantic", "typer", "uvicorn")
PROBE = """
import json, pathlib, sys
from importlib.metadata import distributions
from keyturn.client import Client, errors
absent = []
for name in json.loads(sys.argv[2]):
    try:
        __import__(name)
    except ImportError:
        absent.append(name)
folder = pathlib.Path(sys.argv[1])
(folder / "acme").mkdir()
(folder / "acme" / "db").write_text("s3cret-value")
with Client.files(folder, watch=False) as client:
    assert client.use("acme/db", lambda v: v.value) == "s3cret-value"
print(json.dumps({
    "absent": absent,
    "installed": sorted(d.metadata["Name"].lower() for d in distributions()),
    "keyturn": sorted(m for m in sys.modules if m.split(".")[0] == "keyturn"),
}))
"""


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding what `pip install '<clone>[client]'` installed."""
    tmp = tmp_path_factory.mktemp("sdk-install")
    clone = tmp / "keyturn"
    _copy_repository(clone)
    venv = tmp / "venv"
    env = _newcomer_env(unused_port())
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", f"{clone}[client]"],
        check=True,
        env=env,
        timeout=INSTALL_SECONDS,
        cwd=tmp,
    )
    return venv


@pytest.mark.timeout(INSTALL_SECONDS + 60)
def test_the_client_extra_installs_the_sdk_alone(client_venv: Path, tmp_path: Path) -> None:
    probe = subprocess.run(
        [str(client_venv / "bin" / "python"), "-c", PROBE, str(tmp_path), json.dumps(LIBS)],
        capture_output=True,
        text=True,
        env=_newcomer_env(unused_port()),
        cwd=tmp_path,
    )
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout.splitlines()[-1])
    assert found["absent"] == list(LIBS)
    assert "keyturn" in found["installed"] and "httpx" in found["installed"]
    assert not set(found["installed"]) & {"fastapi", "sqlalchemy", "cryptography", "alembic"}
    assert all(m == "keyturn" or m.startswith("keyturn.client") for m in found["keyturn"])


@pytest.mark.timeout(INSTALL_SECONDS + 60)
def test_the_command_line_names_the_server_extra(client_venv: Path, tmp_path: Path) -> None:
    for args in (["--help"], ["list"]):
        done = subprocess.run(
            [str(client_venv / "bin" / "keyturn"), *args],
            capture_output=True,
            text=True,
            env=_newcomer_env(unused_port()),
            cwd=tmp_path,
        )
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert done.stdout == ""
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
        assert "needs the server extra" in lines[0]
        assert "pip install 'keyturn[server]'" in lines[0]
