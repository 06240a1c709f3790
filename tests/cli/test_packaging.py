"""The extras install what keyturn imports, and only that (issue 13: `vault`, `aws` and
`server` installed libraries no keyturn code imported); the base distribution is the SDK's
and nothing more (issue 18: `pip install 'keyturn[client]'` brings no server library)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# Libraries an extra installs for another library to load, with who loads them.
INDIRECT = {
    "bcrypt": "passlib (libpass), for MailU's bcrypt hashes in targets/mailu.py",
    "python-multipart": "FastAPI, to read the dashboard's forms (keyturn/web)",
    "httptools": "uvicorn, its C HTTP parser for keyturn serve",
    "uvloop": "uvicorn, its event loop for keyturn serve",
}


def _name(requirement: str) -> str:
    found = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert found, requirement
    return found[0].lower().replace("_", "-")


def imports_of(paths: list[Path]) -> set[str]:
    """Every module *paths* import, in full (at any depth, lazily too)."""
    found: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                assert not node.level, f"{path}: relative import"
                assert node.module
                found.add(node.module)
    return found


def _outside(modules: set[str]) -> set[str]:
    """The top-level names in *modules* that are neither the standard library nor keyturn."""
    tops = {m.split(".")[0] for m in modules}
    return tops - set(sys.stdlib_module_names) - {"keyturn", "__future__"}


def imported_modules() -> set[str]:
    """Top-level modules that keyturn's own code imports (at any depth, lazily too)."""
    return _outside(imports_of(list((ROOT / "keyturn").rglob("*.py"))))


def distributions_of(modules: set[str]) -> set[str]:
    owners = packages_distributions()
    return {_name(d) for m in modules for d in owners.get(m, [m])}


def declared(extras: bool = True) -> dict[str, set[str]]:
    """Each extra's libraries ("" the base's), without the extras it names of keyturn's."""
    out = {"": {_name(r) for r in PROJECT["dependencies"]}}
    for extra, requirements in PROJECT["optional-dependencies"].items():
        if extra not in ("all", "test"):
            out[extra] = {_name(r) for r in requirements} - {"keyturn"}
    return out


def test_every_extra_library_is_imported_by_keyturn() -> None:
    used = distributions_of(imported_modules()) | set(INDIRECT)
    for extra, names in declared().items():
        if extra:
            assert names <= used, f"extra {extra!r} installs {sorted(names - used)}, never imported"


def test_every_library_keyturn_imports_is_declared() -> None:
    everything = set().union(*declared().values())
    missing = distributions_of(imported_modules()) - everything
    assert not missing, f"keyturn imports {sorted(missing)} but no dependency or extra has it"


def test_all_is_every_extra() -> None:
    (all_,) = PROJECT["optional-dependencies"]["all"]
    listed = set(re.search(r"\[(.*)\]", all_)[1].split(","))  # type: ignore[index]
    assert listed == set(declared()) - {""}


def test_the_sdk_imports_httpx_and_the_standard_library_only() -> None:
    sdk = sorted((ROOT / "keyturn" / "client").glob("*.py"))
    modules = imports_of([*sdk, ROOT / "keyturn" / "__init__.py"])
    ours = {m for m in modules if m.split(".")[0] == "keyturn"}
    assert ours <= {"keyturn"} | {f"keyturn.client.{p.stem}" for p in sdk} | {"keyturn.client"}
    assert _outside(modules) == {"httpx"}


def test_the_base_installs_what_the_sdk_needs_and_nothing_more() -> None:
    base = declared()[""]
    assert base == {"httpx"}, "the base distribution is the SDK's: move the rest to `server`"
    assert declared()["client"] == base


def test_every_extra_but_the_sdk_brings_the_server() -> None:
    extras = PROJECT["optional-dependencies"]
    for extra, requirements in extras.items():
        if extra not in ("client", "server", "all", "test"):
            assert "keyturn[server]" in requirements, extra
    # what the command line imports before any command runs is the server extra's
    assert {"typer", "rich", "pydantic", "sqlalchemy", "cryptography"} <= declared()["server"]
