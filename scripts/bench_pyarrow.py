#!/usr/bin/env python3
"""Issue 11's pyarrow budget lines, measured through pyarrow Flight itself.

The serving suite (`featherstore-bench`) measures ingest and training through the Rust
client; the budget names pyarrow, whose Flight client is the one Python users run. This
script makes the same calls through pyarrow against a running server:

- ingest: one DoPut of ``--ingest-rows`` rows (1,048,576) x 16 float32 features over 100k
  int64 entities, in 64k-row batches, timed from the first write to the last
  acknowledgement (rows/s, the budget's ">= 2M rows/s");
- training: ``--stored-rows`` rows (1M) of the suite's training shape (8 float32 + 8 int64
  features, 30 days of event times) ingested, ``--pause`` seconds (the server indexes a set
  whose ingest has paused), then ``--requests`` DoExchange requests of ``--entity-rows``
  (1M) entity rows with a label, each timed from the first write to the last row read
  (the budget's "<= 0.4 s").

Usage: scripts/bench_pyarrow.py --flight grpc://127.0.0.1:8081 [--skip ingest|training]
Needs pyarrow and numpy (`python3 -m pip install pyarrow numpy`). Every set it makes is named
with a random suffix, so it can run again against the same server.
"""

import argparse
import json
import os
import time
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight

BATCH_ROWS = 65_536
ENTITIES = 100_000
JAN_1_2026_MICROS = 1_767_225_600_000_000
THIRTY_DAYS_MICROS = 30 * 86_400 * 1_000_000


def action(client, name, body):
    results = client.do_action(flight.Action(name, json.dumps(body).encode()))
    return [r.body.to_pybytes() for r in results]


def create_set(client, name, features):
    spec = {
        "name": name,
        "entity": {"name": "entity_id", "type": "int64"},
        "features": [{"name": n, "type": t} for n, t in features],
    }
    action(client, "create_feature_set", spec)


def timestamps(rng, rows):
    micros = JAN_1_2026_MICROS + rng.integers(0, THIRTY_DAYS_MICROS, rows, dtype=np.int64)
    return pa.array(micros, type=pa.timestamp("us", tz="UTC"))


def batches(rows, make):
    return [make(min(BATCH_ROWS, rows - first), first) for first in range(0, rows, BATCH_ROWS)]


def put(client, name, batch_list):
    """One DoPut of the batches; returns (seconds, acknowledged rows)."""
    descriptor = flight.FlightDescriptor.for_path(name)
    started = time.perf_counter()
    writer, reader = client.do_put(descriptor, batch_list[0].schema)
    acked = 0
    sent = 0
    for batch in batch_list:
        writer.write_batch(batch)
        sent += 1
        # Four batches in flight, as the Python client sends them.
        while sent - acked > 4:
            reader.read()
            acked += 1
    writer.done_writing()
    while acked < sent:
        reader.read()
        acked += 1
    writer.close()
    return time.perf_counter() - started, sum(b.num_rows for b in batch_list)


def ingest_case(client, args, rng):
    name = f"pyarrow_ingest_{uuid.uuid4().hex[:8]}"
    features = [(f"f{i}", "float32") for i in range(16)]
    create_set(client, name, features)

    def make(rows, _first):
        columns = {"entity_id": pa.array(rng.integers(0, ENTITIES, rows, dtype=np.int64))}
        for f, _ in features:
            columns[f] = pa.array(rng.random(rows, dtype=np.float32))
        columns["event_timestamp"] = timestamps(rng, rows)
        return pa.RecordBatch.from_pydict(columns)

    data = batches(args.ingest_rows, make)
    megabytes = sum(b.nbytes for b in data) / 1e6
    for run in range(args.ingest_runs):
        seconds, rows = put(client, name, data)
        print(
            f"ingest run {run + 1}: {rows} rows in {seconds:.3f} s: "
            f"{rows / seconds / 1e6:.3f}M rows/s, {megabytes / seconds:.0f} MB/s"
        )


def training_case(client, args, rng):
    name = f"pyarrow_train_{uuid.uuid4().hex[:8]}"
    features = [(f"{kind}{i}", t) for i in range(8) for kind, t in (("f", "float32"), ("i", "int64"))]
    create_set(client, name, features)

    def stored(rows, _first):
        columns = {"entity_id": pa.array(rng.integers(0, ENTITIES, rows, dtype=np.int64))}
        for f, t in features:
            values = rng.integers(0, 1000, rows, dtype=np.int64)
            columns[f] = pa.array(values.astype(np.float32) if t == "float32" else values)
        columns["event_timestamp"] = timestamps(rng, rows)
        return pa.RecordBatch.from_pydict(columns)

    seconds, rows = put(client, name, batches(args.stored_rows, stored))
    print(f"training: stored {rows} rows in {seconds:.3f} s; pausing {args.pause} s")
    time.sleep(args.pause)

    def entity_rows(rows, first):
        return pa.RecordBatch.from_pydict(
            {
                "entity_id": pa.array(rng.integers(0, ENTITIES, rows, dtype=np.int64)),
                "event_timestamp": timestamps(rng, rows),
                "label": pa.array(np.arange(first, first + rows, dtype=np.int64)),
            }
        )

    request = batches(args.entity_rows, entity_rows)
    command = {"type": "training_data", "features": [f"{name}:*"]}
    for n in range(args.requests):
        started = time.perf_counter()
        descriptor = flight.FlightDescriptor.for_command(json.dumps(command).encode())
        writer, reader = client.do_exchange(descriptor)
        writer.begin(request[0].schema)
        for batch in request:
            writer.write_batch(batch)
        writer.done_writing()
        answered = 0
        while True:
            try:
                chunk = reader.read_chunk()
            except StopIteration:
                break
            if chunk.data is not None:
                answered += chunk.data.num_rows
        writer.close()
        seconds = time.perf_counter() - started
        if answered != args.entity_rows:
            raise SystemExit(f"training request answered {answered} rows of {args.entity_rows}")
        print(
            f"training request {n + 1}: {args.entity_rows} entity rows x {rows} stored rows "
            f"in {seconds:.3f} s"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flight", default="grpc://127.0.0.1:8081")
    parser.add_argument("--skip", action="append", default=[], choices=["ingest", "training"])
    parser.add_argument("--ingest-rows", type=int, default=1_048_576)
    parser.add_argument("--ingest-runs", type=int, default=3)
    parser.add_argument("--stored-rows", type=int, default=1_000_000)
    parser.add_argument("--entity-rows", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=2)
    parser.add_argument("--pause", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    client = flight.connect(args.flight)
    rng = np.random.default_rng(args.seed)
    print(f"bench_pyarrow: pyarrow {pa.__version__}; load average {os.getloadavg()[0]:.2f}")
    if "ingest" not in args.skip:
        ingest_case(client, args, rng)
    if "training" not in args.skip:
        training_case(client, args, rng)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
