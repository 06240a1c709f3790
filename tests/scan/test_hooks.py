"""The pre-commit hooks this repository publishes run `keyturn scan` as pre-commit would: in
the repository being committed to, with no file names (``pass_filenames: false``)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from tests.scan.conftest import git
from tests.support.keyturn import ROOT


def run(entry: str, repo: Path) -> subprocess.CompletedProcess[str]:
    command, *args = shlex.split(entry)
    assert command == "keyturn"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYTURN_")}
    return subprocess.run(
        [sys.executable, "-m", "keyturn.cli.main", *args, "--detector", "keyturn"],
        cwd=repo,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_hooks_refuse_a_staged_credential(tmp_path: Path) -> None:
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert {h["id"] for h in hooks} == {"keyturn-scan", "keyturn-scan-credsweeper"}
    assert all(h["pass_filenames"] is False and h["language"] == "python" for h in hooks)
    repo = tmp_path / "app"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / ".netrc").write_text("machine smtp.example.com login m password Staged-9xQ2vL7k\n")
    git(repo, "add", ".netrc")
    for entry in {h["entry"] for h in hooks}:
        refused = run(entry, repo)
        assert refused.returncode == 1 and "keyturn:netrc" in refused.stdout, refused.stderr
        assert "Staged-9xQ2vL7k" not in refused.stdout + refused.stderr
    git(repo, "rm", "-q", "--cached", ".netrc")
    for entry in {h["entry"] for h in hooks}:
        assert run(entry, repo).returncode == 0
