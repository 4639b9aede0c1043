#!/usr/bin/env python3
"""Measures the memory one large JSON ingest request takes in a real server.

Starts `featherstore serve` (the binary given, on loopback, a temporary data directory, the
backend given), creates a feature set, POSTs one `{"rows": [...]}` body of about --mb
megabytes to `/v1/feature-sets/{name}/rows`, and prints the server's resident memory before
the request and its peak (VmHWM) after, from /proc. Standard library only.

    python3 scripts/json_ingest_memory.py target/release/featherstore --backend duckdb --mb 59
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request


def status_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def body(mb: float) -> bytes:
    rows = []
    size = 2  # {"rows": [...]} framing, roughly
    i = 0
    while size < mb * 1_000_000:
        row = {
            "user_id": f"user_{i % 50_000}",
            "event_timestamp": f"2026-01-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00.{i % 1000:03d}Z",
            "age": i % 97,
            "ctr_7d": (i % 1000) / 1000,
            "country": ["DE", "FR", "SE", "US"][i % 4],
            "embedding": [((i * 7 + k) % 100) / 100 for k in range(8)],
        }
        text = json.dumps(row)
        size += len(text) + 2
        rows.append(text)
        i += 1
    return ('{"rows": [' + ", ".join(rows) + "]}").encode()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("--backend", default="duckdb")
    parser.add_argument("--mb", type=float, default=59)
    args = parser.parse_args()

    payload = body(args.mb)
    with tempfile.TemporaryDirectory() as data_dir:
        server = subprocess.Popen(
            [args.binary, "serve", "--backend", args.backend, "--data-dir", data_dir,
             "--host", "127.0.0.1", "--http-port", "0", "--flight-port", "0",
             "--metrics-port", "0"],  # fmt: skip
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        try:
            ready = json.loads(server.stdout.readline())
            base = f"http://{ready['http']}"
            spec = {
                "name": "users",
                "entity": {"name": "user_id", "type": "string"},
                "features": [
                    {"name": "age", "type": "int64"},
                    {"name": "ctr_7d", "type": "float32"},
                    {"name": "country", "type": "string"},
                    {"name": "embedding", "type": "float32[8]"},
                ],
            }
            request = urllib.request.Request(
                f"{base}/v1/feature-sets", data=json.dumps(spec).encode(), method="POST"
            )
            urllib.request.urlopen(request).read()
            time.sleep(0.5)
            before = status_kb(server.pid, "VmRSS")
            request = urllib.request.Request(
                f"{base}/v1/feature-sets/users/rows",
                data=payload,
                method="POST",
                headers={"content-type": "application/json"},
            )
            started = time.monotonic()
            answer = json.loads(urllib.request.urlopen(request, timeout=600).read())
            elapsed = time.monotonic() - started
            peak = status_kb(server.pid, "VmHWM")
            after = status_kb(server.pid, "VmRSS")
        finally:
            server.terminate()
            server.wait(timeout=30)
    mb = len(payload) / 1e6
    print(
        f"backend={args.backend} body={mb:.1f} MB rows={answer['rows']} time={elapsed:.2f}s "
        f"rss_before={before / 1024:.0f} MiB peak={peak / 1024:.0f} MiB "
        f"(+{(peak - before) / 1024:.0f} MiB, {(peak - before) * 1024 / len(payload):.1f}x the body) "
        f"rss_after={after / 1024:.0f} MiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
