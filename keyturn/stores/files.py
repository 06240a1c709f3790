"""Writing secret files safely, shared by the `file` and `dotenv` stores.

A file is replaced atomically: the new content goes to a temporary file beside it (mode 0600
from its creation, so no other user ever sees it readable), is flushed to disk, then renamed
over the old one, and the directory is synced so the rename survives a power cut. A reader
sees the old file or the new one, never half of it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from keyturn.stores.base import StoreRefused

MODE = 0o600


def write_atomic(path: Path, text: str, mode: int = MODE) -> None:
    """Replace *path* with *text* atomically, mode *mode* (0600)."""
    try:
        make_private_dirs(path.parent)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".keyturn-")
        try:
            with os.fdopen(fd, "w") as handle:
                os.fchmod(handle.fileno(), mode)
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        _sync_dir(path.parent)
    except OSError as exc:
        raise StoreRefused(f"cannot write {path}: {exc.strerror}") from exc


def make_private_dirs(folder: Path) -> None:
    """Create *folder* and each missing folder above it with mode 0700. `mkdir(parents=True,
    mode=0o700)` gives the mode to the last one only: the others got 0777 less the umask,
    so under umask 000 anyone could swap a tenant's folder inside the store's directory."""
    missing = []
    while not folder.is_dir():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    for each in reversed(missing):
        try:
            each.mkdir(mode=0o700)
        except FileExistsError:
            if not each.is_dir():
                raise


def _sync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_text(path: Path) -> str | None:
    """The file's text, or None when it does not exist."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreRefused(f"cannot read {path}: {exc.strerror}") from exc
