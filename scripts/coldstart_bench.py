#!/usr/bin/env python3
"""Cold start, index memory, durable ingest and training data of a server binary, through
pyarrow Flight (the clients users run). Prints one line per figure, with `uptime`.

  python scripts/coldstart_bench.py BIN [BIN2 ...] [--backends duckdb,parquet]
      [--stored 10000000] [--entities 100000] [--memory-entities 1000000]

Per binary and backend, in a fresh data directory:
  1. DoPut 1M rows x 16 features (8 float32 + 8 int64, int64 entity, 64k-row batches):
     durable ingest rows/s (timed from the first write to the last acknowledgement);
  2. DoExchange 1M entity rows against those 1M feature rows: training data seconds;
  3. DoPut up to --stored rows; kill -9; restart: seconds until the ready line, and again
     after a graceful stop (SIGTERM);
  4. a second set holding --memory-entities distinct entities: the index's own accounting
     (featherstore_online_index_memory_bytes) and the process RSS after a restart, against
     the raw bytes of the latest values (key 8 + timestamp 8 + 8*4 + 8*8 = 112 bytes each).
Binaries are interleaved per backend so the load is shared alike.
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight

BATCH = 65_536
START = 1_767_225_600_000_000
SPAN = 30 * 86_400 * 1_000_000
RAW_BYTES_PER_ENTITY = 8 + 8 + 8 * 4 + 8 * 8


def uptime():
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def spec(name):
    features = []
    for f in range(8):
        features.append({"name": f"f{f}", "type": "float32"})
        features.append({"name": f"i{f}", "type": "int64"})
    return {"name": name, "entity": {"name": "entity_id", "type": "int64"}, "features": features}


def feature_batches(rng, rows, entities, distinct=False):
    out = []
    for first in range(0, rows, BATCH):
        n = min(BATCH, rows - first)
        if distinct:
            keys = np.arange(first, first + n, dtype=np.int64)
        else:
            keys = rng.integers(0, entities, n, dtype=np.int64)
        cols = {"entity_id": pa.array(keys)}
        for f in range(8):
            cols[f"f{f}"] = pa.array(rng.integers(0, 1000, n).astype(np.float32))
            cols[f"i{f}"] = pa.array(rng.integers(0, 1000, n, dtype=np.int64))
        ts = START + rng.integers(0, SPAN, n, dtype=np.int64)
        cols["event_timestamp"] = pa.array(ts, type=pa.timestamp("us", tz="UTC"))
        out.append(pa.RecordBatch.from_pydict(cols))
    return out


def entity_batches(rng, rows, entities):
    out = []
    for first in range(0, rows, BATCH):
        n = min(BATCH, rows - first)
        out.append(
            pa.RecordBatch.from_pydict(
                {
                    "entity_id": pa.array(rng.integers(0, entities, n, dtype=np.int64)),
                    "event_timestamp": pa.array(
                        START + rng.integers(0, SPAN, n, dtype=np.int64),
                        type=pa.timestamp("us", tz="UTC"),
                    ),
                    "label": pa.array(np.arange(first, first + n, dtype=np.int64)),
                }
            )
        )
    return out


class FlightCalls:
    """The timed calls, through a pyarrow Flight client (`self.flight`)."""

    def __init__(self, client=None):
        self.flight = client

    def create(self, name, set_spec=None):
        body = json.dumps(set_spec or spec(name)).encode()
        list(self.flight.do_action(flight.Action("create_feature_set", body)))

    def put(self, name, batches):
        started = time.perf_counter()
        writer, reader = self.flight.do_put(flight.FlightDescriptor.for_path(name), batches[0].schema)
        for b in batches:
            writer.write_batch(b)
        writer.done_writing()
        acked = 0
        while acked < len(batches):
            if reader.read() is None:
                break
            acked += 1
        writer.close()
        assert acked >= len(batches), f"{acked} acks for {len(batches)} batches"
        return time.perf_counter() - started

    def train(self, name, batches):
        command = {"type": "training_data", "features": [f"{name}:*"]}
        started = time.perf_counter()
        writer, reader = self.flight.do_exchange(flight.FlightDescriptor.for_command(json.dumps(command).encode()))
        writer.begin(batches[0].schema)
        for b in batches:
            writer.write_batch(b)
        writer.done_writing()
        rows = 0
        while True:
            try:
                chunk = reader.read_chunk()
            except StopIteration:
                break
            if chunk.data is not None:
                rows += chunk.data.num_rows
        writer.close()
        seconds = time.perf_counter() - started
        assert rows == sum(b.num_rows for b in batches), rows
        return seconds


class Server(FlightCalls):
    def __init__(self, binary, backend, data_dir):
        super().__init__()
        self.binary, self.backend, self.data_dir = binary, backend, data_dir
        self.proc = None

    def start(self):
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            [self.binary, "serve", "--host", "127.0.0.1", "--http-port", "0", "--flight-port", "0",
             "--metrics-port", "0", "--data-dir", self.data_dir, "--backend", self.backend],
            stdout=subprocess.PIPE, stderr=open(os.path.join(self.data_dir, "..", "stderr.log"), "a"),
            env={**os.environ, "RUST_LOG": "warn"},
        )
        line = self.proc.stdout.readline()
        seconds = time.perf_counter() - started
        ready = json.loads(line)
        self.flight = flight.connect("grpc://" + ready["flight"])
        self.metrics = "http://" + ready["metrics"] + "/metrics"
        return seconds

    def stop(self, sig):
        self.flight.close()
        self.proc.send_signal(sig)
        self.proc.wait()

    def rss_mb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) / 1024

    def index_bytes(self, name):
        text = urllib.request.urlopen(self.metrics).read().decode()
        m = re.search(r'featherstore_online_index_memory_bytes\{[^}]*feature_set="%s"[^}]*\} (\S+)' % name, text)
        return float(m.group(1)) if m else float("nan")

def fresh_server(binary, backend, tmp, set_name):
    """A started server on an empty data directory in `tmp`, with one set created."""
    data = os.path.join(tmp, "data")
    os.makedirs(data)
    s = Server(binary, backend, data)
    s.start()
    s.create(set_name)
    return s


def run(binary, backend, args, tag):
    rng = np.random.default_rng(42)
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        s = fresh_server(binary, backend, tmp, "features")
        first = feature_batches(rng, 1_000_000, args.entities)
        put = s.put("features", first)
        print(f"{tag} {backend:<8} ingest 1M rows: {put:.2f} s = {1e6 / put / 1e6:.2f} M rows/s  [{uptime()}]", flush=True)
        entity_rows = entity_batches(rng, 1_000_000, args.entities)
        times = [s.train("features", entity_rows) for _ in range(args.repeat)]
        print(f"{tag} {backend:<8} training 1M x 1M: {min(times):.2f} s (runs {', '.join(f'{t:.2f}' for t in times)})  [{uptime()}]", flush=True)
        stored = 1_000_000
        while stored < args.stored:
            n = min(1_000_000, args.stored - stored)
            s.put("features", feature_batches(rng, n, args.entities))
            stored += n
        s.stop(signal.SIGKILL)
        secs = s.start()
        print(f"{tag} {backend:<8} start after kill -9, {stored} stored rows: {secs:.2f} s, RSS {s.rss_mb():.0f} MB  [{uptime()}]", flush=True)
        s.stop(signal.SIGTERM)
        secs = s.start()
        print(f"{tag} {backend:<8} start after SIGTERM, {stored} stored rows: {secs:.2f} s, RSS {s.rss_mb():.0f} MB  [{uptime()}]", flush=True)
        s.stop(signal.SIGTERM)
    if not args.memory_entities:
        return
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        s = fresh_server(binary, backend, tmp, "wide")
        n = args.memory_entities
        for first in range(0, n, 1_000_000):
            batches = feature_batches(rng, min(1_000_000, n - first), n, distinct=True)
            for b in batches:
                b = pa.RecordBatch.from_arrays(
                    [pa.array(b.column(0).to_numpy() + first)] + b.columns[1:], schema=b.schema)
                s.put("wide", [b])
        raw = n * RAW_BYTES_PER_ENTITY
        idx = s.index_bytes("wide")
        print(f"{tag} {backend:<8} {n} entities, after ingest: index {idx / raw:.2f}x raw ({idx / n:.0f} B/entity), RSS {s.rss_mb():.0f} MB = {s.rss_mb() * 2**20 / raw:.2f}x raw ({raw / 2**20:.0f} MB)  [{uptime()}]", flush=True)
        s.stop(signal.SIGTERM)
        s.start()
        idx = s.index_bytes("wide")
        print(f"{tag} {backend:<8} {n} entities, after restart: index {idx / raw:.2f}x raw ({idx / n:.0f} B/entity), RSS {s.rss_mb():.0f} MB = {s.rss_mb() * 2**20 / raw:.2f}x raw  [{uptime()}]", flush=True)
        s.stop(signal.SIGTERM)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("binaries", nargs="+")
    p.add_argument("--backends", default="duckdb,parquet")
    p.add_argument("--stored", type=int, default=10_000_000)
    p.add_argument("--entities", type=int, default=100_000)
    p.add_argument("--memory-entities", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--tmp", default=None)
    args = p.parse_args()
    print(f"start [{uptime()}]", flush=True)
    for backend in args.backends.split(","):
        for i, binary in enumerate(args.binaries):
            run(binary, backend, args, f"[{i}:{os.path.basename(os.path.dirname(os.path.dirname(os.path.dirname(binary))))}]")
    print(f"end [{uptime()}]", flush=True)


if __name__ == "__main__":
    sys.exit(main())
