"""Ray: FeatherStore data as a ``ray.data.Dataset``.

Example::

    from featherstore.ray import training_dataset

    ds = training_dataset(client, labels_df, ["user_features:*"])
    ds.iter_torch_batches(batch_size=256)

Importing this module imports ray; ``import featherstore`` alone does not. Ray starts (or
joins) its cluster as usual: call ``ray.init(...)`` first to choose how.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

try:
    import ray
    import ray.data
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("featherstore.ray needs Ray Data: pip install 'featherstore[ray]'") from e

import pyarrow as pa

from .client import Client, TimeLike

__all__ = ["training_dataset", "history_dataset", "online_dataset"]


def _client(client: Union[Client, str]) -> Client:
    return client if isinstance(client, Client) else Client(client)


def _from_tables(tables: "list[pa.Table]", schema: pa.Schema) -> "ray.data.Dataset":
    tables = [t for t in tables if t.num_rows] or [schema.empty_table()]
    return ray.data.from_arrow(tables)


def training_dataset(
    client: Union[Client, str],
    entity_df: Any,
    features: Sequence[str],
    *,
    timestamp: str = "event_timestamp",
    full_names: bool = False,
    block_rows: Optional[int] = None,
) -> "ray.data.Dataset":
    """The point-in-time correct training set as a Ray Dataset (rows in entity-row order).

    The data is streamed from the server in batches and handed to Ray as one block per
    batch (`block_rows` rows each, default the client's batch size), so no single block
    holds the whole set. Arguments are those of :meth:`Client.iter_training_data`.
    """
    fs = _client(client)
    stream = fs._exchange(entity_df, features, timestamp, full_names, block_rows)
    try:
        schema = next(stream)
        tables = [pa.Table.from_batches([batch]) for batch in stream]
    finally:
        stream.close()
    return _from_tables(tables, schema)


def history_dataset(
    client: Union[Client, str],
    feature_set: str,
    entities: Optional[Sequence[Any]] = None,
    start: Optional[TimeLike] = None,
    end: Optional[TimeLike] = None,
    features: Optional[Sequence[str]] = None,
) -> "ray.data.Dataset":
    """A feature set's history (see :meth:`Client.get_history`) as a Ray Dataset."""
    table = _client(client).get_history(feature_set, entities, start, end, features).to_arrow()
    return _from_tables([table], table.schema)


def online_dataset(
    client: Union[Client, str],
    feature_set: str,
    entities: Sequence[Any],
    features: Optional[Sequence[str]] = None,
) -> "ray.data.Dataset":
    """Online values (see :meth:`Client.get_online_features`) as a Ray Dataset."""
    table = _client(client).get_online_features(feature_set, entities, features).to_arrow()
    return _from_tables([table], table.schema)
