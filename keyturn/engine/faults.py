"""Named points in the protocol where tests inject a crash or a database failure.

`KEYTURN_TEST_CRASH_AT=<point>` makes the process SIGKILL itself on reaching that point (the
fault-injection tests run rotations in subprocesses); `arm()` does the same in-process with a
chosen failure. `KEYTURN_TEST_PAUSE_AT=<point>` with `KEYTURN_TEST_PAUSE_DIR=<dir>` holds the
process there: it creates `<dir>/reached` and carries on once `<dir>/release` exists, so a
test can look at the world mid-way without racing the clock. Points are `<step>:before`,
`<step>:effect` (the step's outside effect is done, its pointer not yet committed) and
`<step>:after`.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from keyturn.domain.errors import StoreUnavailable

_armed: dict[str, str] = {}


def arm(point: str, mode: str = "dberror") -> None:
    _armed[point] = mode


def disarm() -> None:
    _armed.clear()


def checkpoint(point: str) -> None:
    if os.environ.get("KEYTURN_TEST_CRASH_AT") == point:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get("KEYTURN_TEST_PAUSE_AT") == point:
        _pause(Path(os.environ["KEYTURN_TEST_PAUSE_DIR"]))
    mode = _armed.get(point)
    if mode == "dberror":
        del _armed[point]
        raise StoreUnavailable(f"keyturn's database is unavailable (injected at {point})")
    if mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)


def _pause(folder: Path, limit: float = 300) -> None:
    (folder / "reached").touch()
    deadline = time.monotonic() + limit  # a test that died must not leave us here for good
    while not (folder / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
