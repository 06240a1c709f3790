"""The plugin API (contract v1): its exported names, one reference type, capabilities
enforced, typed loading, and layers that import downward only."""

from __future__ import annotations

import ast
import importlib.metadata
import tomllib
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from pydantic import BaseModel

from keyturn import plugins
from keyturn.domain.errors import ConfigInvalid, LiteralSecret, PluginError
from keyturn.refs import SecretRef, is_reference
from keyturn.stores import base as store_base
from keyturn.targets import base as target_base
from keyturn.targets.base import Target

ROOT = Path(__file__).resolve().parents[2] / "keyturn"

TARGET_API = {
    "MASK", "Account", "ConfigInvalid", "IssuedSecret", "KeyturnError", "LiteralSecret",
    "PasswordRules", "PluginError", "ReferenceUnresolved", "Secret", "SecretRef", "Target",
    "TargetConfig", "TargetContext", "TargetError", "TargetRateLimited", "TargetRejected",
    "TargetUnreachable", "redact",
}  # fmt: skip
STORE_API = {
    "Found", "Held", "Numbered", "PublishFailed", "PublishView", "Published", "Secret",
    "SecretRef", "Store", "StoreConfig", "StoreConflict", "StoreContext", "StoreRefused",
    "StoreUnreachable", "reference",
}  # fmt: skip
TESTING_API = {
    "CRASH_POINTS", "FakeClock", "FakeIssuer", "FakeStore", "FakeTarget", "InvariantBroken",
    "TargetCase", "World", "check_no_values", "check_rotations", "check_store", "check_target",
    "check_verbs",
}  # fmt: skip


def test_the_exported_names_are_pinned() -> None:
    import keyturn.testing

    assert set(target_base.__all__) == TARGET_API
    assert set(store_base.__all__) == STORE_API
    assert set(keyturn.testing.__all__) == TESTING_API
    for module in (target_base, store_base, keyturn.testing):
        assert all(hasattr(module, name) for name in module.__all__)


def test_every_verb_says_when_it_is_called() -> None:
    for verb in ("set", "add", "test", "revoke", "ensure", "generate", "create", "list_active"):
        doc = getattr(Target, verb).__doc__ or ""
        assert "When" in doc or "when" in doc, verb


class _Settings(BaseModel):
    password: SecretRef


@pytest.mark.parametrize(
    ("value", "refused_with"),
    [
        ("env:DB_PASSWORD", None),
        ("file:/run/secrets/db", None),
        ("keyturn:acme/db", None),
        ("env:", ConfigInvalid),
        ("keyturn:", ConfigInvalid),
        ("hunter2-literal", LiteralSecret),
    ],
)
def test_a_plugin_setting_and_the_inventory_agree_on_references(
    value: str, refused_with: type[Exception] | None
) -> None:
    assert is_reference(value) is (refused_with is None)
    if refused_with is None:
        assert _Settings(password=value).password == value
        return
    with pytest.raises(refused_with) as caught:
        _Settings(password=value)
    assert "hunter2" not in str(caught.value)


def test_dual_without_two_active_secrets_is_refused_when_the_class_is_made() -> None:
    with pytest.raises(PluginError, match=r"dual.*max_active_secrets"):

        class OneSlot(Target):
            name = "one-slot"
            strategies = ("single", "dual")


def test_loading_is_typed_and_checked() -> None:
    assert issubclass(plugins.load_target("passwd-file"), Target)
    assert issubclass(plugins.load_store("dotenv"), store_base.Store)

    class NotATarget:
        name = "not-a-target"

    plugins.register("target", NotATarget)  # type: ignore[arg-type]
    try:
        with pytest.raises(PluginError, match=r"not a keyturn\.targets\.base\.Target"):
            plugins.load_target("not-a-target")
    finally:
        plugins.unregister("target", "not-a-target")


def test_built_in_plugins_are_the_ones_pyproject_registers() -> None:
    """keyturn loads its own plugins from plugins.BUILT_IN without reading entry points:
    the table must say what pyproject.toml (the installed metadata) says."""
    project = tomllib.loads((ROOT.parent / "pyproject.toml").read_text())["project"]
    for kind, group in plugins.GROUPS.items():
        assert plugins.BUILT_IN[kind] == project["entry-points"][group], kind
        for name in plugins.BUILT_IN[kind]:
            assert plugins.load(kind, name).name == name


def test_a_third_party_entry_point_under_a_built_in_name_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    impostor = EntryPoint("postgres", "evil_plugin:Target", plugins.GROUPS["target"])
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [impostor])
    plugins._discovered.cache_clear()
    try:
        with pytest.raises(PluginError, match=r"two target plugins are named 'postgres'"):
            plugins.names("target")
        assert plugins.load_target("postgres").__module__ == "keyturn.targets.postgres"
    finally:
        plugins._discovered.cache_clear()


def _imports(path: Path, top_level: bool = False) -> set[str]:
    """The keyturn modules *path* imports (*top_level*: at import time, not in functions)."""
    found: set[str] = set()
    tree = ast.parse(path.read_text())
    for node in tree.body if top_level else ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("keyturn")}


def test_no_layer_imports_upward() -> None:
    for folder in ("notify", "runtime.py", "targets", "stores", "domain", "crypto", "db"):
        paths = [ROOT / folder] if folder.endswith(".py") else sorted((ROOT / folder).rglob("*.py"))
        for path in paths:
            upward = {m for m in _imports(path) if m.startswith("keyturn.inventory")}
            assert not upward, f"{path.relative_to(ROOT)} imports {upward}"


# A target module may build on helper modules (smtp, mailu_api, pool, common: no entry point).
# Two targets are variants of another, subclasses by design: dovecot is passwd-file plus
# Dovecot's reload, aws-ses-smtp is an IAM key handed out as an SES SMTP login.
SUBCLASSES = {("dovecot", "passwd_file"), ("aws_ses", "aws_iam")}


def test_no_target_imports_another_target() -> None:
    import tomllib

    project = tomllib.loads((ROOT.parent / "pyproject.toml").read_text())["project"]
    targets = {
        v.split(":")[0].rsplit(".", 1)[1]
        for v in project["entry-points"]["keyturn.targets"].values()
    }
    for name in targets:
        for module in _imports(ROOT / "targets" / f"{name}.py"):
            other = module.rsplit(".", 1)[1]
            if module.startswith("keyturn.targets.") and other in targets and other != name:
                assert (name, other) in SUBCLASSES, f"targets/{name}.py imports targets/{other}.py"


def test_the_cli_modules_form_no_import_cycle() -> None:
    graph = {
        p.stem: {
            m.rsplit(".", 1)[1] for m in _imports(p, top_level=True) if m.startswith("keyturn.cli.")
        }
        for p in (ROOT / "cli").glob("*.py")
    }

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, f"import cycle: {' -> '.join((*path, node))}"
        for nxt in graph.get(node, ()):
            visit(nxt, (*path, node))

    for start in graph:
        visit(start, ())
