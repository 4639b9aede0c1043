#!/usr/bin/env python3
"""Issue 11's pyarrow budget lines, through pyarrow Flight, against a running server.

The serving suite (`featherstore-bench`) measures ingest and training through the Rust
client, and `coldstart_bench.py` through pyarrow on servers it starts itself; this makes
the same timed calls (`coldstart_bench.FlightCalls`) against a server already running,
whatever its backend or deployment:

- ingest: ``--ingest-runs`` DoPuts of ``--ingest-rows`` rows (1,048,576) x 16 float32
  features (the suite's ingest shape) over 100k int64 entities, in 64k-row batches, each
  timed from the first write to the last acknowledgement (the budget's ">= 2M rows/s");
- training: ``--stored-rows`` rows (1M) of the training shape (8 float32 + 8 int64
  features, 30 days of event times) ingested, ``--pause`` seconds (the server indexes a set
  whose ingest has paused), then ``--requests`` DoExchange requests of ``--entity-rows``
  (1M) entity rows with a label, each timed from the first write to the last row read (the
  budget's "<= 0.4 s").

Usage: scripts/bench_pyarrow.py --flight grpc://127.0.0.1:8081 [--skip ingest|training]
Needs pyarrow and numpy. Every set it makes has a random suffix, so it can run again
against the same server.
"""

import argparse
import os
import time
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight

from coldstart_bench import BATCH, SPAN, START, FlightCalls, entity_batches, feature_batches

ENTITIES = 100_000
FLOAT_FEATURES = [f"f{i}" for i in range(16)]


def float_batches(rng, rows):
    """`rows` rows of the 16-float32 set over random entities, in 64k-row batches."""
    out = []
    for first in range(0, rows, BATCH):
        n = min(BATCH, rows - first)
        columns = {"entity_id": pa.array(rng.integers(0, ENTITIES, n, dtype=np.int64))}
        for name in FLOAT_FEATURES:
            columns[name] = pa.array(rng.random(n, dtype=np.float32))
        times = START + rng.integers(0, SPAN, n, dtype=np.int64)
        columns["event_timestamp"] = pa.array(times, type=pa.timestamp("us", tz="UTC"))
        out.append(pa.RecordBatch.from_pydict(columns))
    return out


def ingest_case(calls, args, rng):
    name = f"pyarrow_ingest_{uuid.uuid4().hex[:8]}"
    calls.create(
        name,
        {
            "name": name,
            "entity": {"name": "entity_id", "type": "int64"},
            "features": [{"name": f, "type": "float32"} for f in FLOAT_FEATURES],
        },
    )
    batches = float_batches(rng, args.ingest_rows)
    megabytes = sum(b.nbytes for b in batches) / 1e6
    for run in range(args.ingest_runs):
        seconds = calls.put(name, batches)
        print(
            f"ingest run {run + 1}: {args.ingest_rows} rows in {seconds:.3f} s: "
            f"{args.ingest_rows / seconds / 1e6:.3f}M rows/s, {megabytes / seconds:.0f} MB/s"
        )


def training_case(calls, args, rng):
    name = f"pyarrow_train_{uuid.uuid4().hex[:8]}"
    calls.create(name)
    seconds = calls.put(name, feature_batches(rng, args.stored_rows, ENTITIES))
    print(f"training: stored {args.stored_rows} rows in {seconds:.3f} s; pausing {args.pause} s")
    time.sleep(args.pause)
    request = entity_batches(rng, args.entity_rows, ENTITIES)
    for n in range(args.requests):
        seconds = calls.train(name, request)
        print(
            f"training request {n + 1}: {args.entity_rows} entity rows x {args.stored_rows} "
            f"stored rows in {seconds:.3f} s"
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
    calls = FlightCalls(flight.connect(args.flight))
    rng = np.random.default_rng(args.seed)
    print(f"bench_pyarrow: pyarrow {pa.__version__}; load average {os.getloadavg()[0]:.2f}")
    if "ingest" not in args.skip:
        ingest_case(calls, args, rng)
    if "training" not in args.skip:
        training_case(calls, args, rng)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
