"""Training data at cluster scale, straight from the Delta Lake backend's tables (no server in
the data path): Ray Data splits the entity rows into blocks, and each Ray task joins its block
with DuckDB against the feature sets' Delta tables, read with ``deltalake``.

The rules are the server's (docs/concepts.md): for an entity row at time t, a set's value is
the one with the greatest event time <= t, a tie going to the later ingest (``_seq``); with
``ttl_seconds``, a value more than the TTL older than t is null; with ``as_of="ingest_time"``
a stored row counts at t only once it was also ingested by t. Output columns are the entity
rows' columns, then one per feature, named as the server names them (``set__feature`` with
``full_names``), rows in entity-row order.

Example, on a real cluster (every node needs ``featherstore[delta]`` and read access to the
bucket; credentials through ``storage_options`` or the nodes' ``AWS_*`` variables)::

    import ray
    from featherstore.delta import training_dataset

    ray.init(address="auto")
    ds = training_dataset(
        "s3://features/prod", labels, ["users:*", "merchants:risk"],
        storage_options={"AWS_REGION": "us-east-1"}, block_rows=1_000_000,
    )
    ds.write_parquet("s3://training/run-42")

Each task reads, per set, only the rows of the entities in its block (a filter pushed down to
the Parquet scan), so the work and memory of one task follow its block, not the tables.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import pyarrow as pa

__all__ = ["training_dataset", "training_table", "load_specs"]

SEQ = "_seq"
INGESTED_AT = "_ingested_at"
# 2^64: event time and ingest order packed into one ASOF key, as the server does.
SEQ_SPAN = "18446744073709551616::HUGEINT"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def load_specs(uri: str, names: Sequence[str], storage_options: Optional[Mapping[str, str]] = None) -> Dict[str, Dict[str, Any]]:
    """The current spec of each named set, from the registry beside the tables
    (``{uri}/_featherstore/specs/{set}/v*.json``)."""
    from deltalake import DeltaTable  # noqa: F401  (a clear ImportError early)
    import pyarrow.fs as pafs

    filesystem, root = _filesystem(uri, storage_options or {})
    specs = {}
    for name in names:
        prefix = f"{root}/_featherstore/specs/{name}"
        infos = filesystem.get_file_info(pafs.FileSelector(prefix, allow_not_found=True))
        versions = sorted(i.path for i in infos if i.path.endswith(".json"))
        if not versions:
            raise KeyError(f"feature set {name!r} not found under {uri}")
        with filesystem.open_input_stream(versions[-1]) as f:
            specs[name] = json.loads(f.read())
    return specs


def _filesystem(uri: str, options: Mapping[str, str]) -> Tuple[Any, str]:
    import pyarrow.fs as pafs

    if uri.startswith("file://"):
        return pafs.LocalFileSystem(), uri[len("file://"):].rstrip("/")
    if uri.startswith(("s3://", "s3a://")):
        lower = {k.lower(): v for k, v in options.items()}

        def get(*keys: str) -> Optional[str]:
            for k in keys:
                if k in lower:
                    return lower[k]
            return None

        endpoint = get("endpoint", "aws_endpoint_url", "aws_endpoint")
        kwargs: Dict[str, Any] = {}
        if endpoint:
            scheme, _, rest = endpoint.partition("://")
            kwargs["endpoint_override"] = rest or scheme
            kwargs["scheme"] = scheme if rest else "https"
        if get("region", "aws_region"):
            kwargs["region"] = get("region", "aws_region")
        if get("aws_access_key_id", "access_key_id"):
            kwargs["access_key"] = get("aws_access_key_id", "access_key_id")
            kwargs["secret_key"] = get("aws_secret_access_key", "secret_access_key")
        return pafs.S3FileSystem(**kwargs), uri.split("://", 1)[1].rstrip("/")
    raise ValueError(f"unsupported table location {uri!r}: s3:// or file://")


def _outputs(features: Sequence[str], specs: Dict[str, Dict[str, Any]], input_columns: Sequence[str], full_names: bool) -> List[Tuple[str, str, str]]:
    """(set, feature, output name) per output column, as the server resolves them."""
    outputs: List[Tuple[str, str, str]] = []
    for reference in features:
        set_name, _, feature = reference.partition(":")
        if not set_name or not feature:
            raise ValueError(f'feature reference {reference!r} must be "set:feature" or "set:*"')
        declared = [f["name"] for f in specs[set_name]["features"]]
        chosen = declared if feature == "*" else [feature]
        for name in chosen:
            if name not in declared:
                raise ValueError(f"feature set {set_name!r} has no feature {name!r}")
            output = f"{set_name}__{name}" if full_names else name
            if output in input_columns or any(o[2] == output for o in outputs):
                raise ValueError(f"output column {output!r} appears twice; use full_names=True")
            outputs.append((set_name, name, output))
    return outputs


def _candidates(spec: Dict[str, Any], relation: str, used: Sequence[str], as_of: str) -> str:
    """The stored rows an entity row may join: the server's SQL (query/training.rs)."""
    ts = _ident(spec.get("timestamp", "event_timestamp"))
    entity = _ident(spec["entity"]["name"])
    columns = ", ".join(f"{_ident(f)} AS f{i}" for i, f in enumerate(used))
    seq = _ident(SEQ)
    if as_of == "event_time":
        return (
            f"SELECT {entity} AS _k, epoch_us({ts})::HUGEINT * {SEQ_SPAN} + {seq} AS _key, "
            f"epoch_us({ts}) AS _t, {columns} FROM {relation}"
        )
    visible = f"epoch_us(greatest({ts}, {_ident(INGESTED_AT)}))"
    best = ", ".join(f"b.f{i}" for i in range(len(used)))
    return (
        f"SELECT v._k, v._key, b._t, {best} FROM ("
        f"SELECT {entity} AS _k, {visible}::HUGEINT * {SEQ_SPAN} + {seq} AS _key, "
        f"max(epoch_us({ts})::HUGEINT * {SEQ_SPAN} + {seq}) OVER (PARTITION BY {entity} "
        f"ORDER BY {visible}, {seq} ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS _best "
        f"FROM {relation}) v "
        f"JOIN (SELECT {seq} AS _s, epoch_us({ts}) AS _t, {columns} FROM {relation}) b "
        f"ON b._s = (v._best % {SEQ_SPAN})::BIGINT"
    )


def _join_block(
    block: pa.Table,
    uri: str,
    specs: Dict[str, Dict[str, Any]],
    outputs: List[Tuple[str, str, str]],
    timestamp: str,
    as_of: str,
    storage_options: Mapping[str, str],
) -> pa.Table:
    """One block of entity rows joined with every set: DuckDB over the Delta tables."""
    import duckdb
    import pyarrow.compute as pc
    from deltalake import DeltaTable

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    rows = block.append_column("_row", pa.array(range(block.num_rows), pa.int64()))
    con.register("entity_rows", rows)
    joins = []
    selected = []
    sets = list(dict.fromkeys(o[0] for o in outputs))
    for i, name in enumerate(sets):
        spec = specs[name]
        entity = spec["entity"]["name"]
        used = list(dict.fromkeys(o[1] for o in outputs if o[0] == name))
        dataset = DeltaTable(f"{uri.rstrip('/')}/{name}", storage_options=dict(storage_options) or None).to_pyarrow_dataset()
        keys = pc.unique(block.column(entity).combine_chunks())
        wanted = [spec["entity"]["name"], spec.get("timestamp", "event_timestamp"), SEQ, INGESTED_AT, *used]
        # Only this block's entities: the filter goes down to the Parquet scan.
        stored = dataset.to_table(columns=wanted, filter=pc.field(entity).isin(keys))
        con.register(f"set_{i}", stored)
        candidates = _candidates(spec, f"set_{i}", used, as_of)
        joins.append(f" ASOF LEFT JOIN ({candidates}) s{i} ON e.{_ident(entity)} = s{i}._k AND e._key >= s{i}._key")
        ttl = spec.get("ttl_seconds")
        for o in outputs:
            if o[0] != name:
                continue
            value = f"s{i}.f{used.index(o[1])}"
            if ttl is not None:
                value = f"CASE WHEN e._t - s{i}._t <= {int(ttl) * 1_000_000} THEN {value} END"
            selected.append((o[2], value))
    select = ", ".join(f"{v} AS {_ident(name)}" for name, v in selected)
    ts = _ident(timestamp)
    sql = (
        f"SELECT e._row, {select} FROM (SELECT *, epoch_us({ts}) AS _t, "
        f"epoch_us({ts})::HUGEINT * {SEQ_SPAN} + ({SEQ_SPAN} - 1) AS _key FROM entity_rows) e"
        f"{''.join(joins)} ORDER BY e._row"
    )
    relation = con.sql(sql)
    # DuckDB 2 calls it `to_arrow_table`; DuckDB 1 `arrow`.
    fetch = getattr(relation, "to_arrow_table", None) or relation.arrow
    joined = pa.table(fetch())
    con.close()
    result = block
    for name, _ in selected:
        result = result.append_column(name, joined.column(name))
    return result


def _plan(
    uri: str,
    entity_rows: pa.Table,
    features: Sequence[str],
    as_of: str,
    full_names: bool,
    storage_options: Optional[Mapping[str, str]],
) -> Tuple[Dict[str, Dict[str, Any]], List[Tuple[str, str, str]], Dict[str, str]]:
    """The checked request: the sets' specs, the output columns, the storage options."""
    if as_of not in ("event_time", "ingest_time"):
        raise ValueError('as_of must be "event_time" or "ingest_time"')
    names = list(dict.fromkeys(f.partition(":")[0] for f in features))
    options = dict(storage_options or {})
    specs = load_specs(uri, names, options)
    return specs, _outputs(features, specs, entity_rows.column_names, full_names), options


def training_table(
    uri: str,
    entity_rows: pa.Table,
    features: Sequence[str],
    *,
    timestamp: str = "event_timestamp",
    as_of: str = "event_time",
    full_names: bool = False,
    storage_options: Optional[Mapping[str, str]] = None,
) -> pa.Table:
    """The training set of ``entity_rows`` in this process (one block): for tests and small
    sets; :func:`training_dataset` spreads the same work over a Ray cluster."""
    specs, outputs, options = _plan(uri, entity_rows, features, as_of, full_names, storage_options)
    return _join_block(entity_rows, uri, specs, outputs, timestamp, as_of, options)


def training_dataset(
    uri: str,
    entity_rows: pa.Table,
    features: Sequence[str],
    *,
    timestamp: str = "event_timestamp",
    as_of: str = "event_time",
    full_names: bool = False,
    storage_options: Optional[Mapping[str, str]] = None,
    block_rows: int = 1_000_000,
) -> "Any":
    """The training set as a ``ray.data.Dataset``: the entity rows cut into blocks of
    ``block_rows``, each joined by a Ray task (:func:`training_table`'s work per block). Rows
    keep the entity rows' order."""
    import ray.data

    specs, outputs, options = _plan(uri, entity_rows, features, as_of, full_names, storage_options)
    # Blocks come back in entity-row order, as from the server.
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    blocks = [entity_rows.slice(start, block_rows) for start in range(0, entity_rows.num_rows, block_rows)]
    dataset = ray.data.from_arrow(blocks or [entity_rows])

    def join(block: pa.Table) -> pa.Table:
        return _join_block(block, uri, specs, outputs, timestamp, as_of, options)

    # One task per block, blocks kept whole and in order.
    return dataset.map_batches(join, batch_format="pyarrow", batch_size=None)
