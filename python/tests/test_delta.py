"""The Delta Lake backend seen from outside: a server with ``--backend delta`` writes tables that
Python ``deltalake`` and Polars read directly, with every acknowledged row; on ``file://`` and
on a real S3-compatible server (moto, from ``scripts/setup-s3.sh``) configured the documented
way (``endpoint``, ``region``, ``allow_http`` in the config, credentials in ``AWS_*``)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Dict, Iterator, List

import deltalake
import polars as pl
import pyarrow as pa
import pytest

import featherstore

from conftest import ServerProcess, server_binary, unique, user_rows, user_spec, utc



def moto_server_path() -> Path:
    if os.environ.get("FEATHERSTORE_MOTO_SERVER"):
        return Path(os.environ["FEATHERSTORE_MOTO_SERVER"])
    return Path.home() / ".cache/featherstore/s3-venv/bin/moto_server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    """moto on a free loopback port with a bucket ``features``; its endpoint URL."""
    binary = moto_server_path()
    if not binary.exists():
        pytest.fail(f"{binary} is missing: run scripts/setup-s3.sh", pytrace=False)
    port = free_port()
    process = subprocess.Popen(
        [str(binary), "-H", "127.0.0.1", "-p", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(endpoint, timeout=5).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/features", method="PUT"), timeout=30).read()
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=10)


CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


def start_on_s3(endpoint: str) -> ServerProcess:
    env = {
        "FEATHERSTORE_STORAGE__DELTA__URI": "s3://features/prod",
        "FEATHERSTORE_STORAGE__DELTA__STORAGE_OPTIONS__ENDPOINT": endpoint,
        "FEATHERSTORE_STORAGE__DELTA__STORAGE_OPTIONS__REGION": "us-east-1",
        "FEATHERSTORE_STORAGE__DELTA__STORAGE_OPTIONS__ALLOW_HTTP": "true",
        **CREDENTIALS,
    }
    return ServerProcess(server_binary(), "delta", env=env)


def ingest_batches(client: featherstore.Client, name: str, batches: int) -> List[Dict[str, object]]:
    """Ingests ``batches`` small batches; every row acknowledged."""
    rows: List[Dict[str, object]] = []
    for b in range(batches):
        batch = [
            {"user_id": f"u{b}-{i}", "event_timestamp": utc(2026, 1, 1 + i, 12), "age": 10 * b + i}
            for i in range(3)
        ]
        client.ingest(name, user_rows(batch))
        rows.extend(batch)
    return rows


def check_readers(table_uri: str, storage_options: Dict[str, str], rows: List[Dict[str, object]]) -> None:
    expected = sorted((str(r["user_id"]), int(r["age"])) for r in rows)  # type: ignore[call-overload]
    table = deltalake.DeltaTable(table_uri, storage_options=storage_options or None)
    arrow = pa.table(table.to_pyarrow_table())
    found = sorted(zip(arrow.column("user_id").to_pylist(), arrow.column("age").to_pylist()))
    assert found == expected
    # Ingest order and time are there for any reader, unique per row.
    assert len(set(arrow.column("_seq").to_pylist())) == len(rows)
    frame = pl.read_delta(table_uri, storage_options=storage_options or None)
    assert sorted(zip(frame["user_id"].to_list(), frame["age"].to_list())) == expected
    assert frame["event_timestamp"].dtype == pl.Datetime("us", "UTC")


def test_deltalake_and_polars_read_every_acknowledged_row_on_file() -> None:
    server = ServerProcess(server_binary(), "delta")
    try:
        name = unique("users")
        with featherstore.Client(server.flight, timeout=60) as client:
            client.create_feature_set(user_spec(name))
            rows = ingest_batches(client, name, 4)
        table_uri = str(server.data_dir / "data" / "delta" / name)
        check_readers(table_uri, {}, rows)
    finally:
        server.cleanup()


def test_deltalake_and_polars_read_every_acknowledged_row_on_s3(moto: str) -> None:
    server = start_on_s3(moto)
    try:
        name = unique("users")
        with featherstore.Client(server.flight, timeout=60) as client:
            client.create_feature_set(user_spec(name))
            rows = ingest_batches(client, name, 4)
            history = pa.table(client.get_history(name))
            assert history.num_rows == len(rows)
        options = {"AWS_ENDPOINT_URL": moto, "AWS_ALLOW_HTTP": "true", **CREDENTIALS}
        check_readers(f"s3://features/prod/{name}", options, rows)
    finally:
        server.cleanup()


def random_history(client: featherstore.Client, name: str, seed: int) -> pa.Table:
    """Batches with repeated entities, ties on event time, late rows; the entity rows to join."""
    import random

    rng = random.Random(seed)
    for _ in range(6):
        batch = [
            {
                "user_id": f"u{rng.randrange(8)}",
                "event_timestamp": utc(2026, 1, 1, rng.randrange(24)),
                "age": rng.randrange(100),
                "ctr_7d": rng.random(),
            }
            for _ in range(20)
        ]
        client.ingest(name, user_rows(batch))
    entity_rows = [
        {"user_id": f"u{rng.randrange(10)}", "event_timestamp": utc(2026, 1, 1, rng.randrange(24), 30), "label": i}
        for i in range(200)
    ]
    return pa.Table.from_pylist(
        entity_rows,
        schema=pa.schema([("user_id", pa.string()), ("event_timestamp", pa.timestamp("us", "UTC")), ("label", pa.int64())]),
    )


def test_the_cluster_path_gives_the_servers_training_data() -> None:
    """featherstore.delta (DuckDB per block over the Delta tables, on Ray) and the server's
    DoExchange give the same rows, as of event time and as of ingest time, with a TTL."""
    import ray

    from featherstore.delta import training_dataset, training_table

    server = ServerProcess(server_binary(), "delta")
    started = not ray.is_initialized()
    try:
        name = unique("users")
        uri = f"file://{server.data_dir / 'data' / 'delta'}"
        with featherstore.Client(server.flight, timeout=60) as client:
            client.create_feature_set(user_spec(name, ttl_seconds=6 * 3600))
            entity_rows = random_history(client, name, seed=7)
            features = [f"{name}:age", f"{name}:ctr_7d"]
            for as_of in ("event_time", "ingest_time"):
                expected = pa.table(client.get_training_data(entity_rows, features, as_of=as_of))
                found = training_table(uri, entity_rows, features, as_of=as_of)
                assert found.column_names == expected.column_names
                for column in expected.column_names:
                    assert found.column(column).to_pylist() == expected.column(column).to_pylist(), (as_of, column)
            expected = pa.table(client.get_training_data(entity_rows, features))
        if started:
            ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
        dataset = training_dataset(uri, entity_rows, features, block_rows=64)
        table = pa.concat_tables(ray.get(ref) for ref in dataset.to_arrow_refs())
        for column in expected.column_names:
            assert table.column(column).to_pylist() == expected.column(column).to_pylist(), column
    finally:
        if started and ray.is_initialized():
            ray.shutdown()
        server.cleanup()
