"""Every runnable example in README.md and docs/**/*.md runs as written (CONTRIBUTING.md,
"Doc examples are tests"): one fresh folder and one bash session per page, against the real
test servers of `.test-env`, with the installed `keyturn` on PATH. Pages are found by glob:
a new page is tested without being listed anywhere.

A page with no runnable block is still parsed (a malformed directive fails it).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.docs import markdown

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
PAGE_TIMEOUT = 280  # seconds; pytest's own timeout (300) would leave the bash running


def _ids(path: Path) -> str:
    return str(path.relative_to(ROOT))


def environment(shims: Path) -> dict[str, str]:
    """The suite's environment without keyturn's own settings (KEYTURN_TEST_* stay: the
    servers of .test-env), keyturn and `python` first on PATH."""
    shims.mkdir()
    for name in ("python", "python3"):
        # A script, not a symlink: a symlinked venv python outside its venv's bin/ does not
        # find pyvenv.cfg, and would import another keyturn than the one under test.
        (shims / name).write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
        (shims / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYTURN_")}
    env.update({k: v for k, v in os.environ.items() if k.startswith("KEYTURN_TEST_")})
    dirs = [str(shims), sysconfig.get_path("scripts"), str(Path(sys.executable).parent)]
    env["PATH"] = os.pathsep.join([*dirs, env.get("PATH", "")])
    env["COLUMNS"] = "200"
    return env


def run_page(page: Path, work: Path) -> tuple[markdown.Page, subprocess.CompletedProcess[str]]:
    """Run *page* in the empty folder work/page; outputs in work/out."""
    parsed = markdown.parse(page.read_text())
    folder, outputs = work / "page", work / "out"
    folder.mkdir()
    outputs.mkdir()
    script = markdown.script(parsed, _ids(page), str(outputs))
    (work / "page.sh").write_text(script)
    proc = subprocess.Popen(
        ["bash", str(work / "page.sh")],
        cwd=folder,
        env=environment(work / "bin"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its servers and their children go with it
    )
    try:
        out, err = proc.communicate(timeout=PAGE_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        err += f"\ndoc-test: {_ids(page)} did not finish within {PAGE_TIMEOUT}s"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    return parsed, subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def check_outputs(page: Path, parsed: markdown.Page, outputs: Path) -> list[str]:
    problems = []
    for block in parsed.blocks:
        for n, command in enumerate(block.commands):
            log = outputs / f"{block.line}.{n}"
            if not log.exists():
                return problems  # the page stopped before this command
            printed = log.read_text().splitlines()
            missing = markdown.match(command.expected, printed)
            if missing is not None:
                shown = "\n    ".join(printed[-20:])
                problems.append(
                    f"{_ids(page)}:{block.line}: `{command.text.splitlines()[0]}` did not print "
                    f"{missing.strip()!r}; it printed:\n    {shown}"
                )
    return problems


@pytest.mark.parametrize("page", PAGES, ids=_ids)
def test_page_examples_run_as_written(page: Path, tmp_path: Path) -> None:
    parsed = markdown.parse(page.read_text())
    if not parsed.runs_anything:
        return
    parsed, result = run_page(page, tmp_path)
    tail = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
    assert result.returncode == 0, f"{_ids(page)} failed (exit {result.returncode}):\n{tail}"
    problems = check_outputs(page, parsed, tmp_path / "out")
    assert not problems, "\n".join(problems)
