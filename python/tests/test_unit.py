"""Client internals that need no FeatherStore server: error mapping, conversions, wire format."""

from __future__ import annotations

import datetime as dt
import json
import threading
from concurrent import futures
from typing import Any, Dict, Iterator, List

import pyarrow as pa
import pyarrow.flight as flight
import pytest

import featherstore
from featherstore import _arrow
from featherstore.errors import _parse

# -- errors ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def failing_server() -> Iterator[Dict[str, Any]]:
    """A gRPC server that answers every Flight call with the status code in state["code"]."""
    grpc = pytest.importorskip("grpc")
    state: Dict[str, Any] = {"code": "NOT_FOUND", "message": 'feature set "x" not found'}

    class Handler(grpc.GenericRpcHandler):
        def service(self, details):  # noqa: ANN001
            def fail(request, context):  # noqa: ANN001
                context.abort(getattr(grpc.StatusCode, state["code"]), state["message"])

            if details.method.endswith(("/DoAction", "/DoGet")):
                return grpc.unary_stream_rpc_method_handler(fail)
            return grpc.stream_stream_rpc_method_handler(fail)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers([Handler()])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    state["location"] = f"grpc://127.0.0.1:{port}"
    yield state
    server.stop(None)


CASES = [
    ("NOT_FOUND", featherstore.NotFoundError),
    ("INVALID_ARGUMENT", featherstore.InvalidArgumentError),
    ("ALREADY_EXISTS", featherstore.AlreadyExistsError),
    ("RESOURCE_EXHAUSTED", featherstore.ResourceExhaustedError),
    ("UNAUTHENTICATED", featherstore.UnauthenticatedError),
    ("PERMISSION_DENIED", featherstore.PermissionDeniedError),
    ("UNIMPLEMENTED", featherstore.UnimplementedError),
    ("INTERNAL", featherstore.InternalError),
]


@pytest.mark.parametrize("code,cls", CASES)
def test_status_maps_to_exception(failing_server: Dict[str, Any], code: str, cls: type) -> None:
    failing_server["code"] = code
    message = f'column "age": expected int64, got utf8 ({code})'
    failing_server["message"] = message
    client = featherstore.Client(failing_server["location"], timeout=10)
    calls = [
        lambda: client.get_feature_set("x"),
        lambda: client.get_online_features("x", ["u1"]),
        lambda: client.ingest("x", pa.table({"a": [1, 2]})),
        lambda: client.get_training_data(pa.table({"a": [1]}), ["s:f"]),
    ]
    for call in calls:
        with pytest.raises(cls) as info:
            call()
        assert str(info.value) == message
        assert info.value.code == code
        assert isinstance(info.value, featherstore.FeatherStoreError)
        assert info.value.__cause__ is not None


def test_unreachable_server() -> None:
    client = featherstore.Client("grpc://127.0.0.1:1", timeout=5)
    with pytest.raises(featherstore.FeatherStoreError):
        client.list_feature_sets()


def test_parse_keeps_message_only() -> None:
    code, message = _parse(
        "Flight returned invalid argument error, with message: bad. Really. gRPC client debug "
        "context: INVALID_ARGUMENT:bad. Really.. Client context: OK"
    )
    assert (code, message) == ("INVALID_ARGUMENT", "bad. Really")
    assert _parse("gRPC returned resource exhausted error, with message: 100001 > 100000") == (
        "RESOURCE_EXHAUSTED",
        "100001 > 100000",
    )
    assert _parse("something else") == (None, "something else")


def test_error_classes_are_also_builtin_kinds() -> None:
    assert issubclass(featherstore.NotFoundError, LookupError)
    assert issubclass(featherstore.InvalidArgumentError, ValueError)
    assert issubclass(featherstore.UnimplementedError, NotImplementedError)
    err = featherstore.NotFoundError("feature set 'x' not found")
    assert str(err) == "feature set 'x' not found" and err.code == "NOT_FOUND"


# -- conversions -----------------------------------------------------------------------------


def test_format_time() -> None:
    assert _arrow.format_time(dt.datetime(2026, 1, 1)) == "2026-01-01T00:00:00.000000Z"
    cet = dt.timezone(dt.timedelta(hours=1))
    assert _arrow.format_time(dt.datetime(2026, 1, 1, 1, 30, tzinfo=cet)) == (
        "2026-01-01T00:30:00.000000Z"
    )
    assert _arrow.format_time("2026-01-01T00:00:00+02:00") == "2026-01-01T00:00:00+02:00"
    assert _arrow.format_time(dt.date(2026, 3, 4)) == "2026-03-04"
    np = pytest.importorskip("numpy")
    assert _arrow.format_time(np.datetime64("2026-01-01T00:00:01.5")) == (
        "2026-01-01T00:00:01.500000Z"
    )
    with pytest.raises(TypeError):
        _arrow.format_time(12.5)


def test_entity_list() -> None:
    assert _arrow.entity_list(("a", "b")) == ["a", "b"]
    assert _arrow.entity_list(pa.array([1, 2])) == [1, 2]
    np = pytest.importorskip("numpy")
    assert _arrow.entity_list(np.array([3, 4], dtype=np.int32)) == [3, 4]
    with pytest.raises(TypeError):
        _arrow.entity_list("u1")


def test_record_batches_split_and_normalize() -> None:
    table = pa.table(
        {
            "k": pa.array(["a", "b", "c", "d", "e"]).dictionary_encode(),
            "v": pa.array([[1.0], [2.0], [3.0], [4.0], [5.0]], pa.large_list(pa.float32())),
            "b": pa.array([b"x"] * 5, pa.large_binary()),
        }
    )
    schema, batches = _arrow.record_batches(table, batch_rows=2)
    assert schema == pa.schema(
        [("k", pa.string()), ("v", pa.list_(pa.float32())), ("b", pa.binary())]
    )
    out: List[pa.RecordBatch] = list(batches)
    assert [b.num_rows for b in out] == [2, 2, 1]
    assert all(b.schema == schema for b in out)
    assert pa.Table.from_batches(out).column("k").to_pylist() == ["a", "b", "c", "d", "e"]


def test_record_batches_from_pandas_and_polars() -> None:
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"user_id": ["a", "b"], "x": [1, 2]}, index=[10, 20])
    schema, _ = _arrow.record_batches(df)
    assert schema.names == ["user_id", "x"]  # an unnamed index is not a column
    schema, _ = _arrow.record_batches(df.set_index("user_id"))
    assert schema.names == ["x", "user_id"]
    pl = pytest.importorskip("polars")
    schema, batches = _arrow.record_batches(
        pl.DataFrame({"user_id": ["a"], "e": [[1.0, 2.0]]}), batch_rows=10
    )
    assert pa.types.is_string(schema.field("user_id").type) or pa.types.is_large_string(
        schema.field("user_id").type
    )
    assert pa.types.is_list(schema.field("e").type)
    assert sum(b.num_rows for b in batches) == 1


def test_record_batches_rejects_unknown_input() -> None:
    with pytest.raises(TypeError):
        _arrow.record_batches(42)


def test_byte_limit_splits_batches() -> None:
    table = pa.table({"s": ["x" * 1000] * 64})
    _, batches = _arrow.record_batches(table, batch_rows=1000, batch_bytes=10_000)
    out = list(batches)
    assert sum(b.num_rows for b in out) == 64 and len(out) > 1


# -- wire format -----------------------------------------------------------------------------


class RecordingServer(flight.FlightServerBase):
    """Records what the client sends; answers like the protocol says."""

    def __init__(self) -> None:
        super().__init__("grpc://127.0.0.1:0")
        self.seen: List[Any] = []
        self.lock = threading.Lock()

    def do_action(self, context, action):  # noqa: ANN001
        self.seen.append((action.type, json.loads(action.body.to_pybytes())))
        return [json.dumps({"ok": action.type}).encode()]

    def do_get(self, context, ticket):  # noqa: ANN001
        self.seen.append(("ticket", json.loads(ticket.ticket)))
        return flight.RecordBatchStream(pa.table({"user_id": ["u1"]}))

    def get_schema(self, context, descriptor):  # noqa: ANN001
        # Ingest asks for the set's schema to conform its input (issue 12).
        self.seen.append(("schema", descriptor.path))
        return flight.SchemaResult(pa.schema([("k", pa.int32())]))

    def do_put(self, context, descriptor, reader, writer):  # noqa: ANN001
        for i, chunk in enumerate(reader):
            self.seen.append(("put", descriptor.path, chunk.data.num_rows))
            writer.write(json.dumps({"batch": i, "rows": chunk.data.num_rows}).encode())

    def do_exchange(self, context, descriptor, reader, writer):  # noqa: ANN001
        self.seen.append(("exchange", json.loads(descriptor.command)))
        schema = reader.schema.append(pa.field("f", pa.int64()))
        writer.begin(schema)
        for chunk in reader:
            b = chunk.data
            extra = pa.array(range(b.num_rows), pa.int64())
            writer.write_batch(pa.RecordBatch.from_arrays(b.columns + [extra], schema=schema))


@pytest.fixture
def recording() -> Iterator[RecordingServer]:
    server = RecordingServer()
    yield server
    server.shutdown()


def test_wire_format(recording: RecordingServer) -> None:
    client = featherstore.Client(f"127.0.0.1:{recording.port}")  # bare host:port is grpc://
    assert client.create_feature_set({"name": "s"}) == {"ok": "create_feature_set"}
    client.get_feature_set("s")
    client.delete_feature_set("s")
    client.get_online_features("s", ["u1", "u1"], features=["a"])
    client.get_history("s", start=dt.datetime(2026, 1, 1), end="2026-02-01T00:00:00Z")
    rows = client.ingest("s", pa.table({"k": list(range(10))}), batch_rows=4)
    assert rows == 10
    out = client.get_training_data(
        pa.table({"k": list(range(7))}), ["s:*"], timestamp="t", full_names=True, batch_rows=3
    )
    assert out.column("k").to_pylist() == list(range(7))
    assert out.column("f").to_pylist() == [0, 1, 2, 0, 1, 2, 0]
    assert recording.seen == [
        ("create_feature_set", {"name": "s"}),
        ("get_feature_set", {"name": "s"}),
        ("delete_feature_set", {"name": "s"}),
        (
            "ticket",
            {"type": "online", "feature_set": "s", "entities": ["u1", "u1"], "features": ["a"]},
        ),
        (
            "ticket",
            {
                "type": "history",
                "feature_set": "s",
                "start": "2026-01-01T00:00:00.000000Z",
                "end": "2026-02-01T00:00:00Z",
            },
        ),
        ("schema", [b"s"]),
        ("put", [b"s"], 4),
        ("put", [b"s"], 4),
        ("put", [b"s"], 2),
        (
            "exchange",
            {"type": "training_data", "features": ["s:*"], "timestamp": "t", "full_names": True},
        ),
    ]


def test_iter_training_data_can_stop_early(recording: RecordingServer) -> None:
    client = featherstore.Client(f"grpc://127.0.0.1:{recording.port}")
    stream = client.iter_training_data(pa.table({"k": list(range(100))}), ["s:f"], batch_rows=10)
    first = next(stream)
    assert first.num_rows == 10
    stream.close()  # cancels the exchange; the client stays usable
    assert client.get_training_data(pa.table({"k": [1]}), ["s:f"]).num_rows == 1


def test_client_pickles(recording: RecordingServer) -> None:
    import pickle

    client = featherstore.Client(
        f"grpc://127.0.0.1:{recording.port}", timeout=3, headers={"x": "y"}
    )
    copy = pickle.loads(pickle.dumps(client))
    assert copy.location == client.location and copy.headers == {"x": "y"}
    assert copy.get_online_features("s", ["u1"]).num_rows == 1
