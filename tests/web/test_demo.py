"""`keyturn demo` (without --no-serve) ends serving the dashboard and prints a sign-in link
that signs a browser in once."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from tests.servers import unused_port
from tests.support.keyturn import ROOT


def test_demo_serves_the_dashboard_with_a_one_use_sign_in_link(tmp_path: Path) -> None:
    port = unused_port()
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.cli", "demo", "--dir", "demo", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while not any("API on http" in ln for ln in lines):
            assert proc.poll() is None, "".join(lines[-30:])
            assert time.monotonic() < deadline, "".join(lines[-30:])
            time.sleep(0.2)
        link = re.search(r"open (http://\S+/signin/link\?code=\S+) to sign in", "".join(lines))
        assert link, "".join(lines[-10:])
        with httpx.Client(timeout=10) as browser:
            inventory = browser.get(link[1], follow_redirects=True)
            assert inventory.status_code == 200 and str(inventory.url).endswith(f":{port}/")
            for tenant in ("acme", "globex", "initech"):
                assert f'data-id="{tenant}/smtp-admin"' in inventory.text
            page = browser.get(f"http://127.0.0.1:{port}/credentials/acme/smtp-admin")
            assert 'data-version="2"' in page.text and "rotation.done" in page.text
        with httpx.Client(timeout=10) as other:  # the link worked once
            again = other.get(link[1], follow_redirects=True)
            assert again.status_code == 401 and "used already" in again.text
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
