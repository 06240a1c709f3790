"""A directory of secret files as a store, laid out as a Kubernetes secret volume is.

Each credential is one file (`file` template, `{id}` by default: `acme/smtp-admin` under
`directory`) holding the current value and nothing else, so an application reads it as it
reads a mounted secret. Beside it, `NAME.previous` holds the previous value (when the
strategy keeps one) and `NAME.version` keyturn's version number. Every file is replaced
atomically with mode 0600 (keyturn.stores.files, shared with the dotenv store).

A file whose content keyturn did not write (someone edited it) is drift: it is not
overwritten.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from keyturn.domain.model import Secret
from keyturn.refs import settings_path
from keyturn.stores.base import (
    Found,
    Held,
    Published,
    PublishView,
    Store,
    StoreConfig,
    StoreConflict,
    StoreRefused,
)
from keyturn.stores.files import read_text, write_atomic

SUFFIXES = (".previous", ".version")


def _mark(path: Path) -> str | None:
    try:
        found = path.stat()
    except FileNotFoundError:
        return None
    return f"{found.st_ino}:{found.st_mtime_ns}"


def relative_path(template: str, credential_id: str, tenant: str) -> str:
    """The file of *credential_id* under the store's directory, by its `file` template."""
    head, _, rest = credential_id.partition("/")
    name = rest if head == tenant and rest else credential_id
    return template.format(id=credential_id, tenant=tenant, name=name)


def sidecar_clash(store: str, credential_id: str) -> str:
    """Why a credential whose file ends in .previous or .version cannot use the store."""
    return (
        f"{credential_id}: its file in store {store!r} would end in .previous or .version, "
        "the names of the files keyturn writes beside another credential's value; give it "
        f"another id, or another `file` template in [stores.{store}]"
    )


class FileConfig(StoreConfig):
    directory: str
    file: str = "{id}"


class FileStore(Store):
    """Publishes one file per secret; see the module docstring."""

    name = "file"
    config_model = FileConfig
    config: FileConfig

    @property
    def directory(self) -> Path:
        return settings_path(self.context.base_dir, self.config.directory)

    def path(self, credential_id: str, tenant: str) -> Path:
        relative = relative_path(self.config.file, credential_id, tenant)
        if relative.endswith(SUFFIXES):
            raise StoreConflict(sidecar_clash(self.context.name or "file", credential_id))
        path = (self.directory / relative).resolve()
        if not path.is_relative_to(self.directory.resolve()):
            raise StoreConflict(f"{self.context.name or 'file'}: {relative!r} leaves the directory")
        return path

    def publish(self, view: PublishView, mark: str | None) -> str | None:
        """Write NAME.previous, then NAME.version, then NAME (what readers watch) last."""
        path = self.path(view.credential_id, view.tenant)
        held = read_text(path)
        version = read_text(path.with_name(path.name + ".version"))
        current = view.current.value.reveal()
        if held == current and version == str(view.current.number):
            return _mark(path)
        previous = view.previous.value.reveal() if view.previous else None
        ours = _mark(path) == mark or (mark is None and held in (current, previous))
        if held is not None and not ours:
            raise StoreConflict(
                f"{self.context.name or 'file'}: {path} holds a value keyturn did not write; "
                "keyturn does not overwrite it. Check who changed it, then run `keyturn "
                f"verify --repair {view.credential_id}`"
            )
        if previous is not None:
            write_atomic(path.with_name(path.name + ".previous"), previous)
        write_atomic(path.with_name(path.name + ".version"), str(view.current.number))
        write_atomic(path, current)
        return _mark(path)

    def held(self, credential_id: str, tenant: str) -> Held | None:
        """The version file's number and the value; the mark is the file's identity (inode
        and modification time: every atomic write makes a new one)."""
        path = self.path(credential_id, tenant)
        value = read_text(path)
        if value is None:
            return None
        version = read_text(path.with_name(path.name + ".version")) or ""
        number = int(version) if version.isdigit() else None
        return Held(number, mark=_mark(path), value=Secret(value))

    def read(self, credential_id: str) -> tuple[Published, Secret] | None:
        held = self.held(credential_id, credential_id.partition("/")[0])
        if held is None or held.value is None:
            return None
        return Published(held.version), held.value

    def scan(self, prefix: str) -> Iterator[Found]:
        """Every file under `directory/prefix` (keyturn's .previous/.version files left out).
        A `directory` that is not there is an error: a mistyped path is not "nothing found"."""
        if not self.directory.is_dir():
            raise StoreRefused(f"file: {self.directory} is not a directory; nothing to import")
        root = self.directory / prefix
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            if path.name.startswith(".") or path.name.endswith(SUFFIXES):
                continue
            value = read_text(path)
            if value is not None:
                yield Found(str(path.relative_to(self.directory)), Secret(value))
