"""An inventory whose versions are in every state, on passwd-file targets (no server needed):

- ``acme/smtp-admin`` (single): v1 and v2 retired, v3 current;
- ``globex/api`` (dual, 7 days of grace): v1 previous, v2 current.

The first value of each has a space, quotes, a non-ASCII letter and URL-reserved characters,
so every encoding of it differs from the raw value.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from keyturn.db import repo
from tests.scan.corpus import shaped
from tests.support.keyturn import Harness

# The PostgreSQL pass runs only the tests whose subject touches keyturn's database (building
# the index, the leak rotation); the rest read the same rows through the same code.
sqlite_pass_only = pytest.mark.skipif(
    os.environ.get("KEYTURN_TEST_DB") == "postgres",
    reason="independent of the state database backend; runs on the SQLite pass",
)

INVENTORY = """
[policies.slow]
max_age = "180d"
grace = "7d"

[targets.mail]
type = "passwd-file"
path = "mail.passwd"

[targets.api]
type = "passwd-file"
path = "api.passwd"
secondary_path = "api2.passwd"

[[credentials]]
id = "acme/smtp-admin"
tenant = "acme"
kind = "smtp"
owner = "platform-team"
target = "mail"
username = "admin@acme.example"
initial_secret = "env:ACME_INITIAL"

[[credentials]]
id = "globex/api"
tenant = "globex"
kind = "api-key"
owner = "globex-devs"
policy = "slow"
target = "api"
strategy = "dual"
username = "globex"
initial_secret = "env:GLOBEX_INITIAL"
"""


@dataclass(frozen=True)
class Version:
    credential: str
    number: int
    state: str
    value: str
    username: str


def special(rng: random.Random) -> str:
    return shaped(rng, 20) + ' "é /@:+%'


@dataclass
class Inventory:
    kt: Harness
    versions: list[Version]

    def of(self, credential: str, state: str) -> Version:
        return next(v for v in self.versions if v.credential == credential and v.state == state)

    def of_number(self, credential: str, number: int) -> Version:
        return next(v for v in self.versions if v.credential == credential and v.number == number)

    def values(self) -> list[str]:
        return [v.value for v in self.versions]


def read_versions(kt: Harness) -> list[Version]:
    out = []
    with kt.app.db.read() as session:
        for cred in ("acme/smtp-admin", "globex/api"):
            for v in repo.versions(session, cred):
                value = kt.app.vault.reveal(v).reveal()
                out.append(Version(cred, v.number, v.state, value, v.username or ""))
    return out


def build(kt: Harness) -> Inventory:
    rng = random.Random()
    kt.write("keyturn.toml", INVENTORY)
    env = {"ACME_INITIAL": special(rng), "GLOBEX_INITIAL": special(rng)}
    assert kt.cli("apply", "keyturn.toml", env=env).code == 0
    for _ in range(2):
        assert kt.cli("rotate", "acme/smtp-admin", "--reason", "test").code == 0
    assert kt.cli("rotate", "globex/api", "--reason", "test").code == 0
    inv = Inventory(kt, read_versions(kt))
    states = sorted((v.credential, v.number, v.state) for v in inv.versions)
    assert states == [
        ("acme/smtp-admin", 1, "retired"),
        ("acme/smtp-admin", 2, "retired"),
        ("acme/smtp-admin", 3, "current"),
        ("globex/api", 1, "previous"),
        ("globex/api", 2, "current"),
    ]
    return inv


TEMPLATE_FILES = ("keyturn.db", "keyturn.toml", "mail.passwd", "api.passwd", "api2.passwd")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness | None]:
    """On SQLite, the inventory is built once per module and copied into each test's folder
    (apply and three rotations cost seconds); on PostgreSQL each test builds its own."""
    if os.environ.get("KEYTURN_TEST_DB") == "postgres":
        yield None
        return
    home = tmp_path_factory.mktemp("inventory")
    harness = Harness(home, f"sqlite:///{home / 'keyturn.db'}")
    saved = os.getcwd()
    os.chdir(home)
    try:
        harness.init()
        build(harness)
    finally:
        os.chdir(saved)
        harness.close()
    yield harness


@pytest.fixture
def inventory(kt: Harness, template: Harness | None) -> Inventory:
    if template is None:
        return build(kt)
    kt.close()
    for name in TEMPLATE_FILES:
        shutil.copy2(template.home / name, kt.home / name)
    for suffix in ("-wal", "-shm"):  # a WAL left open would hold part of the database
        source, copy = template.home / f"keyturn.db{suffix}", kt.home / f"keyturn.db{suffix}"
        copy.unlink(missing_ok=True)
        if source.exists():
            shutil.copy2(source, copy)
    kt.master_key = template.master_key
    kt.env["KEYTURN_MASTER_KEY"] = template.master_key
    return Inventory(kt, read_versions(kt))


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()
