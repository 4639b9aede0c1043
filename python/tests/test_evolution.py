"""Feature set evolution against the real server (both backends): update in place, versions,
old rows under the new schema, refused changes."""

from __future__ import annotations

import pyarrow as pa
import pytest

import featherstore
from conftest import user_rows, user_spec, utc


def with_score(name: str) -> dict:
    spec = user_spec(name)
    spec["features"].append({"name": "score", "type": "float64"})
    spec["ttl_seconds"] = 3600 * 24 * 365 * 100
    return spec


def test_update_adds_a_feature_null_for_old_rows(client: featherstore.Client, user_set: str) -> None:
    client.ingest(user_set, user_rows([{"user_id": "u1", "event_timestamp": utc(2026, 1, 1), "age": 30}]))
    answer = client.update_feature_set(with_score(user_set))
    assert answer["spec"]["version"] == 2
    kinds = [c["change"] for c in answer["changes"]]
    assert kinds == ["add_feature", "ttl_seconds"]
    assert answer["changes"][0] == {"change": "add_feature", "name": "score", "type": "float64"}

    # New rows with and without the new feature.
    client.ingest(
        user_set,
        pa.table(
            {
                "user_id": ["u2"],
                "event_timestamp": pa.array([utc(2026, 1, 2)], pa.timestamp("us", "UTC")),
                "score": [0.5],
            }
        ),
    )
    client.ingest(user_set, user_rows([{"user_id": "u3", "event_timestamp": utc(2026, 1, 3), "age": 7}]))
    online = client.get_online_features(user_set, ["u1", "u2", "u3"]).to_pylist()
    assert [r["score"] for r in online] == [None, 0.5, None]
    assert [r["age"] for r in online] == [30, None, 7]
    history = client.get_history(user_set).to_pylist()
    assert sorted((r["user_id"], r["score"]) for r in history) == [("u1", None), ("u2", 0.5), ("u3", None)]
    assert "score" in client.get_schema(user_set).names


def test_versions_are_listed_and_fetched(client: featherstore.Client, user_set: str) -> None:
    client.update_feature_set(with_score(user_set))
    again = client.update_feature_set(with_score(user_set))
    assert again["changes"] == [] and again["spec"]["version"] == 2
    versions = client.list_feature_set_versions(user_set)
    assert [v["version"] for v in versions] == [1, 2]
    first = client.get_feature_set(user_set, version=1)
    assert [f["name"] for f in first["features"]] == ["age", "ctr_7d", "country", "embedding"]
    assert "stats" in first
    assert client.get_feature_set(user_set)["version"] == 2
    with pytest.raises(featherstore.NotFoundError):
        client.get_feature_set(user_set, version=3)


def test_refused_change_says_what_to_do(client: featherstore.Client, user_set: str) -> None:
    spec = user_spec(user_set)
    spec["features"] = spec["features"][1:]
    with pytest.raises(featherstore.InvalidArgumentError) as info:
        client.update_feature_set(spec)
    assert '"age" would be removed or renamed' in str(info.value)
    assert "create a new feature set" in str(info.value)
    assert client.get_feature_set(user_set)["version"] == 1
