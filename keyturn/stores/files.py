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
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
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
