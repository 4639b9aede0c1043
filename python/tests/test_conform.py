"""The client conforms input to the declared types before sending (issue 12), against the real
server: every cast that keeps each value is made, a value that does not fit is an error naming
the column, the row and the value, and nothing of that input is stored. Reads return a
FeatureTable with to_pandas() and to_polars()."""

from __future__ import annotations

import datetime as dt
import pydoc
from typing import Any, Dict, Iterator

import pyarrow as pa
import pytest

import featherstore
from conftest import unique, utc

pd = pytest.importorskip("pandas")
np = pytest.importorskip("numpy")


def typed_spec(name: str) -> Dict[str, Any]:
    return {
        "name": name,
        "entity": {"name": "id", "type": "int64"},
        "features": [
            {"name": "i32", "type": "int32"},
            {"name": "i64", "type": "int64"},
            {"name": "f32", "type": "float32"},
            {"name": "f64", "type": "float64"},
            {"name": "flag", "type": "bool"},
            {"name": "label", "type": "string"},
            {"name": "day", "type": "date"},
            {"name": "seen", "type": "timestamp"},
            {"name": "emb", "type": "float32[2]"},
        ],
    }


@pytest.fixture
def typed_set(client: featherstore.Client) -> Iterator[str]:
    name = unique("conform")
    client.create_feature_set(typed_spec(name))
    yield name
    client.delete_feature_set(name)


def rows_of(client: featherstore.Client, name: str) -> list:
    return client.get_history(name).to_pylist()


def test_pandas_defaults_are_conformed(client: featherstore.Client, typed_set: str) -> None:
    df = pd.DataFrame(
        {
            "id": [1, 2],  # int64
            "event_timestamp": pd.to_datetime(["2026-01-01T00:00:00", "2026-01-01T06:00:00"]),
            "i32": [7, -(2**31)],  # int64 into int32, within range
            "i64": [1.0, float("nan")],  # float64 with NaN (pandas' int column with a gap)
            "f32": [0.12, 1e30],  # float64 into float32, nearest value
            "f64": [1, 2**53 + 1],  # int64 into float64, nearest value
            "flag": [True, False],
            "label": pd.Categorical(["a", "b"]),  # dictionary
            "day": pd.to_datetime(["2026-01-02", "2026-01-03"]),  # midnights into date
            "seen": [dt.date(2026, 1, 4), dt.date(2026, 1, 5)],  # dates into timestamps
            "emb": [np.array([0.5, 1.5]), np.array([2.5, 3.5])],  # float64 arrays
        }
    )
    assert client.ingest(typed_set, df) == 2
    got = rows_of(client, typed_set)
    assert [r["i32"] for r in got] == [7, -(2**31)]
    assert [r["i64"] for r in got] == [1, None]
    assert [r["f32"] for r in got] == [
        float(np.float32(0.12)),
        float(np.float32(1e30)),
    ]
    assert [r["f64"] for r in got] == [1.0, float(2**53)]
    assert [r["label"] for r in got] == ["a", "b"]
    assert [r["day"] for r in got] == [dt.date(2026, 1, 2), dt.date(2026, 1, 3)]
    assert [r["seen"] for r in got] == [utc(2026, 1, 4), utc(2026, 1, 5)]
    assert [r["emb"] for r in got] == [[0.5, 1.5], [2.5, 3.5]]
    # A naive datetime is UTC.
    assert [r["event_timestamp"] for r in got] == [utc(2026, 1, 1), utc(2026, 1, 1, 6)]


def test_pandas_nullable_dtypes_and_time_zones(
    client: featherstore.Client, typed_set: str
) -> None:
    df = pd.DataFrame(
        {
            "id": pd.array([1, 2], dtype="Int64"),
            "event_timestamp": pd.to_datetime(["2026-01-01T09:00", "2026-01-01T10:00"])
            .tz_localize("Europe/Berlin"),
            "i32": pd.array([5, None], dtype="Int64"),
            "f32": pd.array([0.25, None], dtype="Float32"),
            "f64": pd.array([0.5, None], dtype="Float64"),
            "flag": pd.array([True, None], dtype="boolean"),
            "label": pd.array(["x", None], dtype="string"),
        }
    )
    assert client.ingest(typed_set, df) == 2
    got = rows_of(client, typed_set)
    assert [r["i32"] for r in got] == [5, None]
    assert [r["f32"] for r in got] == [0.25, None]
    assert [r["f64"] for r in got] == [0.5, None]
    assert [r["flag"] for r in got] == [True, None]
    assert [r["label"] for r in got] == ["x", None]
    # 09:00 in Berlin (winter, UTC+1) is 08:00 UTC: the same instant.
    assert [r["event_timestamp"] for r in got] == [utc(2026, 1, 1, 8), utc(2026, 1, 1, 9)]


def test_polars_and_pyarrow_inputs(client: featherstore.Client, typed_set: str) -> None:
    pl = pytest.importorskip("polars")
    frame = pl.DataFrame(
        {
            "id": [1],
            "event_timestamp": [dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)],
            "i32": [3],
            "f32": [0.12],
            "label": ["p"],
            "emb": [[1.0, 2.0]],
        }
    )
    assert client.ingest(typed_set, frame) == 1
    table = pa.table(
        {
            "id": pa.array([2], pa.uint32()),
            "event_timestamp": pa.array([0], pa.timestamp("s")),
            "i32": pa.array([4], pa.uint64()),
            "i64": pa.array([5], pa.uint64()),
            "f32": pa.array([1], pa.int64()),
            "label": pa.array(["q"], pa.large_string()),
            "emb": pa.array([[1, 2]], pa.large_list(pa.int64())),
        }
    )
    assert client.ingest(typed_set, table) == 1
    got = {r["id"]: r for r in rows_of(client, typed_set)}
    assert got[1]["i32"] == 3 and got[1]["f32"] == float(np.float32(0.12))
    assert got[1]["emb"] == [1.0, 2.0]
    assert (got[2]["i32"], got[2]["i64"], got[2]["f32"]) == (4, 5, 1.0)
    assert got[2]["emb"] == [1.0, 2.0] and got[2]["label"] == "q"


@pytest.mark.parametrize(
    "column, values, row, shown, reason",
    [
        ("i32", [1, 2**31], 1, "2147483648", "does not fit int32: out of its range"),
        ("i64", [1.0, 2.5], 1, "2.5", "does not fit int64: not a whole number"),
        ("i64", [float("inf"), 1.0], 0, "inf", "not a whole number"),
        ("f32", [0.0, -1e39], 1, "-1e+39", "does not fit float32: beyond float32's largest"),
        ("day", [pd.Timestamp("2026-01-01 12:00"), None], 0, "2026-01-01 12:00:00", "not midnight"),
        ("emb", [[1.0, 2.0], [3.0, 4e39]], 1, "4e+39", "does not fit float32[2]"),
        ("id", [1, 2**63], 1, "9223372036854775808", "does not fit int64"),
    ],
)
def test_values_that_do_not_fit_are_refused(
    client: featherstore.Client,
    typed_set: str,
    column: str,
    values: list,
    row: int,
    shown: str,
    reason: str,
) -> None:
    df = pd.DataFrame({"id": [1, 2], "event_timestamp": [utc(2026, 1, 1)] * 2})
    df[column] = pd.Series(values, dtype="uint64") if column == "id" else values
    # One row per batch: the row counts over the whole input.
    with pytest.raises(featherstore.InvalidArgumentError) as info:
        client.ingest(typed_set, df, batch_rows=1)
    message = str(info.value)
    assert f"column '{column}' row {row} holds {shown}" in message, message
    assert reason in message, message
    assert info.value.rows_acknowledged == 0
    assert client.get_feature_set(typed_set)["stats"]["rows"] == 0, "nothing was sent"


def test_reads_return_pyarrow_with_pandas_and_polars_one_call_away(
    client: featherstore.Client, typed_set: str
) -> None:
    pl = pytest.importorskip("polars")
    client.ingest(
        typed_set,
        {"id": [1], "event_timestamp": [utc(2026, 1, 1)], "f32": [0.12], "label": ["a"]},
    )
    entity_rows = pa.table({"id": [1], "event_timestamp": pa.array([utc(2026, 2, 1)])})
    reads = {
        "online": client.get_online_features(typed_set, [1], features=["f32", "label"]),
        "history": client.get_history(typed_set, features=["f32", "label"]),
        "training": client.get_training_data(
            entity_rows, [f"{typed_set}:f32", f"{typed_set}:label"]
        ),
    }
    for what, result in reads.items():
        assert isinstance(result, featherstore.FeatureTable), what
        assert isinstance(result.to_arrow(), pa.Table), what
        assert result.num_rows == 1 and result.column("label").to_pylist() == ["a"], what
        frame = result.to_pandas()
        assert isinstance(frame, pd.DataFrame) and frame["label"].tolist() == ["a"], what
        polars_frame = result.to_polars()
        assert isinstance(polars_frame, pl.DataFrame), what
        assert polars_frame["label"].to_list() == ["a"], what
        assert pa.table(result).equals(result.to_arrow()), what  # Arrow PyCapsule stream
        assert result == result.to_arrow()


def test_help_tells_how_to_ingest_and_read() -> None:
    text = pydoc.render_doc(featherstore.Client, renderer=pydoc.plaintext)
    for needed in [
        "create_feature_set",
        "ingest",
        "get_online_features",
        "get_history",
        "get_training_data",
        "to_pandas()",
        "to_polars()",
        "conformed",
    ]:
        assert needed in text, needed
    public = [n for n in dir(featherstore.Client) if not n.startswith("_")]
    for name in public:
        member = getattr(featherstore.Client, name)
        if callable(member):
            assert member.__doc__, f"Client.{name} has no docstring"
            assert "return" in getattr(member, "__annotations__", {}), f"Client.{name}"


def test_http_json_renders_float32_by_its_shortest_digits(
    server: Any, client: featherstore.Client, typed_set: str
) -> None:
    import json
    import urllib.request

    client.ingest(
        typed_set,
        {
            "id": [1],
            "event_timestamp": [utc(2026, 1, 1)],
            "f32": [0.12],
            "f64": [0.12],
            "emb": [[0.1, 0.7]],
        },
    )

    def post(route: str, body: Dict[str, Any]) -> str:
        request = urllib.request.Request(
            f"{server.http}{route}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read().decode()

    for route in ["/v1/online", "/v1/history"]:
        body: Dict[str, Any] = {"feature_set": typed_set, "features": ["f32", "f64", "emb"]}
        if route == "/v1/online":
            body["entities"] = [1]
        text = post(route, body)
        assert '"f32":0.12,' in text, text  # not 0.11999999731779099
        assert '"f64":0.12,' in text, text
        assert '"emb":[0.1,0.7]' in text, text
        row = json.loads(text)["rows"][0]
        assert np.float32(row["f32"]) == np.float32(0.12)


def test_write_only_token_ingests_without_conforming(tmp_path: Any) -> None:
    """Conforming reads the set's schema, which a write-only token may not: ingest still works
    for data already in the declared types, and the server's own check answers otherwise."""
    from conftest import ServerProcess, server_binary

    admin, writer = "conform-admin-0123456789ab", "conform-writer-0123456789a"
    config = tmp_path / "auth.yaml"
    config.write_text(
        "auth:\n  tokens:\n"
        f'    - {{name: admin, token: "{admin}", scopes: [read, write, admin]}}\n'
        f'    - {{name: writer, token: "{writer}", scopes: [write]}}\n'
    )
    server = ServerProcess(server_binary(), "duckdb", extra_args=["--config", str(config)])
    try:
        name = unique("conform_auth")
        with featherstore.Client(server.flight, token=admin) as c:
            c.create_feature_set(typed_spec(name))
        with featherstore.Client(server.flight, token=writer) as c:
            exact = {"id": [1], "event_timestamp": [utc(2026, 1, 1)], "f64": [0.5]}
            assert c.ingest(name, exact) == 1
            with pytest.raises(featherstore.InvalidArgumentError, match="f32"):
                c.ingest(name, {"id": [2], "event_timestamp": [utc(2026, 1, 1)], "f32": [0.5]})
    finally:
        server.cleanup()
