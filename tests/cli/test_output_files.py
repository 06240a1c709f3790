"""What `keyturn audit export -o` and `keyturn report -o` write holds what the database does
(the inventory, the audit log): mode 0600 whatever the umask, as the database is, and never
through a symbolic link someone planted at the path."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator

import pytest

from tests.support.keyturn import Harness

COMMANDS = [("audit", "export", "-o"), ("report", "-f", "json", "-o")]


@pytest.fixture
def umask_000() -> Iterator[None]:
    saved = os.umask(0)
    yield
    os.umask(saved)


@pytest.mark.parametrize("command", COMMANDS)
def test_an_export_is_0600_under_umask_000(
    kt: Harness, umask_000: None, command: tuple[str, ...]
) -> None:
    out = kt.home / "out.file"
    result = kt.cli(*command, str(out))
    assert result.code == 0, result.err
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    out.chmod(0o644)  # a file that was there: still 0600 after
    assert kt.cli(*command, str(out)).code == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


@pytest.mark.parametrize("command", COMMANDS)
def test_an_export_does_not_follow_a_planted_symlink(kt: Harness, command: tuple[str, ...]) -> None:
    victim = kt.home / "victim"
    victim.write_text("precious\n")
    link = kt.home / "out.file"
    link.symlink_to(victim)
    result = kt.cli(*command, str(link))
    assert result.code != 0 and "symbolic link" in result.err, result
    assert victim.read_text() == "precious\n"
