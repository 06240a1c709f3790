"""`keyturn scan` end to end on a corpus the test builds, against a real keyturn database.

Most tests run keyturn's own rules only (``--detector keyturn``): CredSweeper's start-up
costs seconds and its detections are covered in test_rules.py and once here.
"""

from __future__ import annotations

import base64
import json
import random
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jsonschema
import pytest

from keyturn.scan.forms import encodings
from tests.scan.conftest import Inventory, git, sqlite_pass_only
from tests.scan.corpus import (
    Corpus,
    plant_binary,
    plant_decoys,
    plant_managed,
    plant_unmanaged,
)
from tests.support.keyturn import Harness, Result

SCHEMA = Path(__file__).with_name("sarif-schema-2.1.0.json")
RULES = ("--detector", "keyturn")


def scan(kt: Harness, *args: str, env: dict[str, str] | None = None) -> Result:
    return kt.cli("scan", *args, env=env)


def findings(result: Result) -> list[dict[str, Any]]:
    assert result.out.strip(), result.err
    return json.loads(result.out)["findings"]  # type: ignore[no-any-return]


def build_corpus(inv: Inventory, root: Path, decoys: int = 10_000) -> Corpus:
    corpus = Corpus(root)
    for v in inv.versions:
        plant_managed(corpus, v.credential, v.number, v.value, v.username)
    plant_unmanaged(corpus, random.Random(5))
    plant_decoys(corpus, random.Random(6), decoys)
    plant_binary(corpus, inv.of("acme/smtp-admin", "current").value)
    return corpus


def every_form(values: list[str]) -> list[bytes]:
    forms = [form for value in values for _, form in encodings(value)]
    return forms + [base64.b64encode(v.encode()) for v in values]


def assert_no_value(values: list[str], *texts: str | bytes) -> None:
    for text in texts:
        data = text.encode() if isinstance(text, str) else text
        for form in every_form(values):
            assert form not in data


@pytest.mark.state_db
def test_every_managed_copy_is_found_named_and_nothing_else(
    inventory: Inventory, tmp_path: Path
) -> None:
    corpus = build_corpus(inventory, tmp_path / "corpus")
    result = scan(inventory.kt, str(corpus.root), "--json", "--jobs", "1", *RULES)
    assert result.code == 1, result.err
    found = findings(result)
    managed = {(f["where"]["path"], f["where"]["line"]): f for f in found if f["kind"] == "managed"}
    expected = [p for p in corpus.planted if p.kind == "managed"]
    assert len(expected) == 5 * 11
    for planted in expected:
        credential, version, encoding = planted.label.split(":")
        f = managed.get((f"{corpus.root}/{planted.path}", planted.line))
        assert f, f"{planted} not found"
        assert (f["credential"]["credential_id"], f["credential"]["version"]) == (
            credential,
            int(version),
        )
        state = inventory.of_number(credential, int(version)).state
        assert f["credential"]["state"] == state
        if version == "1":  # the first values have special characters: every form differs
            # (but for base64url, which is base64 when the encoding has no + or /)
            assert f["encoding"] in {encoding, "base64" if encoding == "base64url" else ""}
    assert len(managed) == len(expected), "a managed finding where nothing was planted"
    summary = json.loads(result.out)["summary"]
    assert summary["skipped"]["binary"] == 1 and summary["managed_values"] == 5
    assert not [f for f in found if "decoys/" in f["where"]["path"]]
    assert_no_value(inventory.values(), result.out, result.err)


@sqlite_pass_only
def test_findings_name_owner_consumers_and_the_next_command(
    inventory: Inventory, tmp_path: Path
) -> None:
    kt = inventory.kt
    with kt.app.db.write() as session:
        from keyturn.db.models import Consumer

        session.add(Consumer(credential_id="acme/smtp-admin", name="billing", version=3))
    current = inventory.of("acme/smtp-admin", "current").value
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "mail.py").write_text(f"URL = 'smtp://admin:{quote(current)}@mx:587'\n")
    result = scan(kt, str(tmp_path / "src"), *RULES)
    assert result.code == 1
    assert "acme/smtp-admin version 3 (current" in result.out
    assert "owner platform-team; used by billing" in result.out
    assert "url-userinfo" in result.out
    assert "keyturn rotate acme/smtp-admin --leak --reason" in result.out
    assert_no_value(inventory.values(), result.out, result.err)


@sqlite_pass_only
def test_unmanaged_findings_suggest_an_import(inventory: Inventory, tmp_path: Path) -> None:
    corpus = Corpus(tmp_path / "c")
    plant_unmanaged(corpus, random.Random(1))
    found = findings(scan(inventory.kt, str(corpus.root), "--json", *RULES))
    rules = {f["rule"] for f in found}
    assert rules == {
        "keyturn:netrc",
        "keyturn:esmtprc",
        "keyturn:smtplib-login",
        "keyturn:django-email-password",
        "keyturn:rails-smtp-settings",
        "keyturn:postfix-sasl-passwd",
    }
    netrc = next(f for f in found if f["rule"] == "keyturn:netrc")
    assert netrc["suggestion"] == (
        'declare [[credentials]] id = "TENANT/smtp-example-com", kind = "smtp", '
        'initial_secret = "env:..." in keyturn.toml and `keyturn apply` it; then remove the '
        f"copy from {corpus.root}/.netrc:3:12"
    )
    assert not [f for f in found if "/safe/" in f["where"]["path"]]


def test_the_import_suggested_for_a_dotenv_file_runs(inventory: Inventory, tmp_path: Path) -> None:
    dotenv = tmp_path / "app" / ".env"
    dotenv.parent.mkdir()
    dotenv.write_text("DEBUG=1\nEMAIL_HOST_PASSWORD=Hunter2-but-much-longer-9\n")
    (found,) = findings(scan(inventory.kt, str(dotenv.parent), "--json", *RULES))
    command = found["suggestion"].replace("TENANT", "acme").split()
    assert command[:2] == ["keyturn", "import"], found["suggestion"]
    dry = inventory.kt.cli(*command[1:], "--dry-run")
    assert dry.code == 0 and "acme/email_host_password" in dry.out, dry.err


@sqlite_pass_only
def test_git_history_finds_a_secret_added_then_removed(
    inventory: Inventory, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("hello\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "start")
    leaked = inventory.of("globex/api", "previous").value
    (repo / "deploy.env").write_text(f"X=1\nAPI_KEY={json.dumps(leaked)}\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "oops")
    added = git(repo, "rev-parse", "HEAD")
    git(repo, "rm", "-q", "deploy.env")
    git(repo, "commit", "-q", "-m", "remove it")
    kt = inventory.kt
    assert scan(kt, str(repo), *RULES).code == 0  # the work tree is clean
    result = scan(kt, "--git", str(repo), "--json", *RULES)
    [f] = findings(result)
    assert (f["where"]["path"], f["where"]["line"], f["where"]["commit"]) == (
        "deploy.env",
        2,
        added,
    )
    assert f["credential"]["state"] == "previous" and f["where"]["origin"] == "history"
    # a range that does not hold the commit does not find it
    assert scan(kt, "--git", "HEAD~1..HEAD", str(repo), *RULES).code == 0


@sqlite_pass_only
def test_staged_scans_the_index_not_the_work_tree(
    inventory: Inventory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    value = inventory.of("acme/smtp-admin", "current").value
    (repo / "a.txt").write_text(f"pw={value}\n")
    (repo / "b.txt").write_text("nothing\n")
    git(repo, "add", "a.txt", "b.txt")
    (repo / "a.txt").write_text("cleaned in the work tree, not in the index\n")
    monkeypatch.chdir(repo)
    [f] = findings(scan(inventory.kt, "--staged", "--json", *RULES))
    assert (f["where"]["path"], f["where"]["origin"]) == ("a.txt", "staged")
    git(repo, "add", "a.txt")
    assert scan(inventory.kt, "--staged", *RULES).code == 0


@sqlite_pass_only
def test_baseline_holds_fingerprints_only_and_fails_on_new(
    inventory: Inventory, tmp_path: Path
) -> None:
    kt = inventory.kt
    src = tmp_path / "src"
    src.mkdir()
    (src / "old.txt").write_text(f"pw={inventory.of('globex/api', 'current').value}\n")
    (src / ".netrc").write_text("machine m login u password Old-unmanaged-9x\n")
    baseline = tmp_path / "baseline.json"
    made = scan(kt, str(src), "--baseline", str(baseline), "--update-baseline", *RULES)
    assert made.code == 0 and "wrote 2 fingerprints" in made.err
    data = json.loads(baseline.read_text())
    assert data["keyed"] is True
    assert {e["kind"] for e in data["findings"]} == {"managed", "unmanaged"}
    assert_no_value([*inventory.values(), "Old-unmanaged-9x"], baseline.read_bytes())
    assert scan(kt, str(src), "--baseline", str(baseline), *RULES).code == 0
    # moved within its file: still accepted
    (src / "old.txt").write_text(f"\n\n  pw={inventory.of('globex/api', 'current').value}\n")
    assert scan(kt, str(src), "--baseline", str(baseline), *RULES).code == 0
    (src / "new.txt").write_text(f"{inventory.of('acme/smtp-admin', 'current').value}\n")
    result = scan(kt, str(src), "--baseline", str(baseline), "--json", *RULES)
    assert result.code == 1
    assert [f["where"]["path"] for f in findings(result)] == [f"{src}/new.txt"]
    assert json.loads(result.out)["summary"]["in_baseline"] == 2


@sqlite_pass_only
def test_sarif_validates_and_holds_no_value(inventory: Inventory, tmp_path: Path) -> None:
    corpus = build_corpus(inventory, tmp_path / "corpus", decoys=0)
    out = tmp_path / "scan.sarif"
    result = scan(inventory.kt, str(corpus.root), "--format", "sarif", "-o", str(out), *RULES)
    assert result.code == 1 and result.out == ""
    document = json.loads(out.read_text())
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft4Validator(schema, format_checker=jsonschema.FormatChecker()).validate(document)
    results = document["runs"][0]["results"]
    assert {r["level"] for r in results} == {"error", "note", "warning"}
    one = next(r for r in results if r["properties"].get("state") == "previous")
    assert one["properties"]["credential"] == "globex/api"
    assert one["partialFingerprints"]["keyturnFingerprint/v1"].startswith("ks1:")
    assert_no_value(inventory.values(), out.read_bytes())


@sqlite_pass_only
def test_nothing_written_holds_a_value(
    inventory: Inventory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Text, JSON, SARIF, baseline, stderr and debug logs (-v), with CredSweeper on."""
    corpus = build_corpus(inventory, tmp_path / "corpus", decoys=0)
    kt = inventory.kt
    outputs = []
    for fmt in ("text", "json", "sarif"):
        result = kt.cli("-v", "scan", str(corpus.root), "--format", fmt, "--jobs", "1")
        assert result.code == 1, result.err
        outputs += [result.out, result.err]
    baseline = tmp_path / "b.json"
    scan(kt, str(corpus.root), "--baseline", str(baseline), "--update-baseline", *RULES)
    assert "credsweeper:" in outputs[2]  # the library ran
    assert_no_value(inventory.values(), *outputs, baseline.read_bytes(), caplog.text)


@sqlite_pass_only
def test_parallel_workers_find_the_same(inventory: Inventory, tmp_path: Path) -> None:
    corpus = build_corpus(inventory, tmp_path / "corpus", decoys=3000)
    one = findings(scan(inventory.kt, str(corpus.root), "--json", "--jobs", "1", *RULES))
    two = findings(scan(inventory.kt, str(corpus.root), "--json", "--jobs", "2", *RULES))
    assert one == two and len(one) > 50


@sqlite_pass_only
def test_without_a_database_unmanaged_only(
    kt: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "elsewhere"
    work.mkdir()
    (work / ".netrc").write_text("machine m login u password Unmanaged-9xQ2vL\n")
    monkeypatch.chdir(work)
    result = kt.cli("scan", "--json", *RULES, env={"KEYTURN_DB": "sqlite:///keyturn.db"})
    assert result.code == 1 and "no keyturn database" in result.err
    data = json.loads(result.out)
    assert data["summary"]["keyed"] is False and data["findings"][0]["rule"] == "keyturn:netrc"


@sqlite_pass_only
@pytest.mark.parametrize(
    "args, message",
    [
        (("--detector", "nope"), "no detector 'nope'"),
        (("--git", "--staged"), "do not go together"),
        (("no/such/place",), "no such file or folder"),
        (("--update-baseline",), "needs --baseline"),
    ],
)
def test_bad_input_is_one_error_line(kt: Harness, args: tuple[str, ...], message: str) -> None:
    result = kt.cli("scan", *args)
    assert result.code == 1 and message in result.err
    assert "Traceback" not in result.err and len(result.err.strip().splitlines()) == 1


@sqlite_pass_only
def test_a_malformed_or_foreign_baseline_is_refused(kt: Harness, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    result = kt.cli("scan", str(tmp_path), "--baseline", str(bad))
    assert result.code == 1 and "not a keyturn scan baseline" in result.err
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps({"keyturn_scan_baseline": 1, "key_id": "x", "findings": []}))
    result = kt.cli("scan", str(tmp_path), "--baseline", str(foreign), *RULES)
    assert result.code == 1 and "another scan key" in result.err


@sqlite_pass_only
def test_cache_skips_unchanged_files_and_holds_no_value(
    inventory: Inventory, tmp_path: Path
) -> None:
    corpus = build_corpus(inventory, tmp_path / "corpus", decoys=0)
    cache = tmp_path / "scan.cache"
    kt = inventory.kt
    args = (str(corpus.root), "--json", "--jobs", "1", "--cache", str(cache), *RULES)
    first = json.loads(scan(kt, *args).out)
    second = json.loads(scan(kt, *args).out)
    assert first["summary"]["from_cache"] == 0
    assert second["summary"]["from_cache"] == second["summary"]["files"] > 10
    assert second["findings"] == first["findings"]
    (corpus.root / ".netrc").write_text("machine m login u password Changed-9xQ2vL7k\n")
    third = json.loads(scan(kt, *args).out)
    assert third["summary"]["from_cache"] == third["summary"]["files"] - 1
    netrc = [f for f in third["findings"] if f["where"]["path"].endswith("/.netrc")]
    assert netrc and netrc[0]["fingerprint"] not in {f["fingerprint"] for f in first["findings"]}
    # the SMTP credentials plant_unmanaged wrote ("Sm" and 18 characters), and the managed values
    unmanaged = {
        m.group()
        for path in corpus.root.rglob("*")
        if path.is_file()
        for m in re.finditer(rb"\bSm[A-Za-z0-9_.-]{18}(?![A-Za-z0-9_.-])", path.read_bytes())
    }
    unmanaged.add(b"Changed-9xQ2vL7k")
    assert len(unmanaged) == 6
    assert not [u for u in unmanaged if u in cache.read_bytes()]
    assert_no_value(inventory.values(), cache.read_bytes())
    assert oct(cache.stat().st_mode & 0o777) == "0o600"
