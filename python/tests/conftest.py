"""Fixtures that run the real FeatherStore server binary.

The binary is found from ``FEATHERSTORE_BIN``, else ``$CARGO_TARGET_DIR/debug/featherstore``,
else ``<repo>/target/debug/featherstore``. Each backend's server is started once per test
session in a temporary data directory (``serve ... --http-port 0 --flight-port 0
--metrics-port 0``); the fixture reads the JSON ready line it prints on stdout and kills the
process afterwards. Tests make feature sets with unique names, so they can share a server.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

import pyarrow as pa
import pytest

import featherstore

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT = float(os.environ.get("FEATHERSTORE_READY_TIMEOUT", "60"))
BACKENDS = ["duckdb", "parquet"]


def server_binary() -> Path:
    """Where the server binary is expected (it may not exist)."""
    if os.environ.get("FEATHERSTORE_BIN"):
        return Path(os.environ["FEATHERSTORE_BIN"])
    if os.environ.get("CARGO_TARGET_DIR"):
        return Path(os.environ["CARGO_TARGET_DIR"]) / "debug" / "featherstore"
    return REPO / "target" / "debug" / "featherstore"


class ServerProcess:
    """A running ``featherstore serve`` with its addresses from the ready line."""

    def __init__(
        self,
        binary: Path,
        backend: str,
        extra_args: Sequence[str] = (),
        env: Optional[Dict[str, str]] = None,
    ) -> None:
        self.backend = backend
        self.data_dir = Path(tempfile.mkdtemp(prefix=f"featherstore-{backend}-"))
        self.log_path = self.data_dir.parent / (self.data_dir.name + ".log")
        self._log = open(self.log_path, "wb")
        self.args = [
            str(binary), "serve",
            "--data-dir", str(self.data_dir / "data"),
            "--host", "127.0.0.1",
            "--http-port", "0",
            "--flight-port", "0",
            "--metrics-port", "0",
            "--backend", backend,
            *extra_args,
        ]  # fmt: skip
        self.process = subprocess.Popen(
            self.args,
            env=None if env is None else {**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        self.ready: Dict[str, Any] = self._wait_ready()
        self.flight = f"grpc://{self.ready['flight']}"
        self.http = f"http://{self.ready['http']}"

    def log_tail(self, lines: int = 40) -> str:
        if not self._log.closed:
            self._log.flush()
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _wait_ready(self) -> Dict[str, Any]:
        found: List[Dict[str, Any]] = []
        seen: List[str] = []
        assert self.process.stdout is not None
        stdout = self.process.stdout

        def read() -> None:
            for raw in stdout:
                line = raw.decode(errors="replace").strip()
                seen.append(line)
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if isinstance(event, dict) and event.get("event") == "ready":
                    found.append(event)
                    break
            # Keep draining so the server never blocks on a full stdout pipe.
            for _ in stdout:
                pass

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if found:
                return found[0]
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        code = self.process.poll()
        self.stop()
        reason = f"exited with {code}" if code is not None else f"not ready in {READY_TIMEOUT}s"
        message = (
            f"featherstore server ({self.backend}) {reason}: {' '.join(self.args)}\n"
            f"stdout: {seen[-5:]}\nstderr tail:\n{self.log_tail()}"
        )
        self.cleanup()
        raise RuntimeError(message)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        try:
            self.log_path.unlink()
        except OSError:
            pass


_servers: Dict[str, ServerProcess] = {}
_failures: Dict[str, str] = {}


def _start(backend: str) -> ServerProcess:
    if backend in _failures:  # do not wait for a broken server once per test
        pytest.fail(_failures[backend], pytrace=False)
    if backend not in _servers:
        binary = server_binary()
        if not binary.exists():
            pytest.fail(
                f"featherstore server binary not found at {binary}: build it with "
                "`cargo build --bin featherstore`, or set FEATHERSTORE_BIN",
                pytrace=False,
            )
        try:
            _servers[backend] = ServerProcess(binary, backend)
        except RuntimeError as e:
            _failures[backend] = str(e)
            raise
    return _servers[backend]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    for server in _servers.values():
        server.cleanup()
    _servers.clear()


@pytest.fixture(scope="session", params=BACKENDS)
def server(request: pytest.FixtureRequest) -> ServerProcess:
    """A running server, once per backend."""
    return _start(request.param)


@pytest.fixture(scope="session")
def one_server() -> ServerProcess:
    """A running server on the default backend, for tests the backend cannot change."""
    return _start(BACKENDS[0])


@pytest.fixture
def client(server: ServerProcess) -> Iterator[featherstore.Client]:
    with featherstore.Client(server.flight, timeout=60) as c:
        yield c


@pytest.fixture
def one_client(one_server: ServerProcess) -> Iterator[featherstore.Client]:
    with featherstore.Client(one_server.flight, timeout=60) as c:
        yield c


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.timezone.utc)


def user_spec(name: str, ttl_seconds: Optional[int] = None) -> Dict[str, Any]:
    spec: Dict[str, Any] = {
        "name": name,
        "entity": {"name": "user_id", "type": "string"},
        "timestamp": "event_timestamp",
        "features": [
            {"name": "age", "type": "int64"},
            {"name": "ctr_7d", "type": "float32", "description": "click-through rate, 7 days"},
            {"name": "country", "type": "string"},
            {"name": "embedding", "type": "float32[4]"},
        ],
        "description": "Profile features of a user",
        "tags": {"team": "growth"},
    }
    if ttl_seconds is not None:
        spec["ttl_seconds"] = ttl_seconds
    return spec


TS = pa.timestamp("us", "UTC")
EMB = pa.list_(pa.float32(), 4)


def user_rows(rows: List[Dict[str, Any]]) -> pa.Table:
    """A table in the user spec's schema from row dicts (missing features are null)."""
    schema = pa.schema(
        [
            ("user_id", pa.string()),
            ("event_timestamp", TS),
            ("age", pa.int64()),
            ("ctr_7d", pa.float32()),
            ("country", pa.string()),
            ("embedding", EMB),
        ]
    )
    full = [{f.name: r.get(f.name) for f in schema} for r in rows]
    return pa.Table.from_pylist(full, schema=schema)


@pytest.fixture
def user_set(client: featherstore.Client) -> Iterator[str]:
    """A fresh feature set of the user spec, deleted afterwards."""
    name = unique("users")
    client.create_feature_set(user_spec(name))
    yield name
    try:
        client.delete_feature_set(name)
    except featherstore.FeatherStoreError:
        pass


def require_framework(module: str) -> Any:
    """Imports a framework for its adapter's tests; skips when it is not installed, unless
    FEATHERSTORE_REQUIRE_FRAMEWORKS=1 (as in CI), where a missing framework fails."""
    if os.environ.get("FEATHERSTORE_REQUIRE_FRAMEWORKS") == "1":
        return __import__(module)
    return pytest.importorskip(
        module, reason=f"{module} is not installed (see scripts/setup-python.sh)"
    )


def skip_if_no_training_data(client: featherstore.Client) -> None:
    """Skips the calling test when the server answers UNIMPLEMENTED for DoExchange."""
    probe = pa.table({"user_id": pa.array([], pa.string()), "event_timestamp": pa.array([], TS)})
    try:
        client.get_training_data(probe, ["__featherstore_probe__:x"])
    except featherstore.UnimplementedError as e:
        pytest.skip(f"the server answers UNIMPLEMENTED for DoExchange (training data): {e}")
    except featherstore.FeatherStoreError:
        pass  # NOT_FOUND for the probe set: DoExchange is served
