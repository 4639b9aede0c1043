#!/usr/bin/env python3
"""Soak: minutes of mixed load against one server; no errors, memory flat.

Starts `featherstore serve` (or targets `--flight`/`--http` of a running one), creates two
feature sets over a fixed population of entities, and runs at once until `--duration`:

- writers: DoPut streams of 1,000-row batches (values for existing entities: the online index
  does not grow, the offline store does);
- HTTP online reads of 1 and 100 entities, Flight online reads of 100 entities;
- history reads of a few entities (Flight and HTTP);
- training data (DoExchange) of 2,000 entity rows over both sets.

Every `--sample` seconds it records the server's RSS (from /proc) and the operation counts.
At the end it prints a table per operation (count, rate, errors, p50/p99 latency), the RSS
series, and one JSON line. It fails (exit 1) on any error, or when the largest RSS of the
second half of the run exceeds `--rss-growth` times the largest of the first half (caches fill
up to their limits first; after that memory must not grow).

    python3 scripts/soak.py --bin target/release/featherstore --backend duckdb --duration 600
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, Dict, List, Optional

import pyarrow as pa
import pyarrow.flight as flight

ENTITIES = 20_000
SETS = {
    "soak_users": [("age", "int64", pa.int64()), ("ctr", "float32", pa.float32()),
                   ("country", "string", pa.string()), ("embedding", "float32[8]", pa.list_(pa.float32(), 8))],
    "soak_devices": [("risk", "float64", pa.float64()), ("trusted", "bool", pa.bool_()),
                     ("seen", "timestamp", pa.timestamp("us", tz="UTC"))],
}


def spec(name: str) -> dict:
    return {
        "name": name,
        "entity": {"name": "user_id", "type": "string"},
        "features": [{"name": f, "type": t} for f, t, _ in SETS[name]],
    }


def schema(name: str) -> pa.Schema:
    fields = [("user_id", pa.string()), ("event_timestamp", pa.timestamp("us", tz="UTC"))]
    return pa.schema(fields + [(f, a) for f, _, a in SETS[name]])


def batch(name: str, rows: int) -> pa.RecordBatch:
    now = time.time_ns() // 1000
    ids = [f"u{random.randrange(ENTITIES)}" for _ in range(rows)]
    columns = [pa.array(ids), pa.array([now] * rows, pa.timestamp("us", tz="UTC"))]
    for feature, _, arrow_type in SETS[name]:
        if arrow_type == pa.int64():
            values = [random.randrange(100) for _ in range(rows)]
        elif arrow_type == pa.float32() or arrow_type == pa.float64():
            values = [random.random() for _ in range(rows)]
        elif arrow_type == pa.string():
            values = [random.choice(["de", "fr", "us", None]) for _ in range(rows)]
        elif arrow_type == pa.bool_():
            values = [random.random() < 0.5 for _ in range(rows)]
        elif pa.types.is_timestamp(arrow_type):
            values = [now - random.randrange(10**9) for _ in range(rows)]
        else:
            values = [[random.random() for _ in range(8)] for _ in range(rows)]
        columns.append(pa.array(values, arrow_type))
    return pa.record_batch(columns, schema=schema(name))


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: Dict[str, List[float]] = {}
        self.errors: Dict[str, List[str]] = {}

    def record(self, op: str, seconds: float) -> None:
        with self.lock:
            self.latencies.setdefault(op, []).append(seconds)

    def error(self, op: str, message: str) -> None:
        with self.lock:
            self.errors.setdefault(op, []).append(message)


class Soak:
    def __init__(self, flight_uri: str, http_addr: str, stats: Stats, stop: threading.Event):
        self.flight_uri = flight_uri
        self.http_host, self.http_port = http_addr.rsplit(":", 1)
        self.stats = stats
        self.stop = stop

    def loop(self, op: str, work: Callable[[], None], pause: float = 0.0) -> None:
        while not self.stop.is_set():
            started = time.perf_counter()
            try:
                work()
                self.stats.record(op, time.perf_counter() - started)
            except Exception as e:  # every failure is a finding of the soak
                self.stats.error(op, f"{type(e).__name__}: {e}"[:300])
                time.sleep(0.1)
            if pause:
                time.sleep(pause)

    def http_post(self, connection: http.client.HTTPConnection, path: str, body: dict) -> bytes:
        connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = connection.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {data[:200]!r}")
        return data

    def writer(self, name: str) -> None:
        client = flight.FlightClient(self.flight_uri)

        def write() -> None:
            writer, reader = client.do_put(flight.FlightDescriptor.for_path(name), schema(name))
            for _ in range(10):
                writer.write_batch(batch(name, 1000))
                if reader.read() is None:
                    raise RuntimeError("DoPut ended without an acknowledgement")
            writer.done_writing()
            writer.close()

        self.loop(f"ingest {name} (10x1000 rows)", write, pause=0.05)

    def http_online(self, entities: int) -> None:
        connection = http.client.HTTPConnection(self.http_host, int(self.http_port), timeout=10)

        def read() -> None:
            keys = [f"u{random.randrange(ENTITIES)}" for _ in range(entities)]
            rows = json.loads(self.http_post(connection, "/v1/online",
                                             {"feature_set": "soak_users", "entities": keys}))["rows"]
            if len(rows) != entities:
                raise RuntimeError(f"{len(rows)} rows for {entities} entities")

        self.loop(f"http online {entities}", read)

    def flight_online(self) -> None:
        client = flight.FlightClient(self.flight_uri)

        def read() -> None:
            keys = [f"u{random.randrange(ENTITIES)}" for _ in range(100)]
            ticket = {"type": "online", "feature_set": "soak_devices", "entities": keys}
            table = client.do_get(flight.Ticket(json.dumps(ticket).encode())).read_all()
            if table.num_rows != 100:
                raise RuntimeError(f"{table.num_rows} rows for 100 entities")

        self.loop("flight online 100", read)

    def history(self) -> None:
        client = flight.FlightClient(self.flight_uri)
        connection = http.client.HTTPConnection(self.http_host, int(self.http_port), timeout=30)

        def read() -> None:
            keys = [f"u{random.randrange(ENTITIES)}" for _ in range(3)]
            ticket = {"type": "history", "feature_set": "soak_users", "entities": keys}
            client.do_get(flight.Ticket(json.dumps(ticket).encode())).read_all()
            self.http_post(connection, "/v1/history", {**ticket, "feature_set": "soak_devices"})

        self.loop("history 3 entities (flight+http)", read, pause=0.2)

    def training(self) -> None:
        client = flight.FlightClient(self.flight_uri)
        command = {"type": "training_data", "features": ["soak_users:*", "soak_devices:risk"]}

        def run() -> None:
            now = time.time_ns() // 1000
            rows = pa.record_batch(
                [pa.array([f"u{random.randrange(ENTITIES)}" for _ in range(2000)]),
                 pa.array([now - random.randrange(10**8) for _ in range(2000)], pa.timestamp("us", tz="UTC")),
                 pa.array([random.random() < 0.5 for _ in range(2000)])],
                names=["user_id", "event_timestamp", "label"],
            )
            descriptor = flight.FlightDescriptor.for_command(json.dumps(command).encode())
            writer, reader = client.do_exchange(descriptor)
            writer.begin(rows.schema)
            writer.write_batch(rows)
            writer.done_writing()
            table = reader.read_all()
            writer.close()
            if table.num_rows != 2000:
                raise RuntimeError(f"{table.num_rows} training rows for 2000 entity rows")

        self.loop("training data 2000 rows", run, pause=1.0)


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def percentile(values: List[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", help="the featherstore binary (started here)")
    parser.add_argument("--backend", choices=["duckdb", "parquet"], default="duckdb")
    parser.add_argument("--duration", type=float, default=600, help="seconds")
    parser.add_argument("--sample", type=float, default=10, help="seconds between RSS samples")
    parser.add_argument("--rss-growth", type=float, default=1.25,
                        help="allowed ratio of the second half's largest RSS to the first half's")
    args = parser.parse_args()

    data_dir = tempfile.mkdtemp(prefix=f"featherstore-soak-{args.backend}-")
    env = {**os.environ, "FEATHERSTORE_STORAGE__DUCKDB__MEMORY_LIMIT": "1GB",
           "FEATHERSTORE_STORAGE__PARQUET__FLUSH_ROWS": "200000"}
    process = subprocess.Popen(
        [args.bin, "serve", "--backend", args.backend, "--data-dir", data_dir, "--host", "127.0.0.1",
         "--http-port", "0", "--flight-port", "0", "--metrics-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
    )
    try:
        ready = json.loads(process.stdout.readline())
        flight_uri, http_addr = f"grpc://{ready['flight']}", ready["http"]
        admin = flight.FlightClient(flight_uri)
        for name in SETS:
            list(admin.do_action(flight.Action("create_feature_set", json.dumps(spec(name)).encode())))
        # Every entity gets a value first, so that reads are of a full index from the start.
        for name in SETS:
            writer, reader = admin.do_put(flight.FlightDescriptor.for_path(name), schema(name))
            for start in range(0, ENTITIES, 5000):
                b = batch(name, 5000)
                ids = pa.array([f"u{i}" for i in range(start, start + 5000)])
                writer.write_batch(b.set_column(0, "user_id", ids))
                reader.read()
            writer.done_writing()
            writer.close()

        stats, stop = Stats(), threading.Event()
        soak = Soak(flight_uri, http_addr, stats, stop)
        workers = [lambda: soak.writer("soak_users"), lambda: soak.writer("soak_devices"),
                   lambda: soak.http_online(1), lambda: soak.http_online(100), soak.flight_online,
                   soak.history, soak.training]
        threads = [threading.Thread(target=w, daemon=True) for w in workers]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        samples = []
        while (elapsed := time.monotonic() - started) < args.duration:
            time.sleep(min(args.sample, max(0.0, args.duration - elapsed)))
            samples.append((round(time.monotonic() - started, 1), rss_bytes(process.pid)))
            print(f"t={samples[-1][0]:6.1f}s rss={samples[-1][1] / 2**20:7.1f} MiB "
                  f"errors={sum(len(e) for e in stats.errors.values())}", flush=True)
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        elapsed = time.monotonic() - started
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(data_dir, ignore_errors=True)

    print(f"\n{'operation':36} {'count':>8} {'per s':>8} {'errors':>7} {'p50 ms':>8} {'p99 ms':>8}")
    for op, values in sorted(stats.latencies.items()):
        print(f"{op:36} {len(values):8} {len(values) / elapsed:8.1f} {len(stats.errors.get(op, [])):7} "
              f"{percentile(values, 0.5) * 1e3:8.2f} {percentile(values, 0.99) * 1e3:8.2f}")
    # The caches (DuckDB's buffer pool up to its memory_limit, the Parquet memtable up to a
    # flush) fill during the first minutes: memory is flat when the second half of the run
    # needs no more than the first half did.
    half = max(1, len(samples) // 2)
    warm = max(rss for _, rss in samples[:half])
    last = max(rss for _, rss in samples[half:]) if len(samples) > half else warm
    errors = {op: e[:3] for op, e in stats.errors.items()}
    ok = not errors and last <= warm * args.rss_growth
    print(json.dumps({
        "backend": args.backend, "duration_seconds": round(elapsed, 1),
        "operations": {op: len(v) for op, v in stats.latencies.items()},
        "errors": errors, "rss_first_half_max_mib": round(warm / 2**20, 1),
        "rss_second_half_max_mib": round(last / 2**20, 1),
        "rss_ratio": round(last / warm, 3), "result": "ok" if ok else "failed",
    }))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
