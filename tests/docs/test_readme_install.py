"""README command 1, as a newcomer runs it: in a copy of the repository, with a fresh venv
(no site packages of the suite's), `pip install` from the package index, then `keyturn demo`
must end serving an API that answers, not an error.

It installs from the index (pip's cache makes later runs faster), so it is the slowest test
of the suite; it runs on the SQLite pass only.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.servers import unused_port

ROOT = Path(__file__).resolve().parents[2]
INSTALL_SECONDS = 900


def command_one() -> str:
    """The first line of the README's first code block."""
    text = (ROOT / "README.md").read_text()
    found = re.search(r"^```sh\n(?P<first>.+)$", text, re.MULTILINE)
    assert found, "README.md has no ```sh block"
    return found["first"]


def test_readme_starts_with_exactly_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"^```sh\n(?P<body>.*?)^```", text, re.MULTILINE | re.DOTALL)
    assert block and text.index("```") == block.start()
    lines = [ln for ln in block["body"].splitlines() if ln.strip()]
    assert len(lines) == 2 and lines[1] == "scripts/test"
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("exec scripts/test")


def _copy_repository(into: Path) -> None:
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        source = ROOT / os.fsdecode(name)
        if source.is_file():
            target = into / os.fsdecode(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def _newcomer_env(port: int) -> dict[str, str]:
    """No venv of the suite's, no keyturn settings: a login shell's environment."""
    ours = {str(Path(sys.prefix) / "bin"), str(Path(sys.executable).parent)}
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p not in ours]
    drop = ("KEYTURN_", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PIP_REQUIRE_VIRTUALENV")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(PATH=os.pathsep.join(path), KEYTURN_PORT=str(port))
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


@pytest.mark.timeout(INSTALL_SECONDS + 120)
def test_readme_command_one_ends_serving_the_api(tmp_path: Path) -> None:
    clone = tmp_path / "keyturn"
    _copy_repository(clone)
    port = unused_port()
    proc = subprocess.Popen(
        ["bash", "-c", command_one()],
        cwd=clone,
        env=_newcomer_env(port),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + INSTALL_SECONDS
        while not any("API on http" in ln for ln in lines):
            assert proc.poll() is None, "command 1 ended:\n" + "".join(lines[-40:])
            assert time.monotonic() < deadline, "no API after:\n" + "".join(lines[-40:])
            time.sleep(0.5)
        base = f"http://127.0.0.1:{port}/api/v1"
        assert httpx.get(f"{base}/health", timeout=10).json()["status"] == "ok"
        token = next(ln for ln in lines if "admin token" in ln).split()[-1]
        listed = httpx.get(
            f"{base}/credentials", headers={"Authorization": f"Bearer {token}"}, timeout=10
        ).json()
        assert {c["id"] for c in listed["credentials"]} >= {"acme/smtp-admin"}
        docs = httpx.get(f"{base}/docs", timeout=10)
        assert docs.status_code == 200 and "swagger-ui-bundle.js" in docs.text
        assert "needs uvicorn" not in "".join(lines)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
