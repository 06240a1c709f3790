"""Debian's Chromium driven by Playwright, and the dashboard on a real uvicorn server.

Playwright downloads no browser here: it drives the `chromium` package that
scripts/services.d/chromium.sh installs (KEYTURN_TEST_CHROMIUM), with the flags the
developers' handbook names.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import uvicorn

from keyturn.api import create_app
from keyturn.api.ratelimit import FailureLimiter
from keyturn.app import Keyturn

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    path = os.environ.get("KEYTURN_TEST_CHROMIUM")
    if not path:
        pytest.fail("KEYTURN_TEST_CHROMIUM is not set: run scripts/services, then source .test-env")
    return path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def serving(app: Keyturn) -> Iterator[str]:
    """`keyturn serve`'s application on a free loopback port, in a thread; its base URL."""
    port = _free_port()
    config = uvicorn.Config(
        create_app(app, limiter=FailureLimiter(limit=50, window=60)),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        server_header=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
