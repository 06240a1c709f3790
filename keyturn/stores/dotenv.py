"""A dotenv file as a store: `NAME=value` lines that a consumer's environment loads.

Each credential maps to one variable (`variables` setting, or the id upper-cased with
non-alphanumerics as `_`); a `NAME_VERSION` line records which version is published, and
`NAME_PREVIOUS` holds the previous value when there is one, for clients that fall back. The
file is rewritten atomically with mode 0600 (keyturn.stores.files).

Other lines of the file belong to other people, so the file has no mark to check-and-set
against: a publish replaces the credential's lines, and a value edited by hand is found by
`keyturn verify` (drift) rather than refused at publish.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from keyturn.domain.model import Secret
from keyturn.refs import settings_path
from keyturn.stores.base import (
    Found,
    Held,
    Numbered,
    Published,
    PublishView,
    Store,
    StoreConfig,
    StoreRefused,
)
from keyturn.stores.files import read_text, write_atomic


class DotenvConfig(StoreConfig):
    path: str
    variables: dict[str, str] = {}


def _var(credential_id: str) -> str:
    return re.sub(r"[^A-Z0-9]+", "_", credential_id.upper()).strip("_")


def variables_of(variables: dict[str, str], credential_id: str) -> tuple[str, str, str]:
    """The lines a credential's publish writes: its variable, NAME_VERSION and NAME_PREVIOUS
    (*variables*: the store's `variables` setting)."""
    name = variables.get(credential_id) or _var(credential_id)
    return name, f"{name}_VERSION", f"{name}_PREVIOUS"


def _quote(value: str) -> str:
    return (
        "'" + value.replace("'", "'\"'\"'") + "'" if re.search(r"[^\w@%+=:,./-]", value) else value
    )


def _one_line(value: str) -> bool:
    """Does *value* stay on one line? Every reader of the file (`parse` below, docker's
    --env-file, systemd) splits it into lines first: a value with a line break in it would
    become lines of its own, setting any variable (another credential's, LD_PRELOAD)."""
    return len(f"x{value}x".splitlines()) == 1


def _name_of(line: str) -> str | None:
    """The variable a `NAME=value` line (or `export NAME=value`) sets; None for others."""
    name, sep, _ = line.partition("=")
    if not sep or line.lstrip().startswith("#"):
        return None
    return name.strip().removeprefix("export ").strip()


def rewrite(text: str, wanted: dict[str, str]) -> str:
    """*text* with the lines of *wanted*'s variables set to their values (`export` and the
    indent kept; a repeated line of one dropped, as it would override the first) and the
    missing ones appended; every other line exactly as it was, comments and quoting too."""
    out: list[str] = []
    done: set[str] = set()
    for line in text.splitlines(keepends=True):
        name = _name_of(line)
        if name is not None and name in wanted:
            if name in done:
                continue
            done.add(name)
            stripped = line.lstrip()
            lead = line[: len(line) - len(stripped)]
            export = "export " if stripped.startswith("export ") else ""
            line = f"{lead}{export}{name}={_quote(wanted[name])}\n"
        out.append(line)
    if out and not out[-1].endswith("\n"):
        out[-1] += "\n"
    out += [f"{k}={_quote(v)}\n" for k, v in wanted.items() if k not in done]
    return "".join(out)


def parse(text: str) -> dict[str, str]:
    """`NAME=value` lines (single-quoted values unquoted); comments and blanks skipped."""
    out = {}
    for line in text.splitlines():
        name = _name_of(line)
        if name is not None:
            value = line.partition("=")[2]
            if value.startswith("'") and value.endswith("'") and len(value) >= 2:
                value = value[1:-1].replace("'\"'\"'", "'")
            elif value.startswith('"') and value.endswith('"') and len(value) >= 2:
                value = value[1:-1]
            out[name] = value
    return out


class DotenvStore(Store):
    name = "dotenv"
    config_model = DotenvConfig
    config: DotenvConfig

    @property
    def path(self) -> Path:
        return settings_path(self.context.base_dir, self.config.path)

    def variable(self, credential_id: str) -> str:
        return variables_of(self.config.variables, credential_id)[0]

    def _lines(self) -> dict[str, str]:
        return parse(read_text(self.path) or "")

    def publish(self, view: PublishView, mark: str | None) -> str | None:
        """Write the credential's lines; other lines of the file are kept as they are."""
        name = self.variable(view.credential_id)
        for version in (view.current, view.previous):
            self._check_value(view.credential_id, version)
        text = read_text(self.path) or ""
        lines = parse(text)
        wanted = {name: view.current.value.reveal(), f"{name}_VERSION": str(view.current.number)}
        if view.previous is not None:
            wanted[f"{name}_PREVIOUS"] = view.previous.value.reveal()
        if all(lines.get(k) == v for k, v in wanted.items()):
            return str(view.current.number)
        write_atomic(self.path, rewrite(text, wanted))
        return str(view.current.number)

    def _check_value(self, credential_id: str, version: Numbered | None) -> None:
        if version is not None and not _one_line(version.value.reveal()):
            raise StoreRefused(
                f"{self.context.name or 'dotenv'}: version {version.number} of {credential_id} "
                "has a line break, which a dotenv line cannot hold; give it a value without one"
            )

    def held(self, credential_id: str, tenant: str) -> Held | None:
        """The version line and the value (verify compares the value: a line edited by
        hand is drift even if its version line was left alone)."""
        found = self.read(credential_id)
        return None if found is None else Held(found[0].version, value=found[1])

    def read(self, credential_id: str) -> tuple[Published, Secret] | None:
        name = self.variable(credential_id)
        lines = self._lines()
        if name not in lines:
            return None
        version = lines.get(f"{name}_VERSION")
        return Published(int(version) if version and version.isdigit() else None), Secret(
            lines[name]
        )

    def scan(self, prefix: str) -> Iterator[Found]:
        """Every variable whose name starts with *prefix* (bookkeeping lines left out). A file
        that is not there is an error: a mistyped path must not read as "nothing found"."""
        text = read_text(self.path)
        if text is None:
            raise StoreRefused(f"dotenv: {self.path} does not exist; nothing to import")
        lines = parse(text)
        for name, value in lines.items():
            base = re.sub(r"_(VERSION|PREVIOUS)$", "", name)
            if not name.startswith(prefix) or (base != name and base in lines):
                continue
            yield Found(name, Secret(value))
