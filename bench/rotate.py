"""Benchmark: PostgreSQL password rotations, keyturn against OpenBao static roles.

    set -a; . .test-env; set +a                # the scram-sha-256 cluster and keyturn's PG
    python bench/rotate.py                     # 3 rounds of 5 s per configuration
    python bench/rotate.py --rounds 5 --seconds 10

On the scram-sha-256 cluster of .test-env (KEYTURN_TEST_SCRAM_PG_*), each configuration rotates
its own login roles for a few seconds, rounds interleaved (the order rotates each round):

- keyturn: `keyturn.engine.service.rotate` (strategy single, every guarantee on: pending value
  committed first, each step recorded, the verification login, audit entries), state on
  PostgreSQL (KEYTURN_TEST_PG_URL; `--state sqlite` for a SQLite file), with 1 client, 4
  clients in one worker process, and 4 clients over 2 worker processes;
- OpenBao: a private `bao server -dev` with the database secrets engine on the same cluster,
  `POST database/rotate-role/NAME` on static roles, 1 and 4 clients;
- raw: the ceiling of this machine for what keyturn must do at least, through psycopg with
  nothing else: the same `ALTER ROLE ... PASSWORD <SCRAM verifier>` on a kept admin
  connection, then the same verification logins (the new password accepted, the old one
  refused: seed 004), 1 and 4 clients.

Prints rotations/s (medians over rounds) and the ratios the issue asks for, from this run,
with how much of the machine's CPU (all cores, every process: /proc/stat) each configuration
kept busy and what that comes to a rotation (core-milliseconds: keyturn or OpenBao, the
clients, both PostgreSQL servers), the figure that says what a machine's cores allow.
OpenBao makes no verification login; keyturn must, hence the raw ceiling beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from servers import Bao, bao_server, bao_version, keyturn_home

PREFIX = "ktbench_rot_"  # not "kt_": that is how API tokens begin
CLIENTS = 4


@dataclass(frozen=True)
class Cluster:
    host: str
    port: int
    user: str
    password: str

    @classmethod
    def from_env(cls) -> Cluster:
        try:
            return cls(
                os.environ["KEYTURN_TEST_SCRAM_PG_HOST"],
                int(os.environ["KEYTURN_TEST_SCRAM_PG_PORT"]),
                os.environ["KEYTURN_TEST_SCRAM_PG_USER"],
                os.environ["KEYTURN_TEST_SCRAM_PG_PASSWORD"],
            )
        except KeyError as exc:
            missing = exc.args[0]
            raise SystemExit(f"{missing} is not set: source the test servers' .test-env") from None

    def connect(self, user: str | None = None, password: str | None = None) -> object:
        import psycopg

        return psycopg.connect(
            host=self.host,
            port=self.port,
            dbname="postgres",
            user=user or self.user,
            password=password or self.password,
            autocommit=True,
            application_name="keyturn-bench",
        )


def create_roles(cluster: Cluster, names: list[str], password: str) -> None:
    from psycopg import sql

    with cluster.connect() as conn:  # type: ignore[attr-defined]
        for name in names:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(name), sql.Literal(password)
                )
            )


def drop_roles(cluster: Cluster, names: list[str]) -> None:
    from psycopg import sql

    with cluster.connect() as conn:  # type: ignore[attr-defined]
        for name in names:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


@dataclass
class Config:
    name: str
    run: Callable[[float], int]  # seconds -> rotations done
    rates: list[float] = field(default_factory=list)
    busy: list[float] = field(default_factory=list)  # the machine's CPU in use, each round


def cpu_ticks() -> tuple[int, int]:
    """(busy, all) CPU ticks of the whole machine since boot (/proc/stat: every core, every
    process: keyturn, OpenBao, this process's clients and the PostgreSQL servers alike;
    idle and iowait are not busy)."""
    # user nice system idle iowait irq softirq steal; guest time is in user and nice already.
    line = Path("/proc/stat").read_text().split("\n", 1)[0]
    fields = [int(x) for x in line.split()[1:9]]
    return sum(fields) - fields[3] - fields[4], sum(fields)


def busy_since(before: tuple[int, int]) -> float:
    """The share of the machine's CPU (all cores) in use since *before* (`cpu_ticks()`)."""
    busy, total = cpu_ticks()
    return (busy - before[0]) / max(total - before[1], 1)


def threaded(clients: int, one: Callable[[int], None]) -> Callable[[float], int]:
    """*clients* threads calling one(i) in a loop for the given seconds; returns the count."""

    def run(seconds: float) -> int:
        counts = [0] * clients
        stop = time.monotonic() + seconds

        def loop(i: int) -> None:
            while time.monotonic() < stop:
                one(i)
                counts[i] += 1

        threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return sum(counts)

    return run


# -- raw psycopg: the ceiling ----------------------------------------------------------------


def raw_config(cluster: Cluster, roles: list[str], clients: int, held: dict[str, str]) -> Config:
    """*held*: each role's password as the last rotation left it (shared by the configs)."""
    import psycopg
    from psycopg import sql

    from keyturn.targets.postgres import scram_verifier

    admins = [cluster.connect() for _ in range(clients)]

    def one(i: int) -> None:
        old, password = held[roles[i]], secrets.token_urlsafe(24)
        statement = sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {}").format(
            sql.Identifier(roles[i]), sql.Literal(scram_verifier(password))
        )
        admins[i].execute(statement)  # type: ignore[attr-defined]
        held[roles[i]] = password
        with cluster.connect(roles[i], password) as login:  # type: ignore[attr-defined]
            login.execute("SELECT 1").fetchone()
        try:  # the old password must be refused now (keyturn's test checks it too)
            cluster.connect(roles[i], old).close()  # type: ignore[attr-defined]
        except psycopg.OperationalError:
            pass
        else:
            raise SystemExit(f"{roles[i]}: the old password still logs in")

    return Config(f"raw psycopg x{clients}", threaded(clients, one))


# -- OpenBao static roles --------------------------------------------------------------------


def bao_database(bao: Bao, cluster: Cluster, roles: list[str]) -> None:
    """The database secrets engine on *cluster*, a static role per login in *roles*."""
    bao.call("POST", "sys/mounts/database", {"type": "database"})
    url = f"postgresql://{{{{username}}}}:{{{{password}}}}@{cluster.host}:{cluster.port}/postgres"
    bao.call(
        "POST",
        "database/config/pg",
        {
            "plugin_name": "postgresql-database-plugin",
            "connection_url": url + "?sslmode=disable",
            "username": cluster.user,
            "password": cluster.password,
            "allowed_roles": "*",
            "password_authentication": "scram-sha-256",
        },
    )
    for role in roles:
        bao.call(
            "POST",
            f"database/static-roles/{role}",
            {"db_name": "pg", "username": role, "rotation_period": "24h"},
        )


def bao_configs(cluster: Cluster, roles: list[str], stack: ExitStack) -> list[Config]:
    bao = stack.enter_context(bao_server())
    bao_database(bao, cluster, roles)
    headers = {"X-Vault-Token": bao.root}
    clients = [httpx.Client(base_url=f"{bao.base}/v1", headers=headers) for _ in roles]

    def one(i: int) -> None:
        clients[i].post(f"database/rotate-role/{roles[i]}", timeout=60).raise_for_status()

    return [Config(f"OpenBao x{n}", threaded(n, one)) for n in (1, CLIENTS)]


# -- keyturn: worker processes running the engine --------------------------------------------


def keyturn_inventory(cluster: Cluster, roles: list[str]) -> str:
    head = f"""
[policies.fast]
max_age = "180d"
grace = "0s"

[targets.pg]
type = "postgres"
host = "{cluster.host}"
port = {cluster.port}
dbname = "postgres"
admin_user = "{cluster.user}"
admin_password = "env:PG_ADMIN_PASSWORD"
sslmode = "disable"
"""
    creds = "".join(
        f'\n[[credentials]]\nid = "bench/{role}"\nkind = "postgres"\npolicy = "fast"\n'
        f'target = "pg"\nusername = "{role}"\nstrategy = "single"\n'
        'initial_secret = "env:INITIAL_PASSWORD"\n'
        for role in roles
    )
    return head + creds


class Workers:
    """`python bench/rotate.py --child` processes, each rotating its share of credentials."""

    def __init__(self, env: dict[str, str], home: Path, roles: list[str], processes: int):
        self.procs = []
        share = len(roles) // processes
        for p in range(processes):
            mine = roles[p * share : (p + 1) * share]
            args = [sys.executable, __file__, "--child", ",".join(f"bench/{r}" for r in mine)]
            self.procs.append(
                subprocess.Popen(
                    args,
                    env=env,
                    cwd=home,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        for proc in self.procs:
            line = proc.stdout.readline() if proc.stdout else ""
            if line.strip() != "ready":
                raise SystemExit(f"a keyturn worker did not start: {line!r}")

    def __call__(self, seconds: float) -> int:
        for proc in self.procs:
            assert proc.stdin
            proc.stdin.write(f"{seconds}\n")
            proc.stdin.flush()
        total = 0
        for proc in self.procs:
            assert proc.stdout
            total += int(json.loads(proc.stdout.readline())["rotations"])
        return total

    def close(self) -> None:
        for proc in self.procs:
            if proc.stdin:
                proc.stdin.close()
            proc.wait(timeout=60)


def child(credential_ids: list[str]) -> None:
    """One keyturn worker process: rotate each credential in a thread of its own, a round
    for the seconds read from stdin, until stdin closes."""
    from keyturn.app import Keyturn
    from keyturn.domain.model import Trigger
    from keyturn.engine import service
    from keyturn.settings import Settings

    app = Keyturn.open(Settings.load({}))

    def one(i: int) -> None:
        outcome = service.rotate(
            app, credential_ids[i], trigger=Trigger.MANUAL, actor="bench", reason="bench"
        )
        if outcome.status != "done":
            raise SystemExit(f"{credential_ids[i]}: rotation ended {outcome.status}")

    for i in range(len(credential_ids)):
        one(i)  # warm: connections, data keys, code paths
    run = threaded(len(credential_ids), one)
    print("ready", flush=True)
    for line in sys.stdin:
        print(json.dumps({"rotations": run(float(line))}), flush=True)
    app.close()


def keyturn_configs(
    cluster: Cluster, roles: list[str], initial: str, state: str, stack: ExitStack
) -> list[Config]:
    values = {"PG_ADMIN_PASSWORD": cluster.password, "INITIAL_PASSWORD": initial}
    kt = stack.enter_context(keyturn_home(state, keyturn_inventory(cluster, roles), values))
    # The workers import the keyturn this process imports (a worktree's, by PYTHONPATH), not
    # whichever one is installed.
    path = [str(Path(__file__).parent), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**kt.env, **values, "PYTHONPATH": os.pathsep.join(path)}
    layouts = [("keyturn x1 (1 worker)", roles[:1], 1)]
    layouts += [(f"keyturn x{CLIENTS} (1 worker)", roles[1 : 1 + CLIENTS], 1)]
    layouts += [(f"keyturn x{CLIENTS} (2 workers)", roles[1 + CLIENTS :], 2)]
    out = []
    for name, mine, processes in layouts:
        workers = Workers(env, kt.home, mine, processes)
        stack.callback(workers.close)
        out.append(Config(name, workers))
    return out


def report(configs: list[Config], args: argparse.Namespace) -> None:
    rate = {c.name: statistics.median(c.rates) for c in configs}
    used = {c.name: statistics.median(c.busy) for c in configs}
    print(
        f"PostgreSQL password rotations (scram-sha-256 cluster), {args.rounds} rounds of "
        f"{args.seconds:g} s, keyturn's state on {args.state}; {bao_version()}"
    )
    cores = os.cpu_count() or 1
    print(
        f"  {'':28}{'rotations':>10}   {'rounds':13}  machine CPU ({cores} cores): "
        "in use, ms a rotation"
    )
    for c in configs:
        spread = f"{min(c.rates):.1f}-{max(c.rates):.1f}"
        per = used[c.name] * cores * 1000 / rate[c.name] if rate[c.name] else float("nan")
        print(f"  {c.name:28}{rate[c.name]:8.1f} /s   {spread:13}  {used[c.name]:4.0%}  {per:6.1f}")
    k1, k4 = rate["keyturn x1 (1 worker)"], rate[f"keyturn x{CLIENTS} (1 worker)"]
    k4w2 = rate[f"keyturn x{CLIENTS} (2 workers)"]
    b1, b4 = rate["OpenBao x1"], rate[f"OpenBao x{CLIENTS}"]
    r1, r4 = rate["raw psycopg x1"], rate[f"raw psycopg x{CLIENTS}"]
    print("ratios (same run):")
    print(f"  keyturn / OpenBao      1 client {k1 / b1:5.2f}x   {CLIENTS} clients {k4 / b4:5.2f}x")
    print(f"  keyturn / raw ceiling  1 client {k1 / r1:5.2f}x   {CLIENTS} clients {k4 / r4:5.2f}x")
    print(f"  OpenBao / raw ceiling  1 client {b1 / r1:5.2f}x   {CLIENTS} clients {b4 / r4:5.2f}x")
    print(f"  keyturn 2 workers / 1 worker ({CLIENTS} clients) {k4w2 / k4:5.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="per configuration a round")
    parser.add_argument(
        "--state", choices=("postgres", "sqlite"), default="postgres", help="keyturn's database"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child.split(","))
        return
    cluster = Cluster.from_env()
    tag = secrets.token_hex(3)
    counts = (("k", 1 + 2 * CLIENTS), ("b", CLIENTS), ("r", CLIENTS))
    roles = {kind: [f"{PREFIX}{tag}_{kind}{i}" for i in range(n)] for kind, n in counts}
    everyone = [r for names in roles.values() for r in names]
    initial = secrets.token_urlsafe(24)
    create_roles(cluster, everyone, initial)
    try:
        with ExitStack() as stack:
            configs = keyturn_configs(cluster, roles["k"], initial, args.state, stack)
            configs += bao_configs(cluster, roles["b"], stack)
            held = dict.fromkeys(roles["r"], initial)
            configs += [raw_config(cluster, roles["r"], n, held) for n in (1, CLIENTS)]
            for round_ in range(args.rounds):
                shift = round_ % len(configs)
                for c in configs[shift:] + configs[:shift]:
                    began, ticks = time.monotonic(), cpu_ticks()
                    done = c.run(args.seconds)
                    c.rates.append(done / (time.monotonic() - began))
                    c.busy.append(busy_since(ticks))
                    print(
                        f"  round {round_ + 1}: {c.name:28}{c.rates[-1]:8.1f} /s"
                        f"  CPU {c.busy[-1]:4.0%}",
                        file=sys.stderr,
                    )
            report(configs, args)
    finally:
        drop_roles(cluster, everyone)


if __name__ == "__main__":
    main()
