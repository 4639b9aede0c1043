"""Feature set management against the real server: create, list, get, delete, errors."""

from __future__ import annotations

import pytest

import featherstore
from conftest import unique, user_rows, user_spec, utc


def test_create_returns_stored_spec(client: featherstore.Client) -> None:
    name = unique("create")
    stored = client.create_feature_set(user_spec(name, ttl_seconds=86400))
    try:
        assert stored["name"] == name
        assert stored["version"] == 1
        assert stored["created_at"]
        assert stored["entity"] == {"name": "user_id", "type": "string"}
        assert [f["name"] for f in stored["features"]] == ["age", "ctr_7d", "country", "embedding"]
        assert stored["ttl_seconds"] == 86400
        assert stored["tags"] == {"team": "growth"}
    finally:
        client.delete_feature_set(name)


def test_same_spec_again_is_a_no_op(client: featherstore.Client, user_set: str) -> None:
    again = client.create_feature_set(user_spec(user_set))
    assert again["version"] == 1


def test_different_spec_under_existing_name(client: featherstore.Client, user_set: str) -> None:
    changed = user_spec(user_set)
    changed["features"] = changed["features"][:1]
    with pytest.raises(featherstore.AlreadyExistsError) as info:
        client.create_feature_set(changed)
    assert info.value.code == "ALREADY_EXISTS"
    assert user_set in str(info.value)


def test_list_and_get(client: featherstore.Client, user_set: str) -> None:
    names = [spec["name"] for spec in client.list_feature_sets()]
    assert user_set in names
    client.ingest(
        user_set,
        user_rows(
            [
                {"user_id": "u1", "event_timestamp": utc(2026, 1, 1), "age": 30},
                {"user_id": "u1", "event_timestamp": utc(2026, 1, 2), "age": 31},
                {"user_id": "u2", "event_timestamp": utc(2026, 1, 3), "age": 40},
            ]
        ),
    )
    got = client.get_feature_set(user_set)
    assert got["name"] == user_set
    assert got["stats"]["rows"] == 3
    assert got["stats"]["entities"] == 2
    assert got["stats"]["latest_event_timestamp"].startswith("2026-01-03T00:00:00")


def test_get_schema(client: featherstore.Client, user_set: str) -> None:
    schema = client.get_schema(user_set)
    # the protocol leaves the column order open; the server uses the retrieval order
    assert sorted(schema.names) == sorted(
        ["user_id", "event_timestamp", "age", "ctr_7d", "country", "embedding"]
    )
    assert schema.names[0] == "user_id"
    assert str(schema.field("embedding").type).startswith("fixed_size_list")


def test_delete(client: featherstore.Client) -> None:
    name = unique("delete")
    client.create_feature_set(user_spec(name))
    client.ingest(name, user_rows([{"user_id": "u1", "event_timestamp": utc(2026, 1, 1)}]))
    client.delete_feature_set(name)
    assert name not in [spec["name"] for spec in client.list_feature_sets()]
    with pytest.raises(featherstore.NotFoundError):
        client.get_feature_set(name)
    # The name can be used again, and the old data is gone.
    client.create_feature_set(user_spec(name))
    assert client.get_history(name).num_rows == 0
    client.delete_feature_set(name)


def test_unknown_set(client: featherstore.Client) -> None:
    name = unique("missing")
    with pytest.raises(featherstore.NotFoundError) as info:
        client.get_feature_set(name)
    assert name in str(info.value)
    assert info.value.code == "NOT_FOUND"
    assert isinstance(info.value, featherstore.FeatherStoreError)
    with pytest.raises(featherstore.NotFoundError):
        client.delete_feature_set(name)
    with pytest.raises(featherstore.NotFoundError):
        client.get_online_features(name, ["u1"])
    with pytest.raises(featherstore.NotFoundError):
        client.get_history(name)


def test_invalid_spec(client: featherstore.Client) -> None:
    bad = user_spec("not a valid name!")
    with pytest.raises(featherstore.InvalidArgumentError):
        client.create_feature_set(bad)
    bad = user_spec(unique("badtype"))
    bad["features"][0]["type"] = "uint128"
    with pytest.raises(featherstore.InvalidArgumentError) as info:
        client.create_feature_set(bad)
    assert "uint128" in str(info.value)
