"""`keyturn scan`: find copies of managed credentials, and credentials keyturn does not manage."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from keyturn.app import Keyturn
from keyturn.cli import output
from keyturn.cli.main import actor, app, open_app, settings
from keyturn.domain.errors import UsageError
from keyturn.scan import baseline as baselines
from keyturn.scan import detect, leak, report
from keyturn.scan.cache import DetectionCache
from keyturn.scan.keys import ScanKeys
from keyturn.scan.managed import build_index, scan_keys
from keyturn.scan.model import Document, Finding
from keyturn.scan.run import Result
from keyturn.scan.run import scan as run_scan
from keyturn.scan.sources import Source, repository
from keyturn.settings import BY_NAME


class Format(StrEnum):
    text = "text"
    json = "json"
    sarif = "sarif"


def _open_inventory(ctx: typer.Context) -> Keyturn | None:
    """keyturn's database when one is configured (or ./keyturn.db exists); None otherwise,
    and the scan finds unmanaged credentials only. Opened even with --no-managed: its key
    keys the fingerprints, so baselines match whichever values are looked for."""
    configured = settings(ctx).db
    if configured == BY_NAME["db"].default and not Path("keyturn.db").exists():
        return None
    return open_app(ctx)


def _documents(
    source: Source, args: list[str], git: bool, staged: bool
) -> tuple[Iterator[Document], str, Path]:
    """The documents, what they are (for the progress bar), and the folder their paths are
    relative to."""
    if git and staged:
        raise UsageError("--git and --staged do not go together: pick one")
    if staged or git:
        revisions = None
        if git and args and not Path(args[0]).exists():
            revisions, args = args[0], args[1:]  # `--git RANGE [PATH...]`, as git itself reads it
        repo = repository(Path(args[0]) if args else Path.cwd())
        paths = [_inside(repo, a) for a in args]
        if staged:
            return source.staged(repo, paths), "staged files", repo
        return source.history(repo, revisions, paths), f"history ({revisions or 'all refs'})", repo
    return source.files([Path(a) for a in args or ["."]]), "files", Path.cwd()


def _inside(repo: Path, arg: str) -> str:
    try:
        return str(Path(arg).resolve().relative_to(repo))
    except ValueError as exc:
        raise UsageError(f"{arg} is outside the repository {repo}") from exc


def _progress(what: str) -> Progress:
    return Progress(
        TextColumn(f"scanning {what}"),
        BarColumn(pulse_style="cyan"),
        TextColumn("{task.fields[files]} files, {task.fields[mb]:.1f} MB"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=not sys.stderr.isatty(),
    )


def _emit(text: str, output_file: Path | None) -> None:
    if output_file is None:
        sys.stdout.write(text)
    else:
        output_file.write_text(text)


def _print_leaks(results: list[leak.LeakResult], to_stdout: bool) -> None:
    """What --rotate-leaked did: on stdout beside a text report, else on stderr (JSON has it
    in its ``rotations``, but an error is always one line on stderr)."""
    for r in results:
        if r.error:
            output.fail(f"{r.credential_id}: leak rotation failed: {r.error}")
            continue
        done = "; ".join(r.actions) or "nothing to rotate (no longer live)"
        status = f" ({r.outcome.status})" if r.outcome else ""
        console = output.console if to_stdout else output.errors
        console.print(f"{r.credential_id}: {done}{status}", highlight=False, markup=False)


Paths = Annotated[
    list[str] | None,
    typer.Argument(metavar="[RANGE] [PATH]...", help="Files and folders (default: .)"),
]
Git = Annotated[
    bool, typer.Option("--git", help="Scan git history: every commit of RANGE (default: all refs)")
]
Staged = Annotated[bool, typer.Option("--staged", help="Scan what is staged for the next commit")]
Fmt = Annotated[Format, typer.Option("--format", help="Output format")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Same as --format json")]
OutputFile = Annotated[Path | None, typer.Option("--output", "-o", help="Write the report to FILE")]
BaselineFile = Annotated[
    Path | None, typer.Option("--baseline", help="Accepted findings (fingerprints only)")
]
UpdateBaseline = Annotated[
    bool, typer.Option("--update-baseline", help="Write every finding into --baseline, exit 0")
]
RotateLeaked = Annotated[
    bool,
    typer.Option(
        "--rotate-leaked",
        help="Rotate every credential whose live value was found (leak: revoke at once)",
    ),
]
Detectors = Annotated[
    list[str] | None,
    typer.Option(
        "--detector",
        help="keyturn, credsweeper or none; repeat for several (default: keyturn, and "
        "credsweeper when the scan extra is installed)",
    ),
]
Managed = Annotated[
    bool, typer.Option("--managed/--no-managed", help="Look for keyturn's own values")
]
Jobs = Annotated[
    int, typer.Option("--jobs", "-j", min=0, help="Worker processes (0: one per core)")
]
CacheFile = Annotated[
    Path | None,
    typer.Option(
        "--cache", help="Keep what the detectors found per file content in FILE (no values)"
    ),
]
MaxFile = Annotated[
    int, typer.Option("--max-file-size", min=1, help="Skip files larger than this (MB)")
]


@app.command()
def scan(
    ctx: typer.Context,
    paths: Paths = None,
    git: Git = False,
    staged: Staged = False,
    fmt: Fmt = Format.text,
    json: JsonFlag = False,
    output_file: OutputFile = None,
    baseline: BaselineFile = None,
    update_baseline: UpdateBaseline = False,
    rotate_leaked: RotateLeaked = False,
    detectors: Detectors = None,
    managed: Managed = True,
    jobs: Jobs = 0,
    max_file_mb: MaxFile = 10,
    cache: CacheFile = None,
) -> None:
    """Find copies of keyturn's values (named by credential, version, owner and consumers)
    and hard-coded credentials keyturn does not manage. Exits 1 when a finding is new."""
    fmt = Format.json if json else fmt
    if update_baseline and baseline is None:
        raise UsageError("--update-baseline needs --baseline FILE")
    names = _detector_names(detectors)
    instance = _open_inventory(ctx)
    if rotate_leaked and instance is None:
        raise UsageError("--rotate-leaked needs keyturn's database: set KEYTURN_DB")
    keys = scan_keys(instance) if instance else ScanKeys.unkeyed()
    accepted = baselines.load(baseline, keys) if baseline and not update_baseline else None
    options = Options(list(paths or []), git, staged, managed, jobs, max_file_mb, cache)
    result = _run(instance, keys, names, options)
    if update_baseline:
        assert baseline is not None
        count = baselines.write(baseline, result.findings, keys)
        output.errors.print(
            f"wrote {count} fingerprints to {baseline}", highlight=False, markup=False
        )
        return
    new = [f for f in result.findings if accepted is None or not accepted.accepts(f)]
    leaks = leak.rotate_leaked(instance, new, actor()) if rotate_leaked and instance else []
    _report(result, new, len(result.findings) - len(new), fmt, output_file, leaks)
    if fmt != Format.json or output_file is not None:
        _print_leaks(leaks, to_stdout=fmt == Format.text and output_file is None)
    else:
        _print_leaks([r for r in leaks if r.error], to_stdout=False)
    if new or not all(r.ok for r in leaks):
        raise typer.Exit(1)


def _detector_names(chosen: list[str] | None) -> list[str]:
    if not chosen:
        names = detect.default_names()
        if "credsweeper" not in names:
            output.errors.print(
                "note: CredSweeper is not installed (pip install 'keyturn[scan]'): unmanaged "
                "credentials come from keyturn's own rules only",
                highlight=False,
                markup=False,
            )
        return names
    names = [n for n in dict.fromkeys(chosen) if n != "none"]
    for name in names:
        detect.load(name).close()  # an unknown name or a missing extra fails here, at once
    return names


@dataclass(frozen=True)
class Options:
    paths: list[str]
    git: bool
    staged: bool
    managed: bool
    jobs: int
    max_file_mb: int
    cache: Path | None


def _run(instance: Keyturn | None, keys: ScanKeys, names: list[str], o: Options) -> Result:
    index = build_index(instance, keys) if instance and o.managed else None
    if instance is None and o.managed:
        output.errors.print(
            "note: no keyturn database (set KEYTURN_DB): copies of managed values are not "
            "looked for",
            highlight=False,
            markup=False,
        )
    source = Source(max_bytes=o.max_file_mb * 1024 * 1024)
    documents, what, root = _documents(source, o.paths, o.git, o.staged)
    cache = DetectionCache(o.cache, keys, names) if o.cache else None
    try:
        with _progress(what) as bar:
            task = bar.add_task("scan", total=None, files=0, mb=0.0)
            result = run_scan(
                documents,
                keys,
                index,
                names,
                jobs=o.jobs,
                progress=lambda files, size: bar.update(task, files=files, mb=size / 1e6),
                cache=cache,
            )
    finally:
        if cache is not None:
            cache.close()
    result.skipped, result.root = source.skipped, root
    return result


def _report(
    result: Result,
    new: list[Finding],
    accepted: int,
    fmt: Format,
    output_file: Path | None,
    leaks: list[leak.LeakResult],
) -> None:
    if fmt == Format.json:
        _emit(report.as_json(result, new, accepted, leaks), output_file)
    elif fmt == Format.sarif:
        _emit(report.as_sarif(result, new, package_version("keyturn")), output_file)
    elif output_file is not None:
        with output_file.open("w") as handle:
            report.as_text(Console(file=handle, width=200), result, new, accepted)
    else:
        report.as_text(output.console, result, new, accepted)
