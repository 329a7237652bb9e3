"""The same job through lienthong, NATS JetStream and a raw SQLite copy, in one run (issue #16).

    .venv/bin/python bench/peers.py [--records 1000000] [--only lienthong,nats,raw]

The job: N records of ~400 B, from one district to the province, durable (fsynced) and
queryable at the province (a SQLite table keyed by the record's 16-byte id). Each system's
source is filled before its clock starts; the clock stops when the province holds all N.

- lienthong: `one_stream.run` — real `lienthong run` processes, mTLS, every seal verified.
- NATS JetStream (Debian's `nats-server`): a district server holding a file stream of the N
  messages; a province server it joins as a leaf node over mTLS (a CA made here, both sides
  verified); at the clock's start a consumer process creates, at the province, a mirror of the
  district's stream (JetStream domains) and pulls it in batches of 1,000 into SQLite (WAL,
  synchronous=FULL, the same table shape as lienthong's records: an insert-ordered rowid and a
  unique random id), acknowledging each batch after its commit.
- raw copy (the floor): one process reads the district's SQLite file and inserts into the
  province's in transactions of 10,000, with time-ordered ids and with random ids.

Peak RSS is VmHWM of the province-side processes (lienthong: the province node; NATS: the
province server + the consumer; raw: the copying process); CPU is every process of the job.
What the bench needs it installs: `nats-server` with apt-get (as root), nats-py with this venv's
pip (the `bench` extra in pyproject.toml); when it cannot, it says so and skips NATS.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib.util
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import code_under_test, command_line, cpu_seconds, free_port, loadavg, save_result, vm_hwm_kb
from _peer_workers import open_sqlite

WORKERS = str(Path(__file__).resolve().parent / "_peer_workers.py")
RECORD_BYTES = 400
LIENTHONG_PAD = 165  # one_stream's record with 165 characters of comment: a ~400 B sealed envelope
NATS_PY = "nats-py==2.16.0"  # as pyproject.toml's `bench` extra


def payload(i: int) -> bytes:
    """A ~400 B JSON record (the shape of an indicator value)."""
    head = f'{{"kind":"indicator","indicator":"KTXH.MAU","unit":"86-28894","period":"2026-10","value":"{i}","comment":"'
    return (head + "x" * (RECORD_BYTES - len(head) - 2) + '"}').encode()


def record_id(i: int, ordered: bool) -> bytes:
    return struct.pack(">QQ", time.time_ns(), i) if ordered else os.urandom(16)


# ---------------------------------------------------------------- raw copy (the floor)


def run_raw(root: Path, n: int, ordered: bool) -> dict[str, Any]:
    src, dst = root / f"raw-src-{ordered}.db", root / f"raw-dst-{ordered}.db"
    conn = open_sqlite(src)
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO records(id, body) VALUES (?, ?)", ((record_id(i, ordered), payload(i)) for i in range(n)))
    conn.execute("COMMIT")
    conn.close()
    out = subprocess.run([sys.executable, WORKERS, "raw", str(src), str(dst)], check=True, capture_output=True, text=True)
    got = json.loads(out.stdout)
    return {
        "system": f"raw SQLite copy, {'time-ordered' if ordered else 'random'} ids",
        "records_per_s": round(n / got["elapsed_s"]),
        "elapsed_s": round(got["elapsed_s"], 2),
        "peak_rss_mb": round(got["peak_rss_mb"], 1),
        "cpu_s": round(got["cpu_s"], 2),
    }


# ---------------------------------------------------------------- lienthong


def run_lienthong(n: int) -> dict[str, Any]:
    import one_stream

    r = one_stream.run(n, LIENTHONG_PAD, profile=False, timeout=3600, keep=False, quiet=True)
    return {
        "system": f"lienthong, one stream, every seal verified (~{r['avg_envelope_bytes']:.0f} B envelopes)",
        "records_per_s": r["records_per_s"],
        "elapsed_s": r["elapsed_s"],
        "peak_rss_mb": r["province_peak_rss_mb"],
        "cpu_s": round(r["province_cpu_s"] + r["child_cpu_s"], 2),
        "detail": f"province {r['province_peak_rss_mb']} MB / {r['province_cpu_s']} s CPU, child {r['child_peak_rss_mb']} MB / "
        f"{r['child_cpu_s']} s; province wrote {r['province_written_bytes_per_record']} B per record",
    }


# ---------------------------------------------------------------- NATS JetStream


def ensure_nats() -> str | None:
    """Install what the NATS run needs; None when ready, else why it cannot run."""
    if shutil.which("nats-server") is None:
        if os.geteuid() != 0:
            return "Error: nats-server is not installed and this is not root. Try: sudo apt-get install nats-server"
        print("installing Debian's nats-server (apt-get) ...", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
        done = subprocess.run(["apt-get", "install", "-y", "-qq", "nats-server"], env=env, capture_output=True, text=True)
        if done.returncode != 0 or shutil.which("nats-server") is None:
            return f"Error: apt-get could not install nats-server ({done.stderr.strip()[-200:]}). Try: apt-get install nats-server"
    if importlib.util.find_spec("nats") is None:
        print(f"installing {NATS_PY} into this venv (pip) ...", flush=True)
        done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", NATS_PY], capture_output=True, text=True)
        if done.returncode != 0:
            return f"Error: pip could not install {NATS_PY} ({done.stderr.strip()[-200:]}). Try: .venv/bin/pip install -e '.[bench]'"
    return None


def make_certs(root: Path) -> dict[str, Path]:
    """A CA, the province server's certificate (127.0.0.1) and the district's client certificate."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    out: dict[str, Path] = {}

    def write(name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None) -> None:
        out[f"{name}_cert"] = root / f"{name}.crt"
        out[f"{name}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        if key is not None:
            out[f"{name}_key"] = root / f"{name}.key"
            out[f"{name}_key"].write_bytes(
                key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
            )

    def builder(cn: str, issuer: x509.Name, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=2))
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "peers-bench CA")])
    ca = builder("peers-bench CA", ca_name, ca_key).add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    write("ca", ca.sign(ca_key, hashes.SHA256()), None)
    for name, usage in (("province", ExtendedKeyUsageOID.SERVER_AUTH), ("district", ExtendedKeyUsageOID.CLIENT_AUTH)):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            builder(name, ca_name, key)
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
            )
            .add_extension(x509.ExtendedKeyUsage([usage, ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), False)
            .sign(ca_key, hashes.SHA256())
        )
        write(name, cert, key)
    return out


class NatsServer:
    def __init__(self, root: Path, name: str, config: str) -> None:
        self.conf = root / f"{name}.conf"
        self.conf.write_text(config)
        self.log = open(root / f"{name}.log", "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(["nats-server", "-c", str(self.conf)], stdout=self.log, stderr=subprocess.STDOUT)
        self.name = name

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


async def _until(what: str, probe: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await probe()
        except Exception as exc:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: {exc!r}") from None
            await asyncio.sleep(0.1)


async def _quiet(exc: Exception) -> None:
    """nats-py's error callback: a refused connection while a server starts is retried by `_until`, not printed."""


async def _prefill_district(url: str, n: int) -> None:
    import nats
    from nats.js.api import StorageType, StreamConfig

    nc = await _until("the district's nats-server", lambda: nats.connect(url, error_cb=_quiet, allow_reconnect=False))
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="REC", subjects=["rec.>"], storage=StorageType.FILE))
    for lo in range(0, n, 2000):
        await asyncio.gather(*(js.publish("rec.86-28894", record_id(i, False) + payload(i)) for i in range(lo, min(n, lo + 2000))))
    await nc.close()


async def _wait_leaf(url: str) -> None:
    """Until the province sees the district's JetStream through the leaf connection."""
    import nats

    nc = await _until("the province's nats-server", lambda: nats.connect(url, error_cb=_quiet, allow_reconnect=False))
    js = nc.jetstream(domain="district")
    await _until("the district's stream through the leaf node", lambda: js.stream_info("REC"))
    await nc.close()


def run_nats(root: Path, n: int) -> dict[str, Any]:
    certs = make_certs(root)
    pport, dport, leaf = free_port(), free_port(), free_port()
    tls = 'cert_file: "{c}", key_file: "{k}", ca_file: "{ca}"'
    province_tls = tls.format(c=certs["province_cert"], k=certs["province_key"], ca=certs["ca_cert"])
    district_tls = tls.format(c=certs["district_cert"], k=certs["district_key"], ca=certs["ca_cert"])
    servers: list[NatsServer] = []
    try:
        district = NatsServer(
            root,
            "district",
            f'listen: "127.0.0.1:{dport}"\nserver_name: district\n'
            f'jetstream {{ store_dir: "{root / "district-js"}", domain: district }}\n'
            f'leafnodes {{ reconnect: 1, remotes: [ {{ url: "tls://127.0.0.1:{leaf}", tls {{ {district_tls} }} }} ] }}\n',
        )
        servers.append(district)
        print(f"  NATS: filling the district's stream with {n:,} messages ...", flush=True)
        asyncio.run(_prefill_district(f"nats://127.0.0.1:{dport}", n))
        province = NatsServer(
            root,
            "province",
            f'listen: "127.0.0.1:{pport}"\nserver_name: province\n'
            f'jetstream {{ store_dir: "{root / "province-js"}", domain: province }}\n'
            f'leafnodes {{ listen: "127.0.0.1:{leaf}", tls {{ {province_tls}, verify: true, timeout: 5 }} }}\n',
        )
        servers.append(province)
        asyncio.run(_wait_leaf(f"nats://127.0.0.1:{pport}"))
        cpu0 = {s.name: cpu_seconds(s.proc.pid) for s in servers}
        t0 = time.monotonic()
        done = subprocess.run(
            [sys.executable, WORKERS, "nats", f"nats://127.0.0.1:{pport}", str(root / "nats-province.db"), str(n)],
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        )
        elapsed = time.monotonic() - t0
        got = json.loads(done.stdout)
        cpu = {s.name: cpu_seconds(s.proc.pid) - cpu0[s.name] for s in servers}
        hwm = {s.name: vm_hwm_kb(s.proc.pid) / 1024 for s in servers}
    finally:
        for server in reversed(servers):
            server.stop()
    return {
        "system": "NATS JetStream: leaf-node mirror over mTLS + a nats-py consumer writing into SQLite",
        "records_per_s": round(n / elapsed),
        "elapsed_s": round(elapsed, 2),
        "peak_rss_mb": round(hwm["province"] + got["peak_rss_mb"], 1),
        "cpu_s": round(sum(cpu.values()) + got["cpu_s"], 2),
        "detail": f"province server {hwm['province']:.0f} MB / {cpu['province']:.1f} s CPU, consumer {got['peak_rss_mb']:.0f} MB / "
        f"{got['cpu_s']:.1f} s, district server {hwm['district']:.0f} MB / {cpu['district']:.1f} s; the consumer's mirror "
        f"and consumer were made {got['ready_s']:.2f} s after its start, its first batch came at {got['first_s']:.2f} s",
    }


# ---------------------------------------------------------------- the run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1_000_000, help="records to move (default 1,000,000)")
    ap.add_argument("--only", default="lienthong,nats,raw", help="comma-separated subset of lienthong,nats,raw")
    ap.add_argument("--keep", action="store_true", help="keep the temp directory")
    args = ap.parse_args()
    only = set(args.only.split(","))
    n = args.records
    root = Path(tempfile.mkdtemp(prefix="lienthong-peers-"))
    results: list[dict[str, Any]] = []
    skipped: list[str] = []
    load_before = loadavg()
    try:
        if "lienthong" in only:
            print(f"lienthong: {n:,} records ...", flush=True)
            results.append(run_lienthong(n))
        if "nats" in only:
            print(f"NATS JetStream: {n:,} records ...", flush=True)
            why = ensure_nats()
            if why is None:
                (root / "nats").mkdir()
                results.append(run_nats(root / "nats", n))
            else:
                print(why)
                skipped.append(f"NATS JetStream: {why}")
        if "raw" in only:
            for ordered in (True, False):
                print(f"raw SQLite copy ({'time-ordered' if ordered else 'random'} ids): {n:,} records ...", flush=True)
                results.append(run_raw(root, n, ordered))
    finally:
        if args.keep:
            print(f"(kept {root})")
        else:
            shutil.rmtree(root, ignore_errors=True)
    ours = next((r for r in results if r["system"].startswith("lienthong")), None)
    print()
    print(f"command: {command_line()}")
    print(f"code: {code_under_test()}")
    print(f"records: {n:,}; load average before / after: {load_before} / {loadavg()}")
    print(f"{'system':<90} {'records/s':>10} {'peak RSS MB':>12} {'CPU s':>8} {'lienthong ×':>12}")
    for r in results:
        ratio = f"{ours['records_per_s'] / r['records_per_s']:.2f}" if ours and r is not ours else "—"
        r["lienthong_ratio"] = ratio
        print(f"{r['system']:<90} {r['records_per_s']:>10,} {r['peak_rss_mb']:>12} {r['cpu_s']:>8} {ratio:>12}")
        if r.get("detail"):
            print(f"    {r['detail']}")
    for why in skipped:
        print(f"skipped: {why}")
    result = {"command": command_line(), "code": code_under_test(), "records": n, "loadavg_before": load_before, "results": results}
    print(f"result saved to {save_result('peers', result)}")


if __name__ == "__main__":
    main()
