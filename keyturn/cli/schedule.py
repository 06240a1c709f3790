"""Scheduling commands: plan, run-due, worker.

One story: `plan` is the calendar (every notice and rotation over the next N days);
`run-due` is one scheduler pass now, what cron runs at 02:00; `run-due --at TIME` previews
the pass at TIME and changes nothing (`--execute` runs it as of TIME, for time travel on a
test installation); `worker` makes the passes at every slot, forever.
"""

from __future__ import annotations

import signal
import threading
from datetime import datetime
from typing import Annotated

import typer

from keyturn.cli import output
from keyturn.cli.main import app, open_app
from keyturn.cli.options import Json
from keyturn.db.models import utcnow
from keyturn.domain.errors import UsageError
from keyturn.domain.inputs import parse_moment
from keyturn.scheduler.passes import PassResult
from keyturn.scheduler.plan import plan as make_plan
from keyturn.scheduler.preview import Preview, preview
from keyturn.scheduler.worker import TickResult, Worker


def parse_at(text: str | None) -> datetime:
    """--at: an ISO time (naive means UTC), in 1970-9998."""
    return parse_moment(text, "--at") if text else utcnow()


def _summary(result: TickResult) -> dict[str, object]:
    done = [o for o in result.outcomes if o.status == "done"]
    return {
        "preview": False,
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


def one_line(data: dict[str, object]) -> str:
    """What a pass did, in one line: rotated, noticed, deferred, failed, notifications."""
    parts = []
    for key in ("rotated", "waiting", "noticed", "deferred", "failed"):
        names = data[key]
        assert isinstance(names, list)
        if names:
            parts.append(f"{key} {', '.join(names)}")
    parts.append(
        f"{data['notifications_sent']} notification(s) sent, "
        f"{data['notifications_pending']} to retry"
    )
    if data["errors"]:
        parts.append(f"{len(data['errors'])} error(s)")  # type: ignore[arg-type]
    return "; ".join(parts)


@app.command("run-due")
def run_due(
    ctx: typer.Context,
    at: Annotated[
        str | None,
        typer.Option(
            "--at",
            help="Preview the pass at this UTC time (ISO, e.g. 2027-06-01T02:00Z): nothing "
            "is changed",
        ),
    ] = None,
    execute: Annotated[
        bool,
        typer.Option(
            "--execute", help="With --at: really run the pass as of that time (test installs)"
        ),
    ] = False,
    json: Json = False,
) -> None:
    """One scheduler pass now, as cron runs it: rotate what is due, send notices."""
    instance = open_app(ctx)
    moment = parse_at(at)
    if at and not execute:
        shown = preview(instance, moment)
        if json:
            output.emit_json(shown.as_dict())
        else:
            _say_preview(shown)
        return
    result = _tick(Worker(instance), moment, json)
    data = _summary(result)
    if json:
        output.emit_json(data)
    else:
        if not result.passes:
            output.say(
                f"no scheduled check is open at {moment:%Y-%m-%d %H:%M} UTC (this slot already "
                "ran); rotations and notifications in progress were carried on"
            )
        output.say(one_line(data))
        for error in result.errors:
            output.fail(error)
    if data["failed"] or result.errors:
        raise typer.Exit(1)


def _tick(worker: Worker, moment: datetime, json: bool) -> TickResult:
    with output.progress("rotating", 0, enabled=not json) as bar:
        started = 0

        def on_pass(done: PassResult) -> None:
            nonlocal started
            started += len(done.started)
            bar.total(started)

        return worker.tick(at=moment, on_pass=on_pass, on_done=bar.advance)


def _say_preview(shown: Preview) -> None:
    output.say(
        f"preview of a scheduler pass at {shown.at:%Y-%m-%d %H:%M} UTC: nothing was changed "
        "(add --execute to run it)"
    )
    if not shown.slots:
        output.say("no check is scheduled to run then (its slot already ran)")
    rows = (
        ("would rotate", shown.rotate),
        ("deferred", shown.deferred),
        ("would notice", shown.notice),
        ("would resume", shown.resume),
    )
    for label, names in rows:
        output.say(f"{label:13} {', '.join(names) if names else '-'}")
    output.say(f"notifications waiting to be sent: {shown.notifications}")


@app.command()
def worker(
    ctx: typer.Context,
    concurrency: Annotated[
        int | None, typer.Option(help="Rotations at once [env KEYTURN_CONCURRENCY, default 4]")
    ] = None,
    once: Annotated[bool, typer.Option("--once", help="One tick, then exit")] = False,
    json: Json = False,
) -> None:
    """Run the schedule continuously: passes at each check slot, rotations, retries, notices.

    Each tick that did something prints one line (stderr): what it rotated and noticed."""
    instance = open_app(ctx)
    runner = Worker(instance, concurrency)
    if once:
        data = _summary(runner.tick())
        if json:
            output.emit_json(data)
        else:
            output.say(one_line(data))
        return
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    output.errors.print(f"keyturn worker {runner.owner} running; Ctrl-C to stop", highlight=False)

    def on_tick(result: TickResult) -> None:
        if result.passes or result.outcomes or result.errors or result.delivered:
            stamp = f"{utcnow():%Y-%m-%d %H:%M:%S}Z"
            output.errors.print(f"{stamp} {one_line(_summary(result))}", highlight=False)

    runner.run_forever(stop, on_tick)
    output.errors.print("keyturn worker stopped", highlight=False)


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
    if not events:
        output.say(f"nothing is scheduled in the next {days} day(s)")
        return
    output.table(
        None,
        ["when (UTC)", "action", "credential", "tenant", "detail"],
        [[f"{e.at:%Y-%m-%d %H:%M}", e.action, e.credential_id, e.tenant, e.detail] for e in events],
    )
