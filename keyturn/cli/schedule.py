"""Scheduling commands: run-due, worker, plan."""

from __future__ import annotations

import signal
import threading
from datetime import datetime
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from keyturn.cli import output
from keyturn.cli.commands import Json
from keyturn.cli.main import app, open_app
from keyturn.db.models import utcnow
from keyturn.domain.errors import UsageError
from keyturn.domain.inputs import parse_moment
from keyturn.scheduler.passes import PassResult
from keyturn.scheduler.plan import plan as make_plan
from keyturn.scheduler.worker import TickResult, Worker


def parse_at(text: str | None) -> datetime:
    """--at: an ISO time (naive means UTC), in 1970-9998."""
    return parse_moment(text, "--at") if text else utcnow()


def _summary(result: TickResult) -> dict[str, object]:
    done = [o for o in result.outcomes if o.status == "done"]
    return {
        "passes": [p.summary() for p in result.passes],
        "due": sorted({c for p in result.passes for c in p.due}),
        "deferred": sorted({c for p in result.passes for c in p.deferred}),
        "noticed": sorted({c for p in result.passes for c in p.noticed}),
        "rotated": sorted(o.credential_id for o in done),
        "waiting": sorted(o.credential_id for o in result.outcomes if o.status == "waiting"),
        "failed": sorted(
            o.credential_id for o in result.outcomes if o.status in ("failed", "retrying")
        ),
        "errors": result.errors,
        "notifications_sent": result.delivered,
        "notifications_pending": result.undelivered,
        "audit_checkpoint": result.checkpoint,
    }


@app.command("run-due")
def run_due(
    ctx: typer.Context,
    at: Annotated[
        str | None,
        typer.Option("--at", help="Evaluate as of this UTC time (ISO), e.g. to test a schedule"),
    ] = None,
    json: Json = False,
) -> None:
    """One scheduler pass, as cron would run it: rotate what is due, send notices."""
    instance = open_app(ctx)
    moment = parse_at(at)
    worker = Worker(instance)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=output.errors,
        transient=True,
        disable=json,
    ) as progress:
        task = progress.add_task("rotating", total=0)

        def on_pass(done: PassResult) -> None:
            progress.update(task, total=(progress.tasks[0].total or 0) + len(done.started))

        result = worker.tick(at=moment, on_pass=on_pass, on_done=lambda: progress.advance(task))
    data = _summary(result)
    if json:
        output.emit_json(data)
    else:
        if not result.passes:
            output.console.print(
                f"no scheduled check is open at {moment:%Y-%m-%d %H:%M} UTC "
                "(this slot already ran)",
                highlight=False,
            )
        for key in ("due", "deferred", "noticed", "rotated", "waiting", "failed"):
            if data[key]:
                output.console.print(f"{key:9} {', '.join(data[key])}", highlight=False)  # type: ignore[arg-type]
        output.console.print(
            f"notifications sent {result.delivered}, to retry {result.undelivered}", highlight=False
        )
    if data["failed"] or result.errors:
        raise typer.Exit(1)


@app.command()
def worker(
    ctx: typer.Context,
    concurrency: Annotated[
        int | None, typer.Option(help="Rotations at once [env KEYTURN_CONCURRENCY, default 4]")
    ] = None,
    once: Annotated[bool, typer.Option("--once", help="One tick, then exit")] = False,
) -> None:
    """Run the schedule continuously: passes at each check slot, rotations, retries, notices."""
    instance = open_app(ctx)
    runner = Worker(instance, concurrency)
    if once:
        output.emit_json(_summary(runner.tick()))
        return
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    output.errors.print(f"keyturn worker {runner.owner} running; Ctrl-C to stop", highlight=False)
    runner.run_forever(stop)


@app.command()
def plan(
    ctx: typer.Context,
    days: Annotated[int, typer.Option(help="How far ahead")] = 30,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant")] = None,
    at: Annotated[str | None, typer.Option("--at", help="Start from this UTC time")] = None,
    json: Json = False,
) -> None:
    """What the schedule will do and when: notices and rotations over the next N days."""
    if not 0 < days <= 3660:
        raise UsageError("--days must be between 1 and 3660")
    instance = open_app(ctx)
    events = make_plan(instance, parse_at(at), days, tenant)
    if json:
        output.emit_json(
            [
                {
                    "at": e.at,
                    "action": e.action,
                    "credential": e.credential_id,
                    "tenant": e.tenant,
                    "detail": e.detail,
                }
                for e in events
            ]
        )
        return
    output.table(
        None,
        ["when (UTC)", "action", "credential", "tenant", "detail"],
        [[f"{e.at:%Y-%m-%d %H:%M}", e.action, e.credential_id, e.tenant, e.detail] for e in events],
    )
