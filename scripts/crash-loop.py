#!/usr/bin/env python3
"""Crash loop: SIGKILL the server again and again during concurrent ingest and reads.

Each cycle starts `featherstore serve` on a data directory kept across cycles, runs writers
(DoPut streams of numbered batches) and readers (online and history reads over Flight and
HTTP) against it, kills it with SIGKILL at a random moment, and starts it again. After every
restart, before any new write, the stored rows are counted per batch:

- every batch whose acknowledgement a writer received is there with all its rows;
- no batch is there in part (a batch is stored whole or not at all);
- no batch is there twice (replaying the log after a crash is idempotent).

Every tenth cycle the server is also restarted twice with no writes in between, and the
counts must not change. Prints the figures at the end and exits non-zero on the first
violation.

    python3 scripts/crash-loop.py --bin target/release/featherstore --backend parquet --cycles 50

Needs pyarrow (the test venv has it: ~/.cache/featherstore/venv/bin/python).
"""

from __future__ import annotations

import argparse
import collections
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
import urllib.request
from typing import Dict, List, Optional, Set

import pyarrow as pa
import pyarrow.flight as flight

SET = "crash_loop"
SPEC = {
    "name": SET,
    "entity": {"name": "entity", "type": "string"},
    "features": [
        {"name": "batch", "type": "int64"},
        {"name": "row", "type": "int64"},
        {"name": "payload", "type": "string"},
        {"name": "score", "type": "float32"},
    ],
}
SCHEMA = pa.schema(
    [
        ("entity", pa.string()),
        ("event_timestamp", pa.timestamp("us", tz="UTC")),
        ("batch", pa.int64()),
        ("row", pa.int64()),
        ("payload", pa.string()),
        ("score", pa.float32()),
    ]
)


class Server:
    """A `featherstore serve` child process on free loopback ports."""

    def __init__(self, binary: str, backend: str, data_dir: str, env: Dict[str, str]):
        started = time.monotonic()
        self.process = subprocess.Popen(
            [binary, "serve", "--backend", backend, "--data-dir", data_dir, "--host", "127.0.0.1",
             "--http-port", "0", "--flight-port", "0", "--metrics-port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={**os.environ, **env},
        )
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the server exited before its ready line (code {self.process.wait()})")
        ready = json.loads(line)
        self.ready_seconds = time.monotonic() - started
        self.flight = f"grpc://{ready['flight']}"
        self.http = f"http://{ready['http']}"

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()


def make_batch(number: int, rows: int) -> pa.RecordBatch:
    now = time.time_ns() // 1000
    return pa.record_batch(
        [
            pa.array([f"b{number}-r{i}" for i in range(rows)]),
            pa.array([now - i for i in range(rows)], pa.timestamp("us", tz="UTC")),
            pa.array([number] * rows, pa.int64()),
            pa.array(list(range(rows)), pa.int64()),
            pa.array([f"payload {number}/{i} " + "x" * (i % 50) for i in range(rows)]),
            pa.array([float(i) / 7 for i in range(rows)], pa.float32()),
        ],
        schema=SCHEMA,
    )


class Workload:
    """Writers and readers against one server until `stop` is set."""

    def __init__(self, server: Server, next_batch: List[int], lock: threading.Lock, rows: int):
        self.server = server
        self.next_batch = next_batch
        self.lock = lock
        self.rows = rows
        self.stop = threading.Event()
        self.acked: Set[int] = set()
        self.reads = 0
        self.threads: List[threading.Thread] = []

    def take_number(self) -> int:
        with self.lock:
            number = self.next_batch[0]
            self.next_batch[0] += 1
            return number

    def writer(self) -> None:
        try:
            client = flight.FlightClient(self.server.flight)
            while not self.stop.is_set():
                writer, reader = client.do_put(flight.FlightDescriptor.for_path(SET), SCHEMA)
                sent: List[int] = []
                for _ in range(random.randint(1, 20)):
                    number = self.take_number()
                    writer.write_batch(make_batch(number, self.rows))
                    sent.append(number)
                    ack = reader.read()
                    if ack is None:
                        raise RuntimeError("the server ended the DoPut without an acknowledgement")
                    index = json.loads(ack.to_pybytes())["batch"]
                    self.acked.add(sent[index])
                writer.done_writing()
                writer.close()
        except (flight.FlightError, OSError, http.client.HTTPException, RuntimeError):
            pass  # the server was killed

    def reader(self) -> None:
        try:
            client = flight.FlightClient(self.server.flight)
            while not self.stop.is_set():
                keys = [f"b{random.randint(0, max(1, self.next_batch[0]))}-r{random.randint(0, self.rows - 1)}"
                        for _ in range(50)]
                ticket = {"type": "online", "feature_set": SET, "entities": keys}
                client.do_get(flight.Ticket(json.dumps(ticket).encode())).read_all()
                body = json.dumps({"type": "history", "feature_set": SET, "entities": keys[:5]}).encode()
                request = urllib.request.Request(f"{self.server.http}/v1/history", data=body, method="POST")
                urllib.request.urlopen(request, timeout=10).read()
                self.reads += 2
        except (flight.FlightError, OSError, http.client.HTTPException):
            pass  # the server was killed

    def start(self, writers: int, readers: int) -> None:
        for target, count in ((self.writer, writers), (self.reader, readers)):
            for _ in range(count):
                thread = threading.Thread(target=target, daemon=True)
                thread.start()
                self.threads.append(thread)

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)


def stored_counts(server: Server) -> Dict[int, int]:
    """Rows stored per batch number, read through a full history scan."""
    client = flight.FlightClient(server.flight)
    ticket = {"type": "history", "feature_set": SET, "features": ["batch"]}
    table = client.do_get(flight.Ticket(json.dumps(ticket).encode())).read_all()
    return dict(collections.Counter(table.column("batch").to_pylist()))


def check(counts: Dict[int, int], acked: Set[int], rows: int, cycle: int) -> Optional[str]:
    partial = {b: n for b, n in counts.items() if n != rows}
    if partial:
        return f"cycle {cycle}: batches stored in part or twice (batch: rows): {dict(list(partial.items())[:10])}"
    missing = sorted(acked - counts.keys())
    if missing:
        return f"cycle {cycle}: {len(missing)} acknowledged batches are missing, e.g. {missing[:10]}"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", required=True, help="the featherstore binary")
    parser.add_argument("--backend", choices=["duckdb", "parquet"], required=True)
    parser.add_argument("--cycles", type=int, default=50)
    parser.add_argument("--rows", type=int, default=200, help="rows per batch")
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument("--readers", type=int, default=2)
    parser.add_argument("--min-run", type=float, default=0.3, help="seconds before the kill, at least")
    parser.add_argument("--max-run", type=float, default=2.0, help="seconds before the kill, at most")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    random.seed(seed)

    data_dir = tempfile.mkdtemp(prefix=f"featherstore-crash-{args.backend}-")
    # Small flush and compaction thresholds so that kills land inside flushes and compactions.
    env = {
        "FEATHERSTORE_STORAGE__PARQUET__FLUSH_ROWS": "5000",
        "FEATHERSTORE_STORAGE__PARQUET__FLUSH_INTERVAL_SECONDS": "1",
        "FEATHERSTORE_STORAGE__PARQUET__COMPACT_MIN_FILES": "4",
    }
    print(f"crash loop: backend {args.backend}, {args.cycles} cycles, seed {seed}, data {data_dir}")
    acked: Set[int] = set()
    next_batch = [0]
    lock = threading.Lock()
    ready_times: List[float] = []
    reads = 0
    failure: Optional[str] = None
    started = time.monotonic()
    try:
        server = Server(args.bin, args.backend, data_dir, env)
        ready_times.append(server.ready_seconds)
        client = flight.FlightClient(server.flight)
        list(client.do_action(flight.Action("create_feature_set", json.dumps(SPEC).encode())))
        counts: Dict[int, int] = {}
        for cycle in range(1, args.cycles + 1):
            workload = Workload(server, next_batch, lock, args.rows)
            workload.start(args.writers, args.readers)
            time.sleep(random.uniform(args.min_run, args.max_run))
            server.kill()
            workload.join()
            acked |= workload.acked
            reads += workload.reads

            server = Server(args.bin, args.backend, data_dir, env)
            ready_times.append(server.ready_seconds)
            counts = stored_counts(server)
            failure = check(counts, acked, args.rows, cycle)
            if failure is None and cycle % 10 == 0:
                # Replay is idempotent: two more restarts with no writes change nothing.
                for _ in range(2):
                    server.kill()
                    server = Server(args.bin, args.backend, data_dir, env)
                    ready_times.append(server.ready_seconds)
                    again = stored_counts(server)
                    if again != counts:
                        failure = f"cycle {cycle}: counts changed across restarts with no writes"
                        break
            if failure:
                break
            print(f"cycle {cycle:3}: {len(acked)} batches acknowledged, {len(counts)} stored, "
                  f"{sum(counts.values())} rows, ready in {ready_times[-1]:.2f}s", flush=True)
        server.kill()
    finally:
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)

    elapsed = time.monotonic() - started
    unacked_stored = len(set(counts) - acked)
    print(json.dumps({
        "backend": args.backend,
        "cycles": args.cycles,
        "seed": seed,
        "acknowledged_batches": len(acked),
        "stored_batches": len(counts),
        "stored_unacknowledged_batches": unacked_stored,
        "stored_rows": sum(counts.values()),
        "reads": reads,
        "restart_ready_seconds_max": round(max(ready_times), 3),
        "restart_ready_seconds_mean": round(sum(ready_times) / len(ready_times), 3),
        "elapsed_seconds": round(elapsed, 1),
        "result": failure or "ok",
    }))
    if failure:
        print(f"FAILED: {failure}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
