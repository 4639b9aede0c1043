"""Feature services against the real server: the registry, online reads across sets, training
data by service, and the documented errors."""

from __future__ import annotations

from typing import Iterator, Tuple

import pyarrow as pa
import pytest

import featherstore
from conftest import TS, unique, user_rows, utc


@pytest.fixture
def service(client: featherstore.Client, user_set: str) -> Iterator[Tuple[str, str, str]]:
    """The user set and a merchant set with rows, and a service reading both."""
    client.ingest(
        user_set,
        user_rows(
            [
                {"user_id": "u1", "event_timestamp": utc(2026, 1, 1), "age": 30, "ctr_7d": 0.25},
                {"user_id": "u2", "event_timestamp": utc(2026, 1, 5), "age": 50},
            ]
        ),
    )
    merchants = unique("merchants")
    client.create_feature_set(
        {
            "name": merchants,
            "entity": {"name": "merchant_id", "type": "int64"},
            "features": [{"name": "risk", "type": "float64"}, {"name": "age", "type": "int32"}],
        }
    )
    client.ingest(
        merchants,
        pa.table(
            {
                "merchant_id": pa.array([7], pa.int64()),
                "event_timestamp": pa.array([utc(2026, 1, 2)], TS),
                "risk": [0.75],
                "age": pa.array([3], pa.int32()),
            }
        ),
    )
    name = unique("fraud")
    stored = client.create_feature_service(
        {
            "name": name,
            "features": [f"{user_set}:age", f"{merchants}:risk"],
            "description": "fraud model",
            "tags": {"team": "risk"},
        }
    )
    assert stored["name"] == name and "created_at" in stored
    yield name, user_set, merchants
    for cleanup in (
        lambda: client.delete_feature_service(name),
        lambda: client.delete_feature_set(merchants),
    ):
        try:
            cleanup()
        except featherstore.FeatherStoreError:
            pass


def test_registry_and_online_reads_across_sets(client: featherstore.Client, service) -> None:
    name, users, merchants = service
    assert client.get_feature_service(name)["features"] == [f"{users}:age", f"{merchants}:risk"]
    assert name in [s["name"] for s in client.list_feature_services()]
    with pytest.raises(featherstore.FailedPreconditionError, match=name):
        client.delete_feature_set(merchants)
    with pytest.raises(featherstore.NotFoundError, match="nope"):
        client.create_feature_service({"name": unique("s"), "features": [f"{users}:nope"]})

    table = client.get_online_features_multi(
        {"user_id": ["u2", "ghost", "u1"], "merchant_id": [7, 7, 8]}, feature_service=name
    )
    assert table.column_names == ["user_id", "merchant_id", "age", "risk"]
    frame = table.to_pandas()
    assert frame["age"].tolist()[0] == 50 and frame["risk"].tolist()[0] == 0.75
    assert frame["age"].isna().tolist() == [False, True, False]
    assert table.to_polars()["risk"].to_list() == [0.75, 0.75, None]

    full = client.get_online_features_multi(
        {"user_id": ["u1"], "merchant_id": [7]},
        features=[f"{users}:age", f"{merchants}:age"],
        full_names=True,
        with_timestamps=True,
    )
    assert full.column_names == [
        "user_id",
        "merchant_id",
        f"{users}__age",
        f"{merchants}__age",
        f"{users}__event_timestamp",
        f"{merchants}__event_timestamp",
    ]
    with pytest.raises(featherstore.InvalidArgumentError, match="full_names"):
        client.get_online_features_multi(
            {"user_id": ["u1"], "merchant_id": [7]},
            features=[f"{users}:age", f"{merchants}:age"],
        )
    with pytest.raises(featherstore.InvalidArgumentError, match="merchant_id"):
        client.get_online_features_multi({"user_id": ["u1"]}, feature_service=name)
    with pytest.raises(featherstore.InvalidArgumentError, match="differ in length"):
        client.get_online_features_multi(
            {"user_id": ["u1", "u2"], "merchant_id": [7]}, feature_service=name
        )
    with pytest.raises(featherstore.InvalidArgumentError, match="merchant_id"):
        client.get_online_features_multi(
            {"user_id": ["u1"], "merchant_id": ["seven"]}, feature_service=name
        )

    client.delete_feature_service(name)
    with pytest.raises(featherstore.NotFoundError):
        client.get_feature_service(name)


def test_training_data_by_service(client: featherstore.Client, service) -> None:
    name, users, merchants = service
    rows = pa.table(
        {
            "user_id": ["u1", "u2"],
            "merchant_id": pa.array([7, 7], pa.int64()),
            "event_timestamp": pa.array([utc(2026, 1, 3), utc(2026, 1, 1)], TS),
            "label": [1, 0],
        }
    )
    by_service = client.get_training_data(rows, feature_service=name)
    by_features = client.get_training_data(rows, [f"{users}:age", f"{merchants}:risk"])
    assert by_service.to_arrow().equals(by_features.to_arrow())
    assert by_service.column("age").to_pylist() == [30, None]
    assert by_service.column("risk").to_pylist() == [0.75, None]
    with pytest.raises(TypeError):
        client.get_training_data(rows, [f"{users}:age"], feature_service=name)
