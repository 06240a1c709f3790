"""`keyturn demo`: seed 000 end to end, on this machine, in under a minute."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from keyturn import auth
from keyturn.audit import log as audit
from keyturn.cli import output
from keyturn.cli.commands import status_row
from keyturn.cli.main import app
from keyturn.db import repo
from keyturn.db.models import utcnow

if TYPE_CHECKING:
    from keyturn.app import Keyturn
    from keyturn.demo import DemoResult


@app.command()
def demo(
    directory: Annotated[Path, typer.Option("--dir", help="Where the demo keeps its files")] = Path(
        "keyturn-demo"
    ),
    no_serve: Annotated[
        bool, typer.Option("--no-serve", help="Exit instead of serving the dashboard and API")
    ] = False,
    port: Annotated[
        int,
        typer.Option(
            envvar="KEYTURN_PORT", show_envvar=True, min=1, max=65535, help="Port to serve on"
        ),
    ] = 8080,
) -> None:
    """Rotate SMTP admin passwords of three tenants on a local mail server, as seed 000 asks."""
    from keyturn.cli.serve import check_port
    from keyturn.demo import run

    if not no_serve:
        check_port("127.0.0.1", port)  # before the demo, not after it
    started = time.monotonic()

    def say(text: str) -> None:
        output.console.print(f"[bold cyan]>[/bold cyan] {text}", highlight=False)

    instance, server, result = run(directory, say)
    try:
        _report(instance, result, say)
        say(
            f"audit log {'verified' if result.audit_ok else 'BROKEN'}: {result.audit_entries} "
            f"entries, hash chain intact; demo took {time.monotonic() - started:.1f}s; files in "
            f"{directory}/"
        )
        if not (result.audit_ok and result.old_refused and result.rotated and result.noticed):
            raise typer.Exit(1)
        if not no_serve:
            _serve(instance, port, say)
    finally:
        server.stop()
        instance.close()


def _report(instance: Keyturn, result: DemoResult, say: Callable[[str], None]) -> None:
    with instance.db.read() as session:
        rows = [status_row(session, c, utcnow()) for c in repo.list_credentials(session)]
    output.table(
        "inventory after the 02:00 pass",
        ["credential", "version", "age (d)", "due"],
        [[r["id"], r["version"], r["age_days"], r["due"]] for r in rows],
    )
    say(
        f"rotated: {', '.join(result.rotated) or 'none'}; notice sent for: "
        f"{', '.join(result.noticed) or 'none'}"
    )
    for box, subjects in result.mails.items():
        for subject in subjects:
            output.console.print(f"  mailbox {box:34} {subject}", highlight=False)
    say(
        "sent a message as admin@acme.example with the new password: delivered; "
        f"the old password is {'refused' if result.old_refused else 'STILL ACCEPTED'}"
    )
    with instance.db.read() as session:
        entries = list(audit.iter_entries(session))
    output.table(
        "audit trail",
        ["#", "actor", "action", "credential", "outcome", "fingerprint"],
        [
            [e.seq, e.actor, e.action, e.credential_id or "", e.outcome, (e.fingerprint or "")[:24]]
            for e in entries
            if not e.action.startswith("inventory.")
        ],
    )


def _serve(instance: Keyturn, port: int, say: Callable[[str], None]) -> None:
    """Serve the demo's keyturn on loopback until Ctrl-C, and say where to look."""
    from keyturn.cli.prefork import listen
    from keyturn.cli.serve import build_server
    from keyturn.web import sessions

    # Listening before the links are printed: a browser that follows one at once connects
    # (its request waits in the backlog until uvicorn accepts it).
    sock = listen("127.0.0.1", port)
    try:
        web = build_server(instance, "127.0.0.1", port, "warning", check=False)
        with instance.db.write() as session:
            token = auth.create_token(session, "admin", name="demo")
            code = sessions.create_link(session, token.id)
    except BaseException:
        sock.close()
        raise
    base = f"http://127.0.0.1:{port}"
    say(f"dashboard on {base}/: open {base}/signin/link?code={code} to sign in")
    say("  (that link works once, for 15 minutes; or sign in with the token printed next)")
    say(f"API on {base}/api/v1, interactive docs on {base}/api/v1/docs")
    say(f"admin token (shown once): {token.token}")
    say(f"try: curl -H 'Authorization: Bearer {token.token}' {base}/api/v1/credentials")
    say("Ctrl-C to stop")
    web.run(sockets=[sock])
