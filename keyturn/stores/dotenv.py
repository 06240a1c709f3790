"""A dotenv file as a store: `NAME=value` lines that a consumer's environment loads.

Each credential maps to one variable (`variables` setting, or the id upper-cased with
non-alphanumerics as `_`); a `NAME_VERSION` line records which version is published. The
file is rewritten atomically (temp file, fsync, rename) with mode 0600.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from keyturn.domain.errors import PublishFailed
from keyturn.domain.model import Secret
from keyturn.stores.base import Published, Store, StoreConfig


class DotenvConfig(StoreConfig):
    path: str
    variables: dict[str, str] = {}


def _var(credential_id: str) -> str:
    return re.sub(r"[^A-Z0-9]+", "_", credential_id.upper()).strip("_")


def _quote(value: str) -> str:
    return (
        "'" + value.replace("'", "'\"'\"'") + "'" if re.search(r"[^\w@%+=:,./-]", value) else value
    )


class DotenvStore(Store):
    name = "dotenv"
    config_model = DotenvConfig
    config: DotenvConfig

    @property
    def path(self) -> Path:
        path = Path(self.config.path)
        return path if path.is_absolute() else Path(self.context.base_dir) / path

    def variable(self, credential_id: str) -> str:
        return self.config.variables.get(credential_id) or _var(credential_id)

    def _lines(self) -> dict[str, str]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {}
        out = {}
        for line in text.splitlines():
            name, sep, value = line.partition("=")
            if sep and not line.startswith("#"):
                if value.startswith("'") and value.endswith("'") and len(value) >= 2:
                    value = value[1:-1].replace("'\"'\"'", "'")
                out[name.strip()] = value
        return out

    def publish(self, credential_id: str, version: int, value: Secret) -> None:
        name = self.variable(credential_id)
        lines = self._lines()
        if lines.get(name) == value.reveal() and lines.get(f"{name}_VERSION") == str(version):
            return
        lines[name] = value.reveal()
        lines[f"{name}_VERSION"] = str(version)
        body = "".join(f"{k}={_quote(v)}\n" for k, v in lines.items())
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".keyturn-")
            with os.fdopen(fd, "w") as handle:
                handle.write(body)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            raise PublishFailed(f"cannot write {self.path}: {exc.strerror}") from exc

    def read(self, credential_id: str) -> tuple[Published, Secret] | None:
        name = self.variable(credential_id)
        lines = self._lines()
        if name not in lines:
            return None
        version = lines.get(f"{name}_VERSION")
        return Published(int(version) if version and version.isdigit() else None), Secret(
            lines[name]
        )
