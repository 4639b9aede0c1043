#!/usr/bin/env python3
"""The storage backends side by side in one sitting: ingest, history scan and training data
(1M entity rows x 1M feature rows by default) through the server on DuckDB, Parquet and Delta
Lake on an S3-compatible server (moto on loopback), then the same training data through the
cluster path (``featherstore.delta``, no server in the data path) on the Delta tables the
server wrote. Each backend runs ``featherstore-bench`` (its serving cases skipped); the figures
come from its JSON.

    scripts/bench_backends.py --bench target/release/featherstore-bench [--quick]

Needs the venv of scripts/setup-python.sh (deltalake, duckdb, pyarrow) and moto from
scripts/setup-s3.sh (``FEATHERSTORE_MOTO_SERVER`` or its default path).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pyarrow as pa

# The bench suite's training data: 30 days from 2026-01-01, int64 entities (crates/bench/src/data.rs).
START_US = 1_767_225_600_000_000
SPAN_US = 30 * 86_400 * 1_000_000
SKIPPED = "open,service,ingest_reads,memory,startup,redis"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto() -> tuple[subprocess.Popen, str]:
    binary = os.environ.get(
        "FEATHERSTORE_MOTO_SERVER", str(Path.home() / ".cache/featherstore/s3-venv/bin/moto_server")
    )
    port = free_port()
    process = subprocess.Popen(
        [binary, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise SystemExit(f"moto did not start on {endpoint}")
            time.sleep(0.1)
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/bench", method="PUT"), timeout=10)
    return process, endpoint


def run_suite(bench: str, backend: str, args: argparse.Namespace, env: Dict[str, str], out: Path) -> dict:
    command = [bench, "--backend", backend, "--skip", SKIPPED, "--json", str(out)]
    if args.quick:
        command.append("--quick")
    else:
        command += ["--training-feature-rows", str(args.feature_rows), "--training-rows", str(args.entity_rows)]
    print(f"== {backend}: {' '.join(command)}", flush=True)
    subprocess.run(command, env={**os.environ, **env}, check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def figure(document: dict, prefix: str, key: str) -> Optional[float]:
    for case in document["cases"]:
        if case["case"].startswith(prefix) and key in case.get("figures", {}):
            return case["figures"][key]
    return None


def cluster_training(endpoint: str, document: dict) -> float:
    """Seconds for the cluster path's training data over the suite's Delta tables, for as
    many entity rows as the suite asked the server for."""
    from featherstore.delta import training_table

    profile = document["profile"]
    rows, entities = profile["training_rows"], profile["entities"]
    rng = np.random.default_rng(7)
    entity_rows = pa.table(
        {
            "entity_id": pa.array(rng.integers(0, entities, rows), pa.int64()),
            "event_timestamp": pa.array(
                START_US + rng.integers(0, SPAN_US, rows), pa.timestamp("us", tz="UTC")
            ),
            "label": pa.array(np.arange(rows), pa.int64()),
        }
    )
    options = {"AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true", **CREDENTIALS}
    started = time.perf_counter()
    table = training_table("s3://bench/features", entity_rows, ["train:*"], storage_options=options)
    seconds = time.perf_counter() - started
    if table.num_rows != rows:
        raise SystemExit(f"the cluster path answered {table.num_rows} rows for {rows}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench", required=True, help="the featherstore-bench binary (release)")
    parser.add_argument("--quick", action="store_true", help="the suite's small profile (a smoke run)")
    parser.add_argument("--feature-rows", type=int, default=1_000_000)
    parser.add_argument("--entity-rows", type=int, default=1_000_000)
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args()

    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()}", flush=True)
    moto, endpoint = start_moto()
    results: Dict[str, dict] = {}
    try:
        with tempfile.TemporaryDirectory() as scratch:
            delta_env = {
                "FEATHERSTORE_STORAGE__DELTA__URI": "s3://bench/features",
                "FEATHERSTORE_STORAGE__DELTA__STORAGE_OPTIONS__ENDPOINT": endpoint,
                "FEATHERSTORE_STORAGE__DELTA__STORAGE_OPTIONS__REGION": "us-east-1",
                "FEATHERSTORE_STORAGE__DELTA__STORAGE_OPTIONS__ALLOW_HTTP": "true",
                **CREDENTIALS,
            }
            for backend, env in [("duckdb", {}), ("parquet", {}), ("delta", delta_env)]:
                results[backend] = run_suite(args.bench, backend, args, env, Path(scratch) / f"{backend}.json")
            cluster_seconds = cluster_training(endpoint, results["delta"])
    finally:
        moto.kill()
        moto.wait()

    rows: List[List[str]] = []
    for backend, document in results.items():
        rows.append(
            [
                backend if backend != "delta" else "delta (moto S3)",
                f"{figure(document, 'ingest', 'rows_per_s') or 0:,.0f}",
                f"{figure(document, 'history', 'rows_per_s') or 0:,.0f}",
                f"{figure(document, 'training.1', 'seconds') or 0:.2f}",
                f"{figure(document, 'training.1', 'server_peak_rss_mb') or 0:,.0f}",
            ]
        )
    rows.append(["delta, cluster path (1 process)", "", "", f"{cluster_seconds:.2f}", ""])
    header = ["backend", "ingest rows/s", "history rows/s", "training s", "server peak RSS MB"]
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    for line in [header] + rows:
        print("  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(line, widths))))
    print(f"load after: {os.getloadavg()}")
    if args.json:
        args.json.write_text(json.dumps({"suites": results, "cluster_training_seconds": cluster_seconds}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
