"""Online snapshots through the real server: after a kill -9 (snapshot older than the data), a
corrupt snapshot, and a graceful stop, the server serves exactly the stored latest values."""

import json
import signal
import subprocess
from pathlib import Path
from typing import Any, Dict, Iterator, List

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from conftest import BACKENDS, server_binary

ENTITIES = 1000
# The server snapshots a set once 1,000,000 rows were applied since its last snapshot.
SNAPSHOTTED_ROWS = 1_000_000
TAIL_ROWS = 50_000


_started: List[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _kill_leftovers() -> Iterator[None]:
    """A failed assertion must not leave a server running."""
    yield
    for process in _started:
        if process.poll() is None:
            process.kill()
            process.wait()
    _started.clear()


class Server:
    def __init__(self, data_dir: Path, backend: str) -> None:
        self.process = subprocess.Popen(
            [str(server_binary()), "serve", "--data-dir", str(data_dir), "--host", "127.0.0.1",
             "--http-port", "0", "--flight-port", "0", "--metrics-port", "0",
             "--backend", backend],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=open(data_dir.parent / "server.log", "ab"),
        )  # fmt: skip
        _started.append(self.process)
        assert self.process.stdout is not None
        ready: Dict[str, Any] = json.loads(self.process.stdout.readline())
        self.flight = flight.connect("grpc://" + ready["flight"])

    def stop(self, sig: int) -> None:
        self.flight.close()
        self.process.send_signal(sig)
        self.process.wait(timeout=120)


def rows(rng: np.random.Generator, n: int) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {
            "entity_id": pa.array(rng.integers(0, ENTITIES, n, dtype=np.int64)),
            "n": pa.array(rng.integers(0, 1 << 40, n, dtype=np.int64)),
            # Few distinct times: many ties, which the later ingest must win.
            "event_timestamp": pa.array(
                rng.integers(0, 50, n, dtype=np.int64) * 1_000_000,
                type=pa.timestamp("us", tz="UTC"),
            ),
        }
    )


def expected_latest(batches: List[pa.RecordBatch]) -> Dict[int, int]:
    latest: Dict[int, Any] = {}
    for batch in batches:
        ids = batch.column(0).to_numpy()
        ns = batch.column(1).to_numpy()
        ts = batch.column(2).cast(pa.int64()).to_numpy()
        for i, n, t in zip(ids, ns, ts):
            if i not in latest or t >= latest[i][0]:
                latest[i] = (t, n)
    return {int(i): int(v[1]) for i, v in latest.items()}


def put(server: Server, batch: pa.RecordBatch) -> None:
    writer, reader = server.flight.do_put(flight.FlightDescriptor.for_path("snap"), batch.schema)
    writer.write_batch(batch)
    writer.done_writing()
    assert reader.read() is not None
    writer.close()


def online(server: Server) -> Dict[int, int]:
    ticket = {"type": "online", "feature_set": "snap", "entities": list(range(ENTITIES))}
    table = server.flight.do_get(flight.Ticket(json.dumps(ticket).encode())).read_all()
    ids = table.column("entity_id").to_pylist()
    return {i: n for i, n in zip(ids, table.column("n").to_pylist()) if n is not None}


@pytest.mark.parametrize("backend", BACKENDS)
def test_restarts_serve_the_stored_latest(tmp_path: Path, backend: str) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    rng = np.random.default_rng(7)
    server = Server(data_dir, backend)
    spec = {"name": "snap", "entity": {"name": "entity_id", "type": "int64"},
            "features": [{"name": "n", "type": "int64"}]}  # fmt: skip
    list(server.flight.do_action(flight.Action("create_feature_set", json.dumps(spec).encode())))
    batches = [rows(rng, SNAPSHOTTED_ROWS), rows(rng, TAIL_ROWS)]
    for batch in batches:
        put(server, batch)
    # In the backend's own directory: the Parquet backend keeps its files in `parquet/`.
    snapshot = (data_dir / "parquet" if backend == "parquet" else data_dir) / ".online"
    snapshot = snapshot / "snap.snapshot"
    assert snapshot.exists(), "a snapshot after 1,000,000 rows"
    want = expected_latest(batches)
    assert online(server) == want

    # A crash: the snapshot misses the last batch, which the start tops up.
    server.stop(signal.SIGKILL)
    server = Server(data_dir, backend)
    assert online(server) == want

    # A corrupt snapshot is not used: the set is rebuilt, and the reason logged.
    server.stop(signal.SIGKILL)
    corrupt = bytearray(snapshot.read_bytes())
    corrupt[len(corrupt) // 2] ^= 1
    snapshot.write_bytes(bytes(corrupt))
    server = Server(data_dir, backend)
    assert online(server) == want
    log = (data_dir.parent / "server.log").read_text(errors="replace")
    assert "online snapshot not used" in log and "checksum mismatch" in log, log[-2000:]

    # A graceful stop writes a snapshot that covers everything.
    server.stop(signal.SIGTERM)
    assert snapshot.exists()
    server = Server(data_dir, backend)
    assert online(server) == want
    server.stop(signal.SIGTERM)
