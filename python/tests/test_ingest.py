"""Ingest over Flight DoPut from pyarrow, pandas and polars, against the real server."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

import featherstore
from conftest import EMB, TS, unique, user_rows, utc


def history_ages(client: featherstore.Client, name: str) -> list:
    table = client.get_history(name, features=["age"])
    return list(zip(table.column("user_id").to_pylist(), table.column("age").to_pylist()))


def test_ingest_pyarrow_table(client: featherstore.Client, user_set: str) -> None:
    table = user_rows(
        [
            {
                "user_id": "u1",
                "event_timestamp": utc(2026, 1, 1),
                "age": 30,
                "ctr_7d": 0.5,
                "country": "DE",
                "embedding": [1.0, 2.0, 3.0, 4.0],
            },
            {"user_id": "u2", "event_timestamp": utc(2026, 1, 2), "age": 40},
        ]
    )
    assert client.ingest(user_set, table) == 2
    online = client.get_online_features(user_set, ["u1", "u2"])
    assert online.column("age").to_pylist() == [30, 40]
    assert online.column("country").to_pylist() == ["DE", None]
    assert online.column("embedding").to_pylist() == [[1.0, 2.0, 3.0, 4.0], None]


def test_ingest_record_batch_and_subset_of_features(
    client: featherstore.Client, user_set: str
) -> None:
    batch = pa.record_batch(
        {
            "user_id": pa.array(["u1", "u2", "u3"]),
            "event_timestamp": pa.array([utc(2026, 1, 1)] * 3, TS),
            "age": pa.array([1, 2, 3], pa.int64()),
        }
    )
    assert client.ingest(user_set, batch) == 3
    online = client.get_online_features(user_set, ["u3"])
    assert online.column("age").to_pylist() == [3]
    assert online.column("ctr_7d").to_pylist() == [None]


def test_ingest_streams_many_batches(client: featherstore.Client, user_set: str) -> None:
    n = 2_500
    table = pa.table(
        {
            "user_id": pa.array([f"u{i % 100}" for i in range(n)]),
            "event_timestamp": pa.array(
                [utc(2026, 1, 1) + dt.timedelta(seconds=i) for i in range(n)], TS
            ),
            "age": pa.array(range(n), pa.int64()),
        }
    )
    assert client.ingest(user_set, table, batch_rows=300) == n  # 9 batches, acks read
    assert client.get_feature_set(user_set)["stats"]["rows"] == n
    online = client.get_online_features(user_set, ["u0", "u99"], features=["age"])
    assert online.column("age").to_pylist() == [2_400, 2_499]


def test_ingest_pandas(client: featherstore.Client, user_set: str) -> None:
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(
        {
            "user_id": ["p1", "p2"],
            # naive datetimes are UTC
            "event_timestamp": pd.to_datetime(["2026-01-01 10:00:00", "2026-01-02 11:30:00"]),
            "age": [25, 35],
            "ctr_7d": pd.array([0.25, None], dtype="Float32"),
            "country": ["FR", None],
        }
    )
    assert client.ingest(user_set, df) == 2
    online = client.get_online_features(user_set, ["p1", "p2"])
    assert online.column("age").to_pylist() == [25, 35]
    assert online.column("ctr_7d").to_pylist() == [0.25, None]
    assert online.column("event_timestamp").to_pylist() == [
        utc(2026, 1, 1, 10),
        utc(2026, 1, 2, 11, 30),
    ]
    # A named index is a column too.
    indexed = df.iloc[:1].assign(age=26, event_timestamp=pd.Timestamp("2026-02-01", tz="UTC"))
    assert client.ingest(user_set, indexed.set_index("user_id")) == 1
    assert client.get_online_features(user_set, ["p1"]).column("age").to_pylist() == [26]


def test_ingest_polars(client: featherstore.Client, user_set: str) -> None:
    pl = pytest.importorskip("polars")
    df = pl.DataFrame(
        {
            "user_id": ["q1", "q2", "q3"],
            "event_timestamp": [
                dt.datetime(2026, 1, 1),
                dt.datetime(2026, 1, 2),
                dt.datetime(2026, 1, 3),
            ],
            "age": [1, 2, None],
            "country": ["US", "US", "CA"],
            "embedding": [[0.0, 1.0, 2.0, 3.0], None, [4.0, 5.0, 6.0, 7.0]],
        },
        schema_overrides={"embedding": pl.Array(pl.Float32, 4)},
    )
    assert client.ingest(user_set, df) == 3
    online = client.get_online_features(user_set, ["q1", "q2", "q3"])
    assert online.column("age").to_pylist() == [1, 2, None]
    assert online.column("country").to_pylist() == ["US", "US", "CA"]
    assert online.column("embedding").to_pylist() == [
        [0.0, 1.0, 2.0, 3.0],
        None,
        [4.0, 5.0, 6.0, 7.0],
    ]
    assert online.column("event_timestamp").to_pylist()[2] == utc(2026, 1, 3)


def test_ingest_lossless_widening(client: featherstore.Client, user_set: str) -> None:
    table = pa.table(
        {
            "user_id": pa.array(["w1"], pa.large_string()),
            "event_timestamp": pa.array([1_767_225_600_000], pa.timestamp("ms")),  # naive: UTC
            "age": pa.array([7], pa.int8()),
            "embedding": pa.array([[1.0, 2.0, 3.0, 4.0]], pa.list_(pa.float32())),
        }
    )
    assert client.ingest(user_set, table) == 1
    online = client.get_online_features(user_set, ["w1"])
    assert online.column("age").to_pylist() == [7]
    assert online.column("event_timestamp").to_pylist() == [utc(2026, 1, 1)]


def test_bad_batch_names_the_column(client: featherstore.Client, user_set: str) -> None:
    table = pa.table(
        {
            "user_id": ["u1"],
            "event_timestamp": pa.array([utc(2026, 1, 1)], TS),
            "age": ["thirty"],  # utf8 for an int64 feature
        }
    )
    with pytest.raises(featherstore.InvalidArgumentError) as info:
        client.ingest(user_set, table)
    message = str(info.value)
    assert "age" in message
    assert info.value.code == "INVALID_ARGUMENT"
    assert "gRPC" not in message and "Client context" not in message
    assert client.get_feature_set(user_set)["stats"]["rows"] == 0


def test_undeclared_column_is_rejected(client: featherstore.Client, user_set: str) -> None:
    table = pa.table(
        {
            "user_id": ["u1"],
            "event_timestamp": pa.array([utc(2026, 1, 1)], TS),
            "shoe_size": [44],
        }
    )
    with pytest.raises(featherstore.InvalidArgumentError, match="shoe_size"):
        client.ingest(user_set, table)


def test_rejected_batch_keeps_earlier_batches(client: featherstore.Client, user_set: str) -> None:
    good = pa.record_batch(
        {
            "user_id": pa.array(["g1", "g2"]),
            "event_timestamp": pa.array([utc(2026, 1, 1)] * 2, TS),
            "age": pa.array([1, 2], pa.int64()),
        }
    )
    bad = pa.record_batch(
        {
            "user_id": pa.array(["g3", None]),  # a null entity: the whole batch is rejected
            "event_timestamp": pa.array([utc(2026, 1, 1)] * 2, TS),
            "age": pa.array([3, 4], pa.int64()),
        }
    )
    reader = pa.RecordBatchReader.from_batches(good.schema, [good, bad])
    with pytest.raises(featherstore.InvalidArgumentError, match="user_id") as info:
        client.ingest(user_set, reader, max_in_flight=1)
    assert info.value.rows_acknowledged == 2
    assert sorted(history_ages(client, user_set)) == [("g1", 1), ("g2", 2)]


def test_ingest_unknown_set(client: featherstore.Client) -> None:
    with pytest.raises(featherstore.NotFoundError):
        client.ingest(
            unique("nope"),
            pa.table({"user_id": ["u1"], "event_timestamp": pa.array([utc(2026, 1, 1)], TS)}),
        )


def test_ingest_int64_entities(client: featherstore.Client) -> None:
    name = unique("merchants")
    client.create_feature_set(
        {
            "name": name,
            "entity": {"name": "merchant_id", "type": "int64"},
            "features": [
                {"name": "risk", "type": "float64"},
                {"name": "vec", "type": "float64[2]"},
            ],
        }
    )
    try:
        table = pa.table(
            {
                "merchant_id": pa.array([7, 8], pa.int32()),
                "event_timestamp": pa.array([utc(2026, 1, 1)] * 2, TS),
                "risk": pa.array([0.5, 0.75], pa.float32()),
                "vec": pa.array([[1.0, 2.0], [3.0, 4.0]], pa.list_(pa.float64(), 2)),
            }
        )
        assert client.ingest(name, table) == 2
        online = client.get_online_features(name, [8, 7, 9])
        assert online.column("merchant_id").to_pylist() == [8, 7, 9]
        assert online.column("risk").to_pylist() == [0.75, 0.5, None]
        assert online.column("vec").to_pylist() == [[3.0, 4.0], [1.0, 2.0], None]
    finally:
        client.delete_feature_set(name)


def test_embedding_type_is_fixed_size(client: featherstore.Client, user_set: str) -> None:
    table = pa.table(
        {
            "user_id": ["e1"],
            "event_timestamp": pa.array([utc(2026, 1, 1)], TS),
            "embedding": pa.array([[1.0, 2.0, 3.0]], pa.list_(pa.float32())),  # 3, not 4
        }
    )
    with pytest.raises(featherstore.InvalidArgumentError, match="embedding"):
        client.ingest(user_set, table)
    assert EMB.list_size == 4


def test_ingest_nothing(client: featherstore.Client, user_set: str) -> None:
    empty = user_rows([]).slice(0, 0)
    assert client.ingest(user_set, empty) == 0
    assert client.get_feature_set(user_set)["stats"]["rows"] == 0
