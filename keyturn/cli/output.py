"""Printing: Rich tables for people, JSON for machines, one-line errors on stderr.

Rich loads on first use (issue 23): `keyturn get` prints its value with one write and
`keyturn --help` prints nothing through Rich, so neither pays for importing it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

    # Made on first use by __getattr__ below.
    console: Console
    errors: Console


def _made(name: str) -> Console:
    """`console` (stdout) or `errors` (stderr), made once, when first used."""
    found: Console | None = globals().get(name)
    if found is None:
        from rich.console import Console

        if name == "console":  # piped output is not cut to 80 columns
            found = Console(width=None if sys.stdout.isatty() else 200)
        else:
            found = Console(stderr=True, highlight=False, soft_wrap=True)
        globals()[name] = found
    return found


def __getattr__(name: str) -> Any:
    if name not in ("console", "errors"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return _made(name)


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=_default, sort_keys=False) + "\n")


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A table; cells and title are plain text (a reason or an error may hold brackets)."""
    from rich.table import Table
    from rich.text import Text

    out = Table(title=Text(title) if title else None, title_justify="left", header_style="bold")
    for column in columns:
        out.add_column(column)
    for row in rows:
        # Text, not markup: a stored "[/b]" (an owner, a reason) is shown, not interpreted.
        out.add_row(*(Text("" if v is None else str(v)) for v in row))
    _made("console").print(out)


def when(value: datetime | str | None) -> str:
    if isinstance(value, str):  # an ISO time from the API
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value.strftime("%Y-%m-%d %H:%M:%SZ") if value else "-"


def fail(message: str) -> None:
    from rich.text import Text

    text = Text("error: ", style="red")
    text.append(" ".join(message.split()))
    _made("errors").print(text, highlight=False)


class Bar:
    """One progress bar: advance it, or set its total once it is known."""

    def __init__(self, bar: Progress, task: TaskID) -> None:
        self._bar, self._task = bar, task

    def advance(self, steps: int = 1) -> None:
        self._bar.advance(self._task, steps)

    def total(self, total: int) -> None:
        self._bar.update(self._task, total=total)


@contextlib.contextmanager
def progress(description: str, total: int | None, *, enabled: bool = True) -> Iterator[Bar]:
    """A Rich progress bar on stderr (drawn on a terminal only, gone when done). The caller
    prints its own one-line summary afterwards."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    errors = _made("errors")
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=errors,
        transient=True,
        disable=not (enabled and errors.is_terminal),
    )
    with bar:
        yield Bar(bar, bar.add_task(description, total=total))


# What Rich strips from printed text (rich.control.strip_control_codes): BEL, BS, VT, FF, CR.
_CONTROL = dict.fromkeys((7, 8, 11, 12, 13))


def say(text: str) -> None:
    """A line of plain text on stdout: no markup, highlighting or wrapping, control codes
    stripped and tabs expanded as Rich prints it, without loading Rich (a command's last
    line, `keyturn rotate`'s for one)."""
    sys.stdout.write(text.translate(_CONTROL).expandtabs(8) + "\n")


def warn(message: str) -> None:
    """A warning on stderr: something the user should know before it happens."""
    from rich.text import Text

    text = Text("warning: ", style="yellow")
    text.append(" ".join(message.split()))
    _made("errors").print(text, highlight=False)


def private_file(path: Path) -> TextIO:
    """*path* opened for writing, mode 0600 whatever the umask (an export or a report holds
    what the database does: the inventory, the audit log), and not through a symbolic link
    someone put at the path (it would make keyturn write wherever it points)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(exc.errno, "it is a symbolic link; keyturn does not follow it") from exc
        raise
    try:
        os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "w", encoding="utf-8")
