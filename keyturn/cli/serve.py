"""`keyturn serve`: the dashboard and the REST API on uvicorn."""

from __future__ import annotations

import logging
import socket
import threading
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer

from keyturn.cli import output
from keyturn.cli.main import app, open_app
from keyturn.domain.errors import PluginMissing
from keyturn.settings import Settings

if TYPE_CHECKING:
    import uvicorn

    from keyturn.app import Keyturn

LOOPBACK = ("127.0.0.1", "::1", "localhost")


GRACEFUL_SECONDS = 2


def build_server(
    instance: Keyturn,
    host: str = "127.0.0.1",
    port: int = 8080,
    log_level: str = "info",
    *,
    check: bool = True,
) -> uvicorn.Server:
    """A uvicorn server for the API of *instance* (not started); the port is checked first,
    so that a port in use is one clear line."""
    if check:
        check_port(host, port)
    try:
        import uvicorn

        from keyturn.api import create_app
    except ImportError as exc:
        raise PluginMissing(
            f"`keyturn serve` needs {exc.name}: pip install 'keyturn[server]'"
        ) from exc
    api = create_app(instance)
    config = uvicorn.Config(
        api,
        host=host,
        port=port,
        http=_protocol(),
        log_level=log_level,
        server_header=False,
        # Above info the access log drops every line anyway; off, uvicorn does not even
        # format the client address and path of each request.
        access_log=log_level.lower() in ("trace", "debug", "info"),
        # Client addresses feed the failed-login limiter: trust no forwarded headers.
        proxy_headers=False,
        # SDK watchers hold requests open (a long poll of up to a minute): a stop does not
        # wait for them; the SDK asks again elsewhere.
        timeout_graceful_shutdown=GRACEFUL_SECONDS,
    )
    server = uvicorn.Server(config)
    handle_exit = server.handle_exit  # what uvicorn's SIGINT and SIGTERM handlers call

    def stop(sig: int, frame: FrameType | None) -> None:
        # A held read (an SDK's or `keyturn run`'s `?wait=`) answers 304 within a poll, so
        # the stop finishes its requests instead of cancelling them at the timeout.
        api.state.stopping = True
        handle_exit(sig, frame)

    server.handle_exit = stop  # type: ignore[method-assign]
    return server


def _protocol() -> Any:
    """httptools with a bound on request heads (keyturn.api.http); without httptools,
    uvicorn's h11, which bounds them itself (h11_max_incomplete_event_size)."""
    try:
        from keyturn.api.http import BoundedHead
    except ImportError:
        return "h11"
    return BoundedHead


def serve_processes(
    settings: Settings, host: str, port: int, log_level: str, *, workers: int, with_worker: bool
) -> int:
    """`--workers N`: N processes on one socket (keyturn.cli.prefork); the scheduler worker,
    if asked for, runs in the first of them only."""
    from keyturn.app import Keyturn
    from keyturn.cli import prefork

    sock = prefork.listen(host, port)

    def child(index: int) -> None:
        instance = Keyturn.open(settings)
        try:
            server = build_server(instance, host, port, log_level, check=False)
            run(instance, server, with_worker=with_worker and index == 0, sockets=[sock])
        finally:
            instance.close()

    try:
        return prefork.supervise(child, workers)
    finally:
        sock.close()


def check_port(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            from keyturn.cli.prefork import cannot_listen

            raise cannot_listen(host, port, exc) from None


def run(
    instance: Keyturn,
    server: uvicorn.Server,
    *,
    with_worker: bool = False,
    sockets: list[socket.socket] | None = None,
) -> None:
    """Serve until uvicorn stops (Ctrl-C, SIGTERM); with a worker thread, stop it too."""
    if not with_worker:
        server.run(sockets=sockets)
        return
    from keyturn.scheduler.worker import Worker

    stop = threading.Event()
    worker = threading.Thread(
        target=Worker(instance).run_forever, args=(stop,), name="keyturn-worker", daemon=True
    )
    worker.start()
    # In uvicorn's own log, beside its "Uvicorn running on" line.
    logging.getLogger("uvicorn.error").info("keyturn worker running in this process")
    try:
        server.run(sockets=sockets)
    finally:
        stop.set()
        worker.join(timeout=60)


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[
        str, typer.Option(envvar="KEYTURN_HOST", show_envvar=True, help="Address to listen on")
    ] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option(envvar="KEYTURN_PORT", show_envvar=True, min=1, max=65535, help="TCP port"),
    ] = 8080,
    log_level: Annotated[
        str, typer.Option("--log-level", help="uvicorn log level (warning, info, debug)")
    ] = "info",
    with_worker: Annotated[
        bool,
        typer.Option(
            "--with-worker",
            help="Also run the scheduler and rotation worker (`keyturn worker`) in this process",
        ),
    ] = False,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            envvar="KEYTURN_WORKERS",
            show_envvar=True,
            min=1,
            max=64,
            help="Server processes on one port (one per core uses them all)",
        ),
    ] = 1,
) -> None:
    """Serve the dashboard (/) and the REST API (/api/v1) until interrupted."""
    instance = open_app(ctx)  # checks the database and keys (and migrates) before serving
    if host not in LOOPBACK:
        output.errors.print(
            f"warning: listening on {host} without TLS; put a TLS proxy in front: API tokens "
            "and secrets travel in these requests",
            highlight=False,
        )
    if workers == 1:
        run(instance, build_server(instance, host, port, log_level), with_worker=with_worker)
        return
    instance.close()  # each server process opens its own connections after the fork
    code = serve_processes(
        instance.settings, host, port, log_level, workers=workers, with_worker=with_worker
    )
    if code:
        raise typer.Exit(code)
