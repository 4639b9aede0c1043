"""Ingest times (an extension of PROTOCOL.md) against the real server: history with
``ingested_at`` and ``ingested_before``, and training data ``as_of="ingest_time"``, where a
value that arrived after the row's time is not joined."""

from __future__ import annotations

import time

import pyarrow as pa
import pytest

import featherstore
from conftest import TS, skip_if_no_training_data, user_rows, utc


def test_history_ingest_times_and_a_late_row_as_of_ingest_time(
    client: featherstore.Client, user_set: str
) -> None:
    skip_if_no_training_data(client)
    client.ingest(
        user_set, user_rows([{"user_id": "u1", "event_timestamp": utc(2026, 1, 1), "age": 30}])
    )
    time.sleep(0.01)
    # Arrives later, with an event time before the training row's.
    client.ingest(
        user_set, user_rows([{"user_id": "u1", "event_timestamp": utc(2026, 1, 2), "age": 31}])
    )
    history = client.get_history(user_set, with_ingest_time=True)
    assert history.column_names[-1] == "ingested_at"
    assert history.schema.field("ingested_at").type == TS
    first, late = history.column("ingested_at").to_pylist()
    assert first < late

    known = client.get_history(user_set, ingested_before=late)
    assert known.column("age").to_pylist() == [30]
    assert "ingested_at" not in known.column_names

    rows = pa.table({"user_id": ["u1"], "event_timestamp": pa.array([first], TS)})
    features = [f"{user_set}:age"]
    assert client.get_training_data(rows, features).column("age").to_pylist() == [31]
    as_known = client.get_training_data(rows, features, as_of="ingest_time")
    assert as_known.column("age").to_pylist() == [30]
    batches = list(client.iter_training_data(rows, features, as_of="ingest_time"))
    assert [b.column(b.num_columns - 1).to_pylist() for b in batches] == [[30]]
    explicit = client.get_training_data(rows, features, as_of="event_time")
    assert explicit.column("age").to_pylist() == [31]

    with pytest.raises(featherstore.InvalidArgumentError, match="ingest_time"):
        client.get_training_data(rows, features, as_of="processing_time")
