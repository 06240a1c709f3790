"""Named points in the protocol where tests inject a crash or a database failure.

`KEYTURN_TEST_CRASH_AT=<point>` makes the process SIGKILL itself on reaching that point (the
fault-injection tests run rotations in subprocesses); `arm()` does the same in-process with a
chosen failure. Points are `<step>:before`, `<step>:effect` (the step's outside effect is done,
its pointer not yet committed) and `<step>:after`.
"""

from __future__ import annotations

import os
import signal

from keyturn.domain.errors import StoreUnavailable

_armed: dict[str, str] = {}


def arm(point: str, mode: str = "dberror") -> None:
    _armed[point] = mode


def disarm() -> None:
    _armed.clear()


def checkpoint(point: str) -> None:
    if os.environ.get("KEYTURN_TEST_CRASH_AT") == point:
        os.kill(os.getpid(), signal.SIGKILL)
    mode = _armed.get(point)
    if mode == "dberror":
        del _armed[point]
        raise StoreUnavailable(f"keyturn's database is unavailable (injected at {point})")
    if mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
