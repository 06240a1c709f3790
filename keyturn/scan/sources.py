"""Where the documents come from: folders and files, git's index (``--staged``), and the
blobs of git history (``--git [RANGE]``).

Binary files are skipped (a NUL byte in the first 8 KiB, git's own test), and so are files
over the size limit and symbolic links; each skip is counted, and the report says how many.
Inside a git work tree, files git ignores are skipped as git would (``git ls-files``).

In history, each blob is read once, however many commits hold it, and named by the oldest
commit of the range that brought it in at that path: a secret added and removed later is
found in the commit that added it.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from keyturn.domain.errors import UsageError
from keyturn.scan.model import Document, Origin

BINARY_SNIFF = 8192
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
_SKIP_DIRS = {".git", ".hg", ".svn", "__pycache__", "node_modules", ".venv", ".tox", ".mypy_cache"}


@dataclass
class Skipped:
    binary: int = 0
    too_large: int = 0
    unreadable: int = 0
    paths: list[str] = field(default_factory=list)  # the first few, for -v and JSON

    def add(self, reason: str, path: str) -> None:
        setattr(self, reason, getattr(self, reason) + 1)
        if len(self.paths) < 20:
            self.paths.append(path)

    @property
    def total(self) -> int:
        return self.binary + self.too_large + self.unreadable


def is_binary(data: bytes) -> bool:
    return b"\0" in data[:BINARY_SNIFF]


def _git(repo: Path, *args: str, data: bytes | None = None) -> bytes:
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), *args], input=data, capture_output=True, check=False
        )
    except FileNotFoundError as exc:
        raise UsageError("git is not installed; --git and --staged need it") from exc
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip().splitlines()
        raise UsageError(f"git {args[0]} failed: {message[-1] if message else 'no message'}")
    return done.stdout


def repository(path: Path) -> Path:
    """The top of the git work tree that holds *path*."""
    start = path if path.is_dir() else path.parent
    try:
        top = _git(start, "rev-parse", "--show-toplevel")
    except UsageError as exc:
        raise UsageError(f"{path} is not in a git repository") from exc
    return Path(top.decode().strip())


def _in_work_tree(folder: Path) -> bool:
    done = subprocess.run(
        ["git", "-C", str(folder), "rev-parse", "--is-inside-work-tree"],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0 and done.stdout.strip() == b"true"


@dataclass
class Source:
    """Documents to scan, counted and skipped as they are read."""

    max_bytes: int = DEFAULT_MAX_BYTES
    skipped: Skipped = field(default_factory=Skipped)
    total_bytes: int = 0

    def _keep(self, path: str, data: bytes) -> bool:
        if len(data) > self.max_bytes:
            self.skipped.add("too_large", path)
            return False
        if is_binary(data):
            self.skipped.add("binary", path)
            return False
        self.total_bytes += len(data)
        return True

    # -- folders and files -----------------------------------------------------------------

    def files(self, paths: Sequence[Path]) -> Iterator[Document]:
        for root in paths:
            if not root.exists():
                raise UsageError(f"{root}: no such file or folder")
            for path, shown in self._walk(root):
                try:
                    if path.stat().st_size > self.max_bytes:
                        self.skipped.add("too_large", shown)
                        continue
                    data = path.read_bytes()
                except OSError:
                    self.skipped.add("unreadable", shown)
                    continue
                if self._keep(shown, data):
                    yield Document(shown, data)

    def _walk(self, root: Path) -> Iterator[tuple[Path, str]]:
        if root.is_file():
            yield root, root.as_posix()
            return
        if _in_work_tree(root):
            listed = _git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
            for name in sorted(
                {n for n in listed.decode(errors="surrogateescape").split("\0") if n}
            ):
                path = root / name
                if path.is_file() and not path.is_symlink():
                    yield path, (root / name).as_posix()
            return
        for folder, dirs, names in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
            for name in sorted(names):
                path = Path(folder) / name
                if path.is_file() and not path.is_symlink():
                    yield path, path.as_posix()

    # -- git's index -------------------------------------------------------------------------

    def staged(self, repo: Path, paths: Sequence[str] = ()) -> Iterator[Document]:
        """The staged version of each added, copied, modified or renamed file."""
        listed = _git(
            repo, "diff", "--cached", "--name-only", "-z", "--diff-filter=ACMR", "--", *paths
        )
        names = [n for n in listed.decode(errors="surrogateescape").split("\0") if n]
        specs = [f":{name}" for name in names]
        for name, data in zip(names, self._blobs(repo, specs), strict=True):
            if data is not None and self._keep(name, data):
                yield Document(name, data, Origin.STAGED)

    # -- history -----------------------------------------------------------------------------

    def history(
        self, repo: Path, revisions: str | None, paths: Sequence[str] = ()
    ) -> Iterator[Document]:
        """Every blob the commits of *revisions* (default: all refs) brought in."""
        rev_args = revisions.split() if revisions else ["--all"]
        commits = _git(repo, "rev-list", "--reverse", *rev_args, "--", *paths).decode().split()
        first: dict[tuple[str, str], str] = {}
        for commit in commits:
            for blob, name in self._changed(repo, commit, paths):
                first.setdefault((blob, name), commit)
        keys = list(first)
        for (blob, name), data in zip(keys, self._blobs(repo, [b for b, _ in keys]), strict=True):
            if data is not None and self._keep(name, data):
                yield Document(name, data, Origin.HISTORY, first[(blob, name)])

    @staticmethod
    def _changed(repo: Path, commit: str, paths: Sequence[str]) -> Iterator[tuple[str, str]]:
        raw = _git(
            repo, "diff-tree", "-r", "--root", "--no-renames", "--no-commit-id", "-z",
            "--diff-filter=AM", commit, "--", *paths,
        )  # fmt: skip
        fields = raw.decode(errors="surrogateescape").split("\0")
        # ":old-mode new-mode old-blob new-blob status" NUL path NUL ...
        for meta, name in zip(fields[0::2], fields[1::2], strict=False):
            parts = meta.split()
            if len(parts) == 5 and parts[1] != "160000":  # not a submodule
                yield parts[3], name

    def _blobs(self, repo: Path, specs: Sequence[str]) -> Iterator[bytes | None]:
        """The contents of *specs* (blob ids or ``:path``), None for a missing one, streamed
        through one ``git cat-file --batch`` (history can be larger than memory)."""
        if not specs:
            return
        proc = subprocess.Popen(
            ["git", "-C", str(repo), "cat-file", "--batch"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert proc.stdin is not None and proc.stdout is not None
        feeder = threading.Thread(target=_feed, args=(proc.stdin, specs), daemon=True)
        feeder.start()
        try:
            for spec in specs:
                header = proc.stdout.readline().split()
                if len(header) < 3 or header[1] != b"blob":
                    self.skipped.add("unreadable", spec)
                    yield None
                    continue
                data = proc.stdout.read(int(header[2]))
                proc.stdout.read(1)  # the newline after each blob
                yield data
        finally:
            proc.kill()
            proc.wait()
            feeder.join()


def _feed(stdin: IO[bytes], specs: Sequence[str]) -> None:
    try:
        for spec in specs:
            stdin.write(f"{spec}\n".encode())
        stdin.close()
    except (BrokenPipeError, ValueError):  # the reader stopped early
        pass
