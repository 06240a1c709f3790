"""Benchmark: `keyturn scan` against CredSweeper alone, on the same labelled tree.

    python bench/scan.py                  # ~2 MB tree, 3 interleaved rounds
    python bench/scan.py --mb 5 --repeat 5

The bench builds a tree (tests/scan/corpus.py): copies of managed values in every encoding,
SMTP credentials of the shapes keyturn's own rules cover, generic credentials (cloud keys,
tokens, database passwords), references and placeholders that must not be reported, and
filler source code, Markdown and YAML up to the size asked. It creates a keyturn database
holding the managed values (and more, ``--values``), then runs, each in a fresh process and
one process each (``--jobs 1``), rounds interleaved:

- ``library``: CredSweeper's Python API over the folder, as one would use it alone;
- ``managed``: keyturn's managed matching alone (index built from the database, no detector);
- ``managed+library``: keyturn scan with CredSweeper as its only detector;
- ``keyturn``: keyturn scan as shipped (CredSweeper and keyturn's own rules).

It prints files/s and MB/s of each (scan time: after imports and start-up, which it shows
apart; per CPU second, as the machine is shared and wall time drifts with its load), the
ratio of ``managed+library`` to ``library`` (the goal: managed matching adds
under 20% to the library's own time), and precision and recall of ``library`` and
``keyturn`` on the labels, per class: managed copies, SMTP-shaped, generic.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.scan.corpus import Corpus, plant_managed, plant_unmanaged, shaped  # noqa: E402

MODES = ("library", "managed", "managed+library", "keyturn")
WORDS = [
    "account",
    "batch",
    "cache",
    "client",
    "config",
    "context",
    "count",
    "data",
    "default",
    "delta",
    "event",
    "field",
    "file",
    "filter",
    "format",
    "handler",
    "index",
    "item",
    "key",
    "label",
    "limit",
    "list",
    "load",
    "message",
    "mode",
    "name",
    "node",
    "offset",
    "order",
    "owner",
    "page",
    "path",
    "policy",
    "queue",
    "record",
    "region",
    "report",
    "request",
    "result",
    "route",
    "schema",
    "scope",
    "service",
    "session",
    "size",
    "source",
    "state",
    "status",
    "stream",
    "table",
    "target",
    "task",
    "tenant",
    "timeout",
    "token_type",
    "user_name",
    "value",
    "version",
    "worker",
]


# -- the tree ---------------------------------------------------------------------------------


def _ident(rng: random.Random) -> str:
    return "_".join(rng.sample(WORDS, 2))


def _python(rng: random.Random) -> list[str]:
    name = _ident(rng)
    args = ", ".join(rng.sample(WORDS, 3))
    return [
        f"def {name}({args}):",
        f'    """Return the {rng.choice(WORDS)} of the {rng.choice(WORDS)}."""',
        f"    {rng.choice(WORDS)} = {rng.randint(0, 999)}",
        f"    if {rng.choice(WORDS)} > {rng.randint(0, 99)}:",
        f"        return {name}_{rng.choice(WORDS)}({args})",
        f"    return [{rng.choice(WORDS)} for {rng.choice(WORDS)} in range({rng.randint(1, 50)})]",
        "",
    ]


def _yaml(rng: random.Random) -> list[str]:
    return [f"{_ident(rng)}:"] + [
        f"  {rng.choice(WORDS)}: {rng.choice([str(rng.randint(1, 500)), rng.choice(WORDS)])}"
        for _ in range(6)
    ]


def _markdown(rng: random.Random) -> list[str]:
    return [f"## The {rng.choice(WORDS)}", "", " ".join(rng.choices(WORDS, k=40)), ""]


def filler(root: Path, rng: random.Random, target_bytes: int) -> int:
    made, n = 0, 0
    kinds = ((".py", _python), (".yaml", _yaml), (".md", _markdown))
    while made < target_bytes:
        suffix, make = kinds[n % 3]
        lines = [line for _ in range(60) for line in make(rng)]
        path = root / f"src/pkg{n % 17}/{_ident(rng)}_{n}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
        made += path.stat().st_size
        n += 1
    return n


def build_tree(
    root: Path, copies: int, mb: float, rng: random.Random
) -> tuple[Corpus, dict[str, str]]:
    corpus = Corpus(root)
    values = {}
    for n in range(copies):
        value = shaped(rng, 24) + ' "é/@:'
        credential = f"bench/smtp-{n}"
        values[credential] = value
        sub = Corpus(root / f"svc{n}")
        plant_managed(sub, credential, 1, value, f"mailer{n}@example.com")
        plant_unmanaged(sub, rng)
        corpus.planted += [
            p.__class__(f"svc{n}/{p.path}", p.line, p.kind, p.label) for p in sub.planted
        ]
    filler(root, rng, int(mb * 1e6))
    return corpus, values


def make_database(
    home: Path, values: dict[str, str], extra: int, rng: random.Random
) -> dict[str, str]:
    env = {
        **os.environ,
        "KEYTURN_DB": f"sqlite:///{home / 'keyturn.db'}",
        "KEYTURN_MASTER_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("="),
    }
    run_keyturn(env, home, "init")
    blocks = []
    all_values = {**values, **{f"bench/other-{n}": shaped(rng, 32) for n in range(extra)}}
    for n, credential in enumerate(all_values):
        env[f"BENCH_V{n}"] = all_values[credential]
        blocks.append(
            f'[[credentials]]\nid = "{credential}"\ntenant = "bench"\nkind = "smtp"\n'
            f'owner = "bench-team"\ninitial_secret = "env:BENCH_V{n}"\n'
        )
    (home / "keyturn.toml").write_text("\n".join(blocks))
    run_keyturn(env, home, "apply", "keyturn.toml")
    return env


def run_keyturn(env: dict[str, str], home: Path, *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "keyturn.cli.main", *args],
        cwd=home,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        sys.exit(f"keyturn {' '.join(args)} failed: {done.stderr.strip()}")


# -- one measurement, in a fresh process ----------------------------------------------------------


def child(mode: str, tree: Path) -> dict[str, Any]:
    started = time.perf_counter()
    if mode == "library":
        import io  # noqa: F401  (CredSweeper imports it; kept for symmetry of start-up)
        import logging

        from credsweeper import CredSweeper, FilesProvider

        logging.getLogger("credsweeper").setLevel(logging.CRITICAL + 10)
        sweeper = CredSweeper(pool_count=1)
        provider = FilesProvider([str(tree)])
        ready, cpu = time.perf_counter(), time.process_time()
        files = provider.get_scannable_files(sweeper.config)
        sweeper.run(provider)
        seconds, cpu = time.perf_counter() - ready, time.process_time() - cpu
        found = [
            [
                os.path.relpath(c.line_data_list[0].path, tree),
                c.line_data_list[0].line_num,
                c.rule_name,
            ]
            for c in sweeper.credential_manager.get_credentials()
        ]
        size = sum(os.path.getsize(f.file_path) for f in files)
        return {
            "seconds": seconds,
            "cpu": cpu,
            "startup": ready - started,
            "files": len(files),
            "bytes": size,
            "found": found,
        }
    return _keyturn_child(mode, tree, started)


def _keyturn_child(mode: str, tree: Path, started: float) -> dict[str, Any]:
    from keyturn.app import Keyturn
    from keyturn.scan.managed import build_index, scan_keys
    from keyturn.scan.run import batches
    from keyturn.scan.scanner import Scanner
    from keyturn.scan.sources import Source
    from keyturn.settings import Settings

    app = Keyturn.open(Settings.load())
    names = {
        "managed": [],
        "managed+library": ["credsweeper"],
        "keyturn": ["keyturn", "credsweeper"],
    }[mode]
    keys = scan_keys(app)
    built = time.perf_counter()
    index = build_index(app, keys)
    build_seconds = time.perf_counter() - built
    # What `keyturn scan --jobs 1` runs, with its start-up (the detectors' construction, as
    # the library's above) before the clock starts.
    scanner = Scanner(keys, index, names)
    source = Source()
    ready, cpu = time.perf_counter(), time.process_time()
    findings, files = [], 0
    for batch in batches(source.files([tree])):
        findings += scanner.scan_batch(batch)[0]
        files += len(batch)
    seconds, cpu = time.perf_counter() - ready, time.process_time() - cpu
    found = [[os.path.relpath(f.where.path, tree), f.where.line, f.rule] for f in findings]
    return {
        "seconds": seconds,
        "cpu": cpu,
        "startup": ready - started - build_seconds,
        "index_seconds": build_seconds,
        "managed_values": len(index),
        "files": files,
        "bytes": source.total_bytes,
        "found": found,
    }


def measure(mode: str, tree: Path, env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--tree", str(tree)],
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        sys.exit(f"{mode} failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


# -- precision and recall -------------------------------------------------------------------------


def score(corpus: Corpus, found: list[list[Any]]) -> dict[str, tuple[int, int]]:
    labelled = {(p.path, p.line): p.kind for p in corpus.planted}
    hits = {(path, line) for path, line, _ in found}
    out = {}
    for kind in ("managed", "unmanaged", "generic"):
        lines = [key for key, k in labelled.items() if k == kind]
        out[kind] = (sum(1 for key in lines if key in hits), len(lines))
    true = sum(1 for key in hits if key in labelled)
    out["precision"] = (true, len(hits))
    return out


def _ratio(part: tuple[int, int]) -> str:
    hit, total = part
    return f"{hit / total:.3f} ({hit}/{total})" if total else "-"


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def report(runs: dict[str, list[dict[str, Any]]], corpus: Corpus) -> None:
    print(
        f"\n{'mode':<17}{'files':>7}{'MB':>7}{'wall s':>8}{'CPU s':>8}{'files/s':>9}{'MB/s':>8}"
        f"{'start-up s':>12}   (rates per CPU second)"
    )
    for mode in MODES:
        last, cpu = runs[mode][-1], _median(runs[mode], "cpu")
        print(
            f"{mode:<17}{last['files']:>7}{last['bytes'] / 1e6:>7.2f}"
            f"{_median(runs[mode], 'seconds'):>8.2f}{cpu:>8.2f}{last['files'] / cpu:>9.1f}"
            f"{last['bytes'] / 1e6 / cpu:>8.3f}{_median(runs[mode], 'startup'):>12.2f}"
        )
    for what in ("cpu", "seconds"):
        rounds = [
            k[what] / lib[what]
            for k, lib in zip(runs["managed+library"], runs["library"], strict=True)
        ]
        print(
            f"\nmanaged+library / library ({'CPU' if what == 'cpu' else 'wall'} time): "
            f"{statistics.median(rounds):.3f} (rounds: {', '.join(f'{r:.3f}' for r in rounds)});"
            " goal < 1.20",
            end="",
        )
    managed = runs["managed"][-1]
    share = _median(runs["managed"], "cpu") / _median(runs["library"], "cpu")
    print(
        f"\nmanaged matching alone: {share:.1%} of the library's CPU time; index of "
        f"{managed['managed_values']} values built in {managed['index_seconds']:.3f} s"
    )
    print(f"\n{'':<10}{'managed copies':>20}{'SMTP-shaped':>20}{'generic':>18}{'precision':>22}")
    for mode in ("library", "keyturn"):
        s = score(corpus, runs[mode][-1]["found"])
        print(
            f"{mode:<10}{_ratio(s['managed']):>20}{_ratio(s['unmanaged']):>20}"
            f"{_ratio(s['generic']):>18}{_ratio(s['precision']):>22}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=float, default=2.0, help="filler size (MB)")
    parser.add_argument("--copies", type=int, default=20, help="labelled sets planted")
    parser.add_argument(
        "--values", type=int, default=300, help="more managed values in the database"
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--tree", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.tree)))
        return
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="kt-bench-scan-") as tmp:
        home = Path(tmp)
        corpus, values = build_tree(home / "tree", args.copies, args.mb, rng)
        env = make_database(home, values, args.values, rng)
        print(f"tree: {home / 'tree'}, {len(corpus.planted)} labelled lines; {args.repeat} rounds")
        runs: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
        for n in range(args.repeat):
            for mode in MODES if n % 2 == 0 else reversed(MODES):
                runs[mode].append(measure(mode, home / "tree", env))
                print(f"  round {n + 1} {mode}: {runs[mode][-1]['seconds']:.2f} s", flush=True)
        report(runs, corpus)


if __name__ == "__main__":
    main()
