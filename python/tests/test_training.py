"""Point-in-time training data (Flight DoExchange ``training_data``) against the real server."""

from __future__ import annotations

import pyarrow as pa
import pytest

import featherstore
from conftest import TS, skip_if_no_training_data, unique, user_rows, utc


@pytest.fixture
def sets(client: featherstore.Client, user_set: str):
    """The user set with a history, plus a merchant set keyed by int64."""
    skip_if_no_training_data(client)
    client.ingest(
        user_set,
        user_rows(
            [
                {"user_id": "u1", "event_timestamp": utc(2026, 1, 1), "age": 30, "ctr_7d": 0.1},
                {"user_id": "u1", "event_timestamp": utc(2026, 1, 10), "age": 31, "ctr_7d": 0.2},
                {"user_id": "u2", "event_timestamp": utc(2026, 1, 5), "age": 50, "country": "SE"},
            ]
        ),
    )
    merchants = unique("merchants")
    client.create_feature_set(
        {
            "name": merchants,
            "entity": {"name": "merchant_id", "type": "int64"},
            "features": [
                {"name": "risk", "type": "float64"},
                {"name": "age", "type": "int32"},
            ],
        }
    )
    client.ingest(
        merchants,
        pa.table(
            {
                "merchant_id": pa.array([7, 7], pa.int64()),
                "event_timestamp": pa.array([utc(2026, 1, 2), utc(2026, 1, 8)], TS),
                "risk": [0.1, 0.9],
                "age": pa.array([1, 2], pa.int32()),
            }
        ),
    )
    yield user_set, merchants
    client.delete_feature_set(merchants)


def entity_rows() -> pa.Table:
    return pa.table(
        {
            "user_id": ["u1", "u1", "u1", "u2", "u2", "ghost"],
            "merchant_id": pa.array([7, 7, 7, 7, 8, 7], pa.int64()),
            "event_timestamp": pa.array(
                [
                    utc(2025, 12, 31),  # before any row of u1
                    utc(2026, 1, 1),  # exactly the first row's time: included
                    utc(2026, 1, 9, 23, 59),  # one minute before the second row
                    utc(2026, 2, 1),
                    utc(2026, 1, 5),
                    utc(2026, 3, 1),
                ],
                TS,
            ),
            "label": [0, 1, 0, 1, 1, 0],
        }
    )


def test_point_in_time_join(client: featherstore.Client, sets) -> None:
    users, merchants = sets
    table = client.get_training_data(
        entity_rows(), [f"{users}:age", f"{users}:ctr_7d", f"{merchants}:risk"]
    )
    assert table.column_names == [
        "user_id",
        "merchant_id",
        "event_timestamp",
        "label",
        "age",
        "ctr_7d",
        "risk",
    ]
    # rows pass through unchanged, in order
    assert table.column("user_id").to_pylist() == ["u1", "u1", "u1", "u2", "u2", "ghost"]
    assert table.column("label").to_pylist() == [0, 1, 0, 1, 1, 0]
    # never a value from after the row's time
    assert table.column("age").to_pylist() == [None, 30, 30, 50, 50, None]
    ctr = table.column("ctr_7d").to_pylist()
    assert ctr[0] is None and ctr[3:] == [None, None, None]
    assert ctr[1:3] == [pytest.approx(0.1), pytest.approx(0.1)]
    assert table.column("risk").to_pylist() == [None, None, 0.9, 0.9, None, 0.9]


def test_full_names_and_star(client: featherstore.Client, sets) -> None:
    users, merchants = sets
    table = client.get_training_data(
        entity_rows(), [f"{users}:*", f"{merchants}:*"], full_names=True
    )
    added = table.column_names[4:]
    assert added == [
        f"{users}__age",
        f"{users}__ctr_7d",
        f"{users}__country",
        f"{users}__embedding",
        f"{merchants}__risk",
        f"{merchants}__age",
    ]
    assert table.column(f"{merchants}__age").to_pylist() == [None, None, 2, 2, None, 2]
    assert table.column(f"{users}__country").to_pylist()[3] == "SE"


def test_name_clash_without_full_names(client: featherstore.Client, sets) -> None:
    users, merchants = sets
    with pytest.raises(featherstore.InvalidArgumentError, match="age"):
        client.get_training_data(entity_rows(), [f"{users}:age", f"{merchants}:age"])


def test_iter_training_data_streams_batches(client: featherstore.Client, sets) -> None:
    users, _ = sets
    n = 5_000
    rows = pa.table(
        {
            "user_id": pa.array(["u1", "u2"] * (n // 2)),
            "event_timestamp": pa.array([utc(2026, 1, 6)] * n, TS),
            "row": pa.array(range(n), pa.int64()),
        }
    )
    batches = list(client.iter_training_data(rows, [f"{users}:age"], batch_rows=1_000))
    assert all(isinstance(b, pa.RecordBatch) for b in batches)
    table = pa.Table.from_batches(batches)
    assert table.num_rows == n
    assert table.column("row").to_pylist() == list(range(n))
    assert table.column("age").to_pylist()[:4] == [30, 50, 30, 50]


def test_custom_timestamp_column_and_pandas(client: featherstore.Client, sets) -> None:
    pd = pytest.importorskip("pandas")
    users, _ = sets
    df = pd.DataFrame(
        {
            "user_id": ["u1", "u1"],
            "as_of": pd.to_datetime(["2026-01-02", "2026-01-11"]),  # naive: UTC
            "y": [0.5, 1.5],
        }
    )
    table = client.get_training_data(df, [f"{users}:age"], timestamp="as_of")
    assert table.column("age").to_pylist() == [30, 31]
    assert table.column("y").to_pylist() == [0.5, 1.5]


def test_training_data_errors(client: featherstore.Client, sets) -> None:
    users, _ = sets
    with pytest.raises(featherstore.NotFoundError):
        client.get_training_data(entity_rows(), [f"{unique('nope')}:age"])
    with pytest.raises(featherstore.NotFoundError, match="height"):
        client.get_training_data(entity_rows(), [f"{users}:height"])
    no_time = entity_rows().drop_columns(["event_timestamp"])
    with pytest.raises(featherstore.InvalidArgumentError, match="event_timestamp"):
        client.get_training_data(no_time, [f"{users}:age"])


def test_empty_entity_rows(client: featherstore.Client, sets) -> None:
    users, _ = sets
    table = client.get_training_data(entity_rows().slice(0, 0), [f"{users}:age"])
    assert table.num_rows == 0
    assert table.column_names[-1] == "age"
