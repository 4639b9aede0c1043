"""Every feature type of the protocol, with nulls and the limits of each type, under both entity
types, through the Python client on both backends: ingest (DoPut), online values, history and
training data must give back exactly what went in."""

from __future__ import annotations

import datetime as dt
from typing import Any, Dict, List, Optional

import pyarrow as pa
import pytest

import featherstore
from conftest import TS, skip_if_no_training_data, unique

FEATURES = [
    ("f_bool", "bool", pa.bool_()),
    ("f_int32", "int32", pa.int32()),
    ("f_int64", "int64", pa.int64()),
    ("f_float32", "float32", pa.float32()),
    ("f_float64", "float64", pa.float64()),
    ("f_string", "string", pa.string()),
    ("f_binary", "binary", pa.binary()),
    ("f_date", "date", pa.date32()),
    ("f_timestamp", "timestamp", TS),
    ("f_vec32", "float32[3]", pa.list_(pa.float32(), 3)),
    ("f_vec64", "float64[2]", pa.list_(pa.float64(), 2)),
]

UTC = dt.timezone.utc
MIN = dt.datetime(1, 1, 1, tzinfo=UTC)
MAX = dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
Y2026 = dt.datetime(2026, 1, 1, tzinfo=UTC)
F32_MAX = 3.4028234663852886e38
F32_TINY = 1.401298464324817e-45  # the least positive (subnormal) float32

# Rows in ingest order: entity 0 all null at the earliest instant, then the greatest values;
# entity 1 the least values, then an older row; entity 2 mixed, at the latest instant.
ROWS: List[Dict[str, Any]] = [
    {"entity": 0, "event_timestamp": MIN},
    {
        "entity": 0,
        "event_timestamp": Y2026,
        "f_bool": True,
        "f_int32": 2**31 - 1,
        "f_int64": 2**63 - 1,
        "f_float32": F32_MAX,
        "f_float64": 1.7976931348623157e308,
        "f_string": 'ünïcödé ✓ "quoted"\n',
        "f_binary": b"\x00\xff\x01",
        "f_date": dt.date(9999, 12, 31),
        "f_timestamp": MAX,
        "f_vec32": [1.5, -F32_TINY, F32_TINY],  # no -0.0 in vectors: see docs/api.md
        "f_vec64": [1e-300, -2.5],
    },
    {
        "entity": 1,
        "event_timestamp": Y2026 + dt.timedelta(microseconds=1),
        "f_bool": False,
        "f_int32": -(2**31),
        "f_int64": -(2**63),
        "f_float32": -0.5,
        "f_float64": -0.0,
        "f_string": "",
        "f_binary": b"",
        "f_date": dt.date(1, 1, 1),
        "f_timestamp": MIN,
        "f_vec32": [F32_MAX, -F32_MAX, 0.25],
        "f_vec64": [2.2250738585072014e-308, -1.7976931348623157e308],
    },
    {
        "entity": 1,
        "event_timestamp": dt.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        "f_bool": True,
        "f_int32": 7,
        "f_int64": -7,
        "f_float32": 0.25,
        "f_float64": 1e-300,
        "f_string": "old",
        "f_binary": b"old",
        "f_date": dt.date(1969, 12, 31),
        "f_timestamp": dt.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        "f_vec64": [1.0, 2.0],
    },
    {
        "entity": 2,
        "event_timestamp": MAX,
        "f_int32": 0,
        "f_float64": 3.25,
        "f_binary": b"\x00",
        "f_timestamp": Y2026,
        "f_vec32": [1.0, 2.0, 3.0],
    },
]

KEYS = {
    "string": (pa.string(), ["a", "bé", "c", "zz"]),
    "int64": (pa.int64(), [-(2**63), 0, 2**63 - 1, 42]),
}
UNKNOWN = 3


def schema(key_type: pa.DataType) -> pa.Schema:
    fields = [pa.field("id", key_type)]
    fields += [pa.field(name, arrow_type) for name, _, arrow_type in FEATURES]
    fields.append(pa.field("event_timestamp", TS))
    return pa.schema(fields)


def table(keys: str, rows: List[Optional[Dict[str, Any]]], entities: List[int]) -> pa.Table:
    """The canonical table of `rows` (None: a row of nulls) for the given entities."""
    key_type, names = KEYS[keys]
    full = []
    for entity, row in zip(entities, rows):
        cells = {name: (row or {}).get(name) for name, _, _ in FEATURES}
        cells["id"] = names[entity]
        cells["event_timestamp"] = None if row is None else row["event_timestamp"]
        full.append(cells)
    return pa.Table.from_pylist(full, schema=schema(key_type))


def assert_same(got: pa.Table, want: pa.Table, what: str) -> None:
    assert got.schema.names == want.schema.names, what
    for name in want.schema.names:
        g, w = got.column(name), want.column(name)
        assert g.type == w.type, f"{what}: type of {name}: {g.type} != {w.type}"
        # Exact, bit for bit: -0.0 differs from 0.0 in the buffers compared.
        assert g.combine_chunks().equals(w.combine_chunks()), (
            f"{what}: {name}\n got {g.to_pylist()}\nwant {w.to_pylist()}"
        )
        assert [repr(v) for v in g.to_pylist()] == [repr(v) for v in w.to_pylist()], (
            f"{what}: {name}"
        )


@pytest.mark.parametrize("keys", ["string", "int64"])
def test_every_type_round_trips(client: featherstore.Client, keys: str) -> None:
    name = unique(f"matrix_{keys}")
    client.create_feature_set(
        {
            "name": name,
            "entity": {"name": "id", "type": keys},
            "features": [{"name": n, "type": t} for n, t, _ in FEATURES],
        }
    )
    try:
        entities = [r["entity"] for r in ROWS]
        assert client.ingest(name, table(keys, ROWS, entities), batch_rows=2) == len(ROWS)
        names = KEYS[keys][1]

        # Online: newest row per entity; an unknown entity and a duplicate.
        asked = [2, UNKNOWN, 0, 1, 0]

        def latest(entity: int) -> Optional[Dict[str, Any]]:
            mine = [r for r in ROWS if r["entity"] == entity]
            return max(mine, key=lambda r: r["event_timestamp"]) if mine else None

        online = client.get_online_features(name, [names[e] for e in asked])
        assert_same(online, table(keys, [latest(e) for e in asked], asked), "online")

        # History: by entity then time; and the range [2026-01-01, the last instant).
        ordered = sorted(ROWS, key=lambda r: (r["entity"], r["event_timestamp"]))
        history = client.get_history(name)
        assert_same(history, table(keys, ordered, [r["entity"] for r in ordered]), "history")
        ranged = [r for r in ordered if Y2026 <= r["event_timestamp"] < MAX]
        history = client.get_history(name, start=Y2026, end=MAX)
        assert_same(
            history, table(keys, ranged, [r["entity"] for r in ranged]), "history in a range"
        )

        # Training data: point in time, from the first to the last instant.
        skip_if_no_training_data(client)
        asks = [
            (0, MIN),
            (0, Y2026 - dt.timedelta(microseconds=1)),
            (0, Y2026),
            (1, dt.datetime(1969, 12, 31, 23, 59, 59, 999998, tzinfo=UTC)),
            (1, Y2026),
            (1, MAX),
            (2, MAX),
            (UNKNOWN, MAX),
        ]

        def as_of(entity: int, at: dt.datetime) -> Optional[Dict[str, Any]]:
            mine = [
                (r["event_timestamp"], i, r)
                for i, r in enumerate(ROWS)
                if r["entity"] == entity and r["event_timestamp"] <= at
            ]
            return max(mine, key=lambda m: (m[0], m[1]))[2] if mine else None

        entity_rows = pa.table(
            {
                "id": pa.array([names[e] for e, _ in asks], KEYS[keys][0]),
                "event_timestamp": pa.array([t for _, t in asks], TS),
                "label": pa.array(range(len(asks)), pa.int64()),
            }
        )
        got = client.get_training_data(entity_rows, [f"{name}:*"], batch_rows=3)
        found = table(keys, [as_of(e, t) for e, t in asks], [e for e, _ in asks])
        want = entity_rows
        for feature, _, _ in FEATURES:
            want = want.append_column(found.schema.field(feature), found.column(feature))
        assert_same(got, want, "training data")
    finally:
        client.delete_feature_set(name)


def test_out_of_range_times_are_refused(client: featherstore.Client) -> None:
    name = unique("matrix_range")
    client.create_feature_set(
        {
            "name": name,
            "entity": {"name": "id", "type": "string"},
            "features": [{"name": "t", "type": "timestamp"}],
        }
    )
    try:
        for column, values, unit in [
            ("event_timestamp", [0, -(2**63)], "s"),
            ("t", [2**62, None], "ms"),
        ]:
            data = {
                "id": pa.array(["a", "b"]),
                "event_timestamp": pa.array([0, 1], pa.timestamp("s")),
            }
            data[column] = pa.array(values, pa.timestamp(unit))
            with pytest.raises(featherstore.InvalidArgumentError) as e:
                client.ingest(name, pa.table(data))
            assert column in str(e.value) and "0001-01-01T00:00:00Z" in str(e.value)
        with pytest.raises(featherstore.InvalidArgumentError):
            client.ingest(
                name,
                pa.table(
                    {
                        "id": pa.array(["a"]),
                        "event_timestamp": pa.array([0], pa.timestamp("s", "Nowhere/City")),
                    }
                ),
            )
        assert client.get_feature_set(name)["stats"]["rows"] == 0
    finally:
        client.delete_feature_set(name)
