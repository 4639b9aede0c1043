"""Online values and history (Flight DoGet) against the real server."""

from __future__ import annotations

import datetime as dt

import pytest

import featherstore
from conftest import unique, user_rows, user_spec, utc


@pytest.fixture
def filled_set(client: featherstore.Client, user_set: str) -> str:
    client.ingest(
        user_set,
        user_rows(
            [
                {"user_id": "u1", "event_timestamp": utc(2026, 1, 1), "age": 30, "ctr_7d": 0.1},
                {"user_id": "u1", "event_timestamp": utc(2026, 1, 3), "age": 32, "ctr_7d": 0.3},
                {"user_id": "u1", "event_timestamp": utc(2026, 1, 2), "age": 31, "ctr_7d": 0.2},
                {"user_id": "u2", "event_timestamp": utc(2026, 1, 5), "age": 50, "country": "SE"},
                {"user_id": "a0", "event_timestamp": utc(2026, 1, 4), "age": 99},
            ]
        ),
    )
    return user_set


def test_online_keeps_order_and_duplicates(client: featherstore.Client, filled_set: str) -> None:
    table = client.get_online_features(filled_set, ["u2", "u1", "u2", "ghost", "a0"])
    assert table.column_names == [
        "user_id",
        "age",
        "ctr_7d",
        "country",
        "embedding",
        "event_timestamp",
    ]
    assert table.column("user_id").to_pylist() == ["u2", "u1", "u2", "ghost", "a0"]
    assert table.column("age").to_pylist() == [50, 32, 50, None, 99]
    assert table.column("country").to_pylist() == ["SE", None, "SE", None, None]
    ts = table.column("event_timestamp").to_pylist()
    assert ts[1] == utc(2026, 1, 3) and ts[3] is None


def test_online_feature_subset_in_asked_order(client: featherstore.Client, filled_set: str) -> None:
    table = client.get_online_features(filled_set, ("u1",), features=["ctr_7d", "age"])
    assert table.column_names == ["user_id", "ctr_7d", "age", "event_timestamp"]
    assert table.column("age").to_pylist() == [32]
    assert table.column("ctr_7d").to_pylist() == [pytest.approx(0.3)]


def test_online_unknown_feature(client: featherstore.Client, filled_set: str) -> None:
    with pytest.raises(featherstore.NotFoundError, match="height"):
        client.get_online_features(filled_set, ["u1"], features=["height"])


def test_online_tie_goes_to_last_ingested(client: featherstore.Client, user_set: str) -> None:
    row = {"user_id": "t", "event_timestamp": utc(2026, 1, 1)}
    client.ingest(user_set, user_rows([dict(row, age=1)]))
    client.ingest(user_set, user_rows([dict(row, age=2)]))
    assert client.get_online_features(user_set, ["t"]).column("age").to_pylist() == [2]


def test_online_ttl(client: featherstore.Client) -> None:
    name = unique("ttl")
    client.create_feature_set(user_spec(name, ttl_seconds=3600))
    try:
        now = dt.datetime.now(dt.timezone.utc)
        client.ingest(
            name,
            user_rows(
                [
                    {
                        "user_id": "fresh",
                        "event_timestamp": now - dt.timedelta(minutes=5),
                        "age": 1,
                    },
                    {"user_id": "stale", "event_timestamp": now - dt.timedelta(hours=3), "age": 2},
                ]
            ),
        )
        table = client.get_online_features(name, ["fresh", "stale"])
        assert table.column("age").to_pylist() == [1, None]
        assert table.column("event_timestamp").to_pylist()[1] is None
    finally:
        client.delete_feature_set(name)


def test_online_wrong_entity_type(client: featherstore.Client, filled_set: str) -> None:
    with pytest.raises(featherstore.InvalidArgumentError):
        client.get_online_features(filled_set, [1, 2])


def test_history_all(client: featherstore.Client, filled_set: str) -> None:
    table = client.get_history(filled_set)
    assert table.column_names[0] == "user_id" and table.column_names[-1] == "event_timestamp"
    # ordered by entity (byte order), then event time
    assert table.column("user_id").to_pylist() == ["a0", "u1", "u1", "u1", "u2"]
    assert table.column("age").to_pylist() == [99, 30, 31, 32, 50]


def test_history_range_is_half_open(client: featherstore.Client, filled_set: str) -> None:
    table = client.get_history(
        filled_set, entities=["u1"], start=utc(2026, 1, 2), end=utc(2026, 1, 3)
    )
    assert table.column("age").to_pylist() == [31]
    # RFC 3339 strings, and naive datetimes taken as UTC
    table = client.get_history(
        filled_set, start="2026-01-02T00:00:00Z", end=dt.datetime(2026, 1, 5)
    )
    assert list(zip(table.column("user_id").to_pylist(), table.column("age").to_pylist())) == [
        ("a0", 99),
        ("u1", 31),
        ("u1", 32),
    ]
    # another time zone is the same instant: 2026-01-03T01:00+01:00 == 2026-01-03T00:00Z
    cet = dt.timezone(dt.timedelta(hours=1))
    table = client.get_history(
        filled_set, entities=["u1"], end=dt.datetime(2026, 1, 3, 1, tzinfo=cet)
    )
    assert table.column("age").to_pylist() == [30, 31]
    # open start, features subset, several entities
    table = client.get_history(
        filled_set, entities=["u2", "u1"], end="2026-01-02T00:00:01Z", features=["age"]
    )
    assert table.column_names == ["user_id", "age", "event_timestamp"]
    assert table.column("age").to_pylist() == [30, 31]


def test_history_empty_range(client: featherstore.Client, filled_set: str) -> None:
    table = client.get_history(filled_set, start="2030-01-01T00:00:00Z")
    assert table.num_rows == 0
    assert table.column_names[0] == "user_id"


def test_history_bad_timestamp(client: featherstore.Client, filled_set: str) -> None:
    with pytest.raises(featherstore.InvalidArgumentError):
        client.get_history(filled_set, start="last tuesday")


def test_online_over_entity_limit(client: featherstore.Client, filled_set: str) -> None:
    # the default limit is 100,000 entities per online request
    with pytest.raises(featherstore.ResourceExhaustedError) as info:
        client.get_online_features(filled_set, [f"e{i}" for i in range(100_001)])
    assert info.value.code == "RESOURCE_EXHAUSTED"
    assert "100000" in str(info.value).replace(",", "").replace("_", "")
