"""A CLI that starts fast (issue 23): `keyturn --help` and `keyturn get` import only what
they use. Structural checks on what a fresh process imported, never timings (those are
`bench/cli.py`'s)."""

from __future__ import annotations

import gc
import inspect
import json
import os
import socket
import subprocess
import sys
from typing import Any

import typer.main
from typer.core import TyperGroup

from keyturn.cli import lazy
from keyturn.cli.main import app
from tests.support.keyturn import ROOT, Harness

PROBE = """
import json, sys
sys.argv = ["keyturn", *json.loads(sys.argv[1])]
from keyturn.cli.main import main
try:
    main()
except SystemExit:
    pass
import gc
roots = sorted({name.split(".")[0] for name in sys.modules})
collector = {"enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}
print("\\n" + json.dumps({"roots": roots, "modules": sorted(sys.modules), "gc": collector}))
"""


def _run(*args: str, env: dict[str, str] | None = None) -> tuple[dict[str, Any], str]:
    """What a fresh `keyturn ARGS` imported and how it left the GC, and its output."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("KEYTURN_")}
    full_env.update(env or {})
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)],
        env=full_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    head, _, last = done.stdout.rstrip("\n").rpartition("\n")
    found: dict[str, Any] = json.loads(last)
    return found, head + done.stderr


def _imported(*args: str, env: dict[str, str] | None = None) -> tuple[set[str], set[str], str]:
    """(top-level packages, every module) a fresh `keyturn ARGS` imported, and its output."""
    found, out = _run(*args, env=env)
    return set(found["roots"]), set(found["modules"]), out


def test_help_imports_no_database_layer() -> None:
    roots, modules, out = _imported("--help")
    assert "rotate" in out and "serve" in out and "token" in out  # every command is listed
    assert not roots & {"sqlalchemy", "alembic", "psycopg", "fastapi", "httpx", "cryptography"}
    assert not roots & {"pydantic", "pydantic_core", "rich", "tomllib"}
    assert "typer.rich_utils" not in modules
    assert not {m for m in modules if m.startswith("keyturn.")} - {
        "keyturn.cli.lazy",
        "keyturn.cli.main",
        "keyturn.cli.output",
        "keyturn.cli.params",
        "keyturn.cli.remote",
        "keyturn.domain",
        "keyturn.domain.errors",
        "keyturn.domain.ids",
        "keyturn.domain.inputs",
        "keyturn.settings",
        "keyturn.cli",
    }


def test_get_imports_no_migrations_engine_or_inventory(kt: Harness) -> None:
    kt.write("inv.toml", '[[credentials]]\nid = "app/db"\ninitial_secret = "env:V"\n')
    assert kt.cli("apply", "inv.toml", env={"V": "v4lue-of-the-probe"}).code == 0
    roots, modules, out = _imported("get", "app/db", env=kt.env)
    assert "v4lue-of-the-probe" in out
    assert "alembic" not in roots  # the schema is current: one query, no Alembic
    heavy = ("keyturn.engine", "keyturn.inventory", "keyturn.notify", "keyturn.scan")
    assert not {m for m in modules if m.startswith(heavy)}
    assert not roots & {"fastapi", "uvicorn", "jinja2", "httpx", "psycopg"}
    # Core only: no ORM, no mapped classes, no plugins; no Pydantic (Typer's adapters, the
    # plugins' settings models) and no Rich (nothing is drawn).
    assert not {m for m in modules if m.startswith("sqlalchemy.orm")}
    assert not modules & {"keyturn.db.models", "keyturn.db.vault", "keyturn.runtime"}
    assert not modules & {"keyturn.plugins", "keyturn.audit.log", "keyturn.auth"}
    assert not roots & {"pydantic", "pydantic_core", "rich"}
    # The checkpoint key's Ed25519 (with cryptography's serialization and bcrypt) is for
    # signing checkpoints, and TOML for a settings file: a read without one needs neither.
    assert not roots & {"bcrypt", "tomllib"}
    assert not {m for m in modules if m.startswith("cryptography.hazmat.primitives.asymmetric")}


def test_get_reads_audited_with_no_orm_left_over(kt: Harness) -> None:
    """The entry `get` appends on Core is one `audit verify` accepts (a fresh process)."""
    kt.write("inv.toml", '[[credentials]]\nid = "app/db"\ninitial_secret = "env:V"\n')
    assert kt.cli("apply", "inv.toml", env={"V": "v4lue-of-the-probe"}).code == 0
    for _ in range(2):
        _imported("get", "app/db", env=kt.env)
    verified = kt.cli("audit", "verify", "--json")
    assert verified.code == 0, verified.err
    assert kt.cli("audit", "list", "--action", "secret.read", "--json").out.count('"seq"') == 2


def test_rotate_imports_no_server_or_migrations() -> None:
    """What `keyturn rotate` loads before it runs: its command module and what the engine
    needs, not the API, the dashboard, Alembic, Pydantic's Typer adapters or Rich."""
    roots, modules, out = _imported("rotate", "--help")
    assert "--reason" in out
    assert not roots & {"fastapi", "uvicorn", "jinja2", "alembic", "httpx", "rich"}
    assert not {m for m in modules if m.startswith(("typer._adapters", "keyturn.api"))}
    # Nor the inventory commands' module (tokens, apply) for the options it shares.
    assert not modules & {"keyturn.cli.commands", "keyturn.auth"}


def test_remote_rotate_imports_no_engine_or_database() -> None:
    """In remote mode `keyturn rotate` is one API call (as `bao write` is one to its server):
    httpx and Typer, not SQLAlchemy, the models, the plugins or a database driver. The
    server here is a closed port: the command fails with one line, after its imports."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {"KEYTURN_URL": f"http://127.0.0.1:{port}", "KEYTURN_TOKEN": "kt_" + "x" * 40}
    roots, modules, out = _imported("rotate", "acme/db", "--reason", "r", env=env)
    assert "127.0.0.1" in out and "Traceback" not in out
    assert "httpx" in roots
    assert not roots & {"sqlalchemy", "psycopg", "pydantic", "alembic", "cryptography"}
    assert "keyturn.engine.service" not in modules
    # httpcore imports trio when it is installed, and httpx its command line (with Rich):
    # the CLI's sync client hides both (100-150 ms).
    assert not roots & {"trio", "pygments"}
    assert "httpx._main" not in modules


def test_remote_client_leaves_trio_importable() -> None:
    """Hiding trio and httpx's command line lasts while the client is built: afterwards both
    import again where they are installed, and the client still talks (a fresh process)."""
    probe = (
        "import importlib.util, sys\n"
        "from keyturn.cli.remote import Remote\n"
        "remote = Remote('http://127.0.0.1:9', 'kt_x')  # its real transport: httpcore loads\n"
        "assert 'httpcore' in sys.modules and 'trio' not in sys.modules\n"
        "assert 'httpx._main' not in sys.modules\n"
        "import httpx\n"
        "def answer(request): return httpx.Response(200, json={'ok': True})\n"
        "remote.client._transport = httpx.MockTransport(answer)\n"
        "assert remote.call('GET', '/health') == {'ok': True}\n"
        "if importlib.util.find_spec('trio') is not None:\n"
        "    import trio  # noqa: F401\n"
        "if importlib.util.find_spec('click') and importlib.util.find_spec('rich'):\n"
        "    from httpx._main import main  # noqa: F401\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.stdout.strip() == "ok", done.stderr


def test_models_load_neither_dialect_for_their_partial_indexes() -> None:
    """keyturn.db.models names both databases' WHERE for its partial unique indexes; neither
    dialect loads for that (a SQLite command would load PostgreSQL's), and both DDLs still
    carry it, in a process that loaded neither before."""
    probe = (
        "import sys, json\n"
        "import keyturn.db.models as m\n"
        "loaded = sorted(n for n in sys.modules if n.startswith('sqlalchemy.dialects.'))\n"
        "from sqlalchemy.dialects import postgresql, sqlite\n"
        "from sqlalchemy.schema import CreateIndex\n"
        "ddl = [str(CreateIndex(i).compile(dialect=d.dialect()))\n"
        "       for t in m.Base.metadata.sorted_tables for i in t.indexes\n"
        "       if isinstance(i, m.PartialIndex) for d in (sqlite, postgresql)]\n"
        "print(json.dumps({'loaded': loaded, 'ddl': ddl}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    found = json.loads(done.stdout)
    assert found["loaded"] == []
    assert len(found["ddl"]) == 4
    assert all(" WHERE " in ddl for ddl in found["ddl"]), found["ddl"]
    assert any("uq_versions_live_state" in d and "'previous')" in d for d in found["ddl"])
    assert any("uq_rotations_active" in d and "'retrying')" in d for d in found["ddl"])


def test_the_gc_is_paused_for_start_up_only(kt: Harness) -> None:
    """A command's start-up runs with the cyclic GC paused and frozen after (cli.lazy); the
    command itself, and a process that runs commands in-process, keep a working GC."""
    kt.write("inv.toml", '[[credentials]]\nid = "app/db"\ninitial_secret = "env:V"\n')
    assert kt.cli("apply", "inv.toml", env={"V": "v4lue-of-the-probe"}).code == 0
    found, out = _run("get", "app/db", env=kt.env)
    assert "v4lue-of-the-probe" in out
    assert found["gc"]["enabled"] and found["gc"]["frozen"] > 10_000
    found, _ = _run("--help")
    assert found["gc"] == {"enabled": True, "frozen": 0}
    # The harness runs main() in this process: once the command's module is loaded, a run
    # freezes nothing more (at most one freeze per command module and process).
    assert kt.cli("get", "app/db").code == 0
    frozen = gc.get_freeze_count()
    for _ in range(2):
        assert kt.cli("get", "app/db").out == "v4lue-of-the-probe\n"
        assert gc.isenabled()
    assert gc.get_freeze_count() == frozen


def test_a_subcommand_group_runs_after_lazy_load(kt: Harness) -> None:
    result = kt.spawn("token", "list", "--json")
    assert result.code == 0, result.err
    assert [t["name"] for t in json.loads(result.out)] == ["first admin"]


def _first_paragraph(command: object) -> str:
    return inspect.cleandoc(getattr(command, "help", None) or "").split("\n\n")[0]


def test_the_table_lists_every_command_with_its_own_help() -> None:
    """`--help` shows the table; the commands' modules define the truth."""
    lazy.load_all()
    group = typer.main.get_command(app)
    assert isinstance(group, TyperGroup)
    built = {name: group.commands[name] for name in group.commands}
    assert set(lazy.COMMANDS) == set(built)
    for name, (module, help_text) in lazy.COMMANDS.items():
        assert _first_paragraph(built[name]) == help_text, name
        callback = getattr(built[name], "callback", None)
        if not isinstance(built[name], TyperGroup):  # groups register from several modules
            assert callback is not None and callback.__module__ == f"keyturn.cli.{module}"
