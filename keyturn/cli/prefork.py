"""`keyturn serve --workers N`: N server processes sharing one listening socket.

One Python process runs one request's work at a time (the GIL), so one process uses one core.
The parent binds the socket, forks N children and supervises them; each child opens keyturn
anew (its own database connections and its own audit writer: nothing made before the fork is
shared) and runs uvicorn on the inherited socket. The kernel hands each new connection to a
child that is waiting in accept. SIGINT or SIGTERM to the parent stops every child gracefully;
a child that dies unexpectedly stops the others and `serve` exits 1: a supervisor (systemd,
Kubernetes) restarts the whole service, and a crash loop is not hidden.

Per-process state stays per process: the failed-login limiter counts per child (N children
allow N times the failures per address before answering 429).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import sys
from collections.abc import Callable
from types import FrameType

from keyturn.domain.errors import UsageError


def cannot_listen(host: str, port: int, exc: OSError) -> UsageError:
    """Why *host*:*port* cannot be bound, pointing at the setting that is wrong."""
    if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
        return UsageError(
            f"cannot listen on {host} ({exc.strerror}): not an address of this machine; "
            "choose another with --host or KEYTURN_HOST"
        )
    return UsageError(
        f"cannot listen on {host}:{port} ({exc.strerror}): choose another port with --port "
        "or KEYTURN_PORT"
    )


def listen(host: str, port: int) -> socket.socket:
    """The shared listening socket (a port in use is one clear line)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise cannot_listen(host, port, exc) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _child(serve: Callable[[int], None], index: int) -> int:
    """Fork one child that runs serve(index) and exits; returns its pid (in the parent)."""
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        serve(index)
    except KeyboardInterrupt:
        pass
    except BaseException as exc:  # the child's last word: one line, no secret
        sys.stderr.write(f"error: server process {index} failed ({exc.__class__.__name__})\n")
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def supervise(serve: Callable[[int], None], workers: int) -> int:
    """Run serve(0) ... serve(workers - 1) in child processes until a signal or a crash;
    returns the exit code for `serve`."""
    children = {_child(serve, i): i for i in range(workers)}
    stopping = False

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            _signal(pid, signal.SIGTERM)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    try:
        while children:
            pid, status = os.wait()
            index = children.pop(pid, None)
            if index is None:
                continue
            if not stopping:
                how = os.waitstatus_to_exitcode(status)
                sys.stderr.write(
                    f"error: server process {index} exited ({how}); stopping the others\n"
                )
                code = 1
                stop(signal.SIGTERM, None)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return code


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)
