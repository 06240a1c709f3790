"""examples/plugin-http-token: installed with pip as a third party would, found through its
entry point, and run through the conformance kit; a broken copy fails it by name.

The package is installed with ``pip install --no-deps --no-build-isolation --target`` into a
folder put on sys.path (what `pip install ./examples/plugin-http-token` does for a venv,
without building a venv per run). Its service is the package's own toy token server.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from keyturn import plugins
from keyturn.testing import InvariantBroken, TargetCase, check_target

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "plugin-http-token"
ADMIN = "kit-admin-token-0123456789"


def _install(into: Path, *sources: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(into)]
        + [str(source) for source in sources],
        check=True,
        capture_output=True,
        timeout=300,
    )
    sys.path.insert(0, str(into))
    plugins._discovered.cache_clear()


def _broken_copy(tmp: Path) -> Path:
    """The example with `set` not idempotent and `revoke` a no-op, under its own name."""
    copy = tmp / "broken"
    shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    (copy / "keyturn_http_token").rename(copy / "keyturn_http_token_broken")
    pyproject = (copy / "pyproject.toml").read_text()
    pyproject = pyproject.replace("keyturn-http-token", "keyturn-http-token-broken")
    pyproject = pyproject.replace(
        'http-token = "keyturn_http_token.target',
        'http-token-broken = "keyturn_http_token_broken.target',
    )
    (copy / "pyproject.toml").write_text(
        pyproject.replace('["keyturn_http_token"]', '["keyturn_http_token_broken"]')
    )
    module = copy / "keyturn_http_token_broken" / "target.py"
    code = module.read_text().replace('name = "http-token"', 'name = "http-token-broken"')
    # set: a replay finds the token and, instead of returning, fails on it.
    code = code.replace(
        "        if held == [digest(new)]:\n            return\n",
        "        if digest(new) in held:\n            raise TargetRejected('token exists')\n",
    )
    revoke = '        self._call("DELETE", f"/users/{account.username}/tokens/{digest(old)}", '
    code = code.replace(revoke, "        return None  # ")
    module.write_text(code)
    return copy


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    where = tmp_path_factory.mktemp("site")
    _install(where / "site", EXAMPLE, _broken_copy(where))
    yield where / "site"
    sys.path.remove(str(where / "site"))
    plugins._discovered.cache_clear()


@pytest.fixture
def service(installed: Path) -> Iterator[str]:
    from keyturn_http_token.server import start  # the installed copy's toy service

    server = start(0, ADMIN)
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _case(type_: str, url: str, strategy: str) -> TargetCase:
    return TargetCase(
        type_,
        {"url": url, "admin_token": "env:TOKEN_ADMIN"},
        strategy=strategy,
        logins=("deploy-bot",),
        initial="initial-token-" + "x" * 20,
        env={"TOKEN_ADMIN": ADMIN},
    )


def test_found_through_its_entry_point(installed: Path) -> None:
    cls = plugins.load_target("http-token")
    assert cls.__module__ == "keyturn_http_token.target"
    assert str(installed) in sys.modules[cls.__module__].__file__  # type: ignore[operator]
    assert "http-token" in plugins.names("target")


@pytest.mark.parametrize(
    ("strategy", "points"),
    [("single", ["set:effect", "test:before"]), ("dual", ["create:effect", "revoke:effect"])],
)
def test_passes_the_kit(
    service: str, tmp_path: Path, db_url: str, strategy: str, points: list[str]
) -> None:
    check_target(_case("http-token", service, strategy), tmp_path / "kit", db_url, points)


@pytest.mark.parametrize(
    ("strategy", "invariant"), [("single", "set-idempotent"), ("dual", "revoke-refuses-old")]
)
def test_the_broken_copy_fails_naming_the_invariant(
    service: str, tmp_path: Path, strategy: str, invariant: str
) -> None:
    with pytest.raises(InvariantBroken, match=f"^{invariant}: "):
        check_target(_case("http-token-broken", service, strategy), tmp_path / "kit", points=[])
