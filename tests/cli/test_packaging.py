"""The extras install what keyturn imports, and only that (issue 13: `vault`, `aws` and
`server` installed libraries no keyturn code imported)."""

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


def imported_modules() -> set[str]:
    """Top-level modules that keyturn's own code imports (at any depth, lazily too)."""
    found: set[str] = set()
    for path in (ROOT / "keyturn").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"keyturn", "__future__"}


def distributions_of(modules: set[str]) -> set[str]:
    owners = packages_distributions()
    return {_name(d) for m in modules for d in owners.get(m, [m])}


def declared(extras: bool = True) -> dict[str, set[str]]:
    out = {"": {_name(r) for r in PROJECT["dependencies"]}}
    for extra, requirements in PROJECT["optional-dependencies"].items():
        if extra not in ("all", "test"):
            out[extra] = {_name(r) for r in requirements}
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
