"""Turning user data (pyarrow, pandas, polars, ...) into Arrow record batches for the wire."""

from __future__ import annotations

import datetime as _dt
from typing import Any, Iterable, Iterator, List, Optional, Tuple

import pyarrow as pa

from . import _conform

#: Rows per record batch sent to the server unless the caller says otherwise.
DEFAULT_BATCH_ROWS = 65_536
#: Bytes per record batch sent to the server, well under the server's 64 MiB message limit.
DEFAULT_BATCH_BYTES = 16 * 1024 * 1024


def _module_of(obj: Any) -> str:
    return type(obj).__module__ or ""


def _normalize_type(t: pa.DataType) -> pa.DataType:
    """The wire type for `t`: the same values in a layout the protocol lists.

    Only representation changes that cannot lose a value: dictionary columns are decoded,
    large/view lists become lists, large/view binary becomes binary, string views become
    strings. Value types (int64 vs int32, ...) are left to the server's rules.
    """
    if pa.types.is_dictionary(t):
        return _normalize_type(t.value_type)
    if pa.types.is_large_list(t) or (
        hasattr(pa.types, "is_list_view")
        and (pa.types.is_list_view(t) or pa.types.is_large_list_view(t))
    ):
        return pa.list_(_normalize_field(t.value_field))
    if pa.types.is_list(t):
        return pa.list_(_normalize_field(t.value_field))
    if pa.types.is_fixed_size_list(t):
        return pa.list_(_normalize_field(t.value_field), t.list_size)
    if pa.types.is_large_binary(t) or (
        hasattr(pa.types, "is_binary_view") and pa.types.is_binary_view(t)
    ):
        return pa.binary()
    if hasattr(pa.types, "is_string_view") and pa.types.is_string_view(t):
        return pa.string()
    if isinstance(t, pa.ExtensionType):
        return _normalize_type(t.storage_type)
    return t


def _normalize_field(f: pa.Field) -> pa.Field:
    return pa.field(f.name, _normalize_type(f.type), f.nullable)


def normalize_schema(schema: pa.Schema) -> pa.Schema:
    """`schema` with wire types (see `_normalize_type`) and no metadata."""
    return pa.schema([_normalize_field(f) for f in schema])


def _cast_batch(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    if batch.schema.equals(schema, check_metadata=False):
        if batch.schema.metadata:
            return batch.replace_schema_metadata(None)
        return batch
    columns = []
    for column, field in zip(batch.columns, schema):
        if pa.types.is_dictionary(column.type):
            column = column.dictionary_decode()
        if isinstance(column.type, pa.ExtensionType):
            column = column.storage
        if not column.type.equals(field.type):
            column = column.cast(field.type)
        columns.append(column)
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _pandas_to_table(df: Any) -> pa.Table:
    index_names = [n for n in getattr(df.index, "names", []) if n is not None]
    # A named index (df.set_index("user_id")) is data; a default or unnamed one is not.
    return pa.Table.from_pandas(df, preserve_index=None if index_names else False)


def to_arrow(data: Any) -> "pa.Table | pa.RecordBatchReader":
    """Converts supported inputs to a pyarrow Table or RecordBatchReader.

    Accepted: ``pyarrow.Table``, ``pyarrow.RecordBatch``, ``pyarrow.RecordBatchReader``, an
    iterable of ``RecordBatch``, a pandas DataFrame, a polars DataFrame or LazyFrame, a dict of
    columns, a list of row dicts, or any object with the Arrow PyCapsule stream interface.
    """
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if isinstance(data, pa.RecordBatchReader):
        return data
    module = _module_of(data)
    if module.startswith("pandas"):
        return _pandas_to_table(data)
    if module.startswith("polars"):
        if hasattr(data, "collect") and not hasattr(data, "to_arrow"):
            data = data.collect()  # LazyFrame
        return data.to_arrow()
    if isinstance(data, dict):
        return pa.table(data)
    if isinstance(data, list) and (not data or isinstance(data[0], dict)):
        if not data:
            raise ValueError("no rows given: an empty list has no columns")
        return pa.Table.from_pylist(data)
    if hasattr(data, "__arrow_c_stream__"):
        return pa.RecordBatchReader.from_stream(data)
    if isinstance(data, (list, tuple)) or hasattr(data, "__iter__"):
        batches = list(data)
        if batches and all(isinstance(b, pa.RecordBatch) for b in batches):
            return pa.Table.from_batches(batches)
    raise TypeError(
        f"cannot send {type(data).__name__!r}: expected a pyarrow Table/RecordBatch/"
        "RecordBatchReader, a pandas or polars DataFrame, a dict of columns or a list of rows"
    )


def _split(batch: pa.RecordBatch, max_rows: int, max_bytes: int) -> Iterator[pa.RecordBatch]:
    if batch.num_rows > max_rows:
        for offset in range(0, batch.num_rows, max_rows):
            yield from _split(batch.slice(offset, max_rows), max_rows, max_bytes)
        return
    if batch.num_rows > 1 and batch.nbytes > max_bytes:
        half = batch.num_rows // 2
        yield from _split(batch.slice(0, half), max_rows, max_bytes)
        yield from _split(batch.slice(half), max_rows, max_bytes)
        return
    yield batch


def record_batches(
    data: Any,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    declared: Optional[pa.Schema] = None,
) -> Tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """The wire schema of `data` and its record batches of at most `batch_rows` rows and
    about `batch_bytes` bytes each (a batch is split no further than one row).

    With `declared` (a feature set's schema), columns are conformed to it (see
    ``featherstore._conform``). A table is conformed whole before its first batch is
    returned, so a value that does not fit stops it before anything is sent; a stream is
    conformed batch by batch."""
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be at least 1, got {batch_rows}")
    arrow = to_arrow(data)
    schema = normalize_schema(arrow.schema)
    wire = schema if declared is None else _conform.conformed_schema(schema, declared)
    if isinstance(arrow, pa.Table):
        if any(column.num_chunks > 1 for column in arrow.columns):
            arrow = arrow.combine_chunks()
        source: Iterable[pa.RecordBatch] = arrow.to_batches(max_chunksize=batch_rows)
    else:
        source = arrow

    def generate() -> Iterator[pa.RecordBatch]:
        rows = 0
        for batch in source:
            if batch.num_rows == 0:
                continue
            for piece in _split(batch, batch_rows, batch_bytes):
                piece = _cast_batch(piece, schema)
                if declared is not None:
                    piece = _conform.conform_batch(piece, declared, rows)
                rows += piece.num_rows
                yield piece

    if declared is not None and isinstance(arrow, pa.Table):
        return wire, iter(list(generate()))
    return wire, generate()


def format_time(value: Any) -> Optional[str]:
    """An RFC 3339 UTC string for `value`: a ``datetime`` (naive means UTC), a ``date``
    (midnight UTC), a numpy ``datetime64``, or a string (passed through for the server to
    check)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if _module_of(value) == "numpy" and type(value).__name__ == "datetime64":
        import numpy as np

        micros = int(value.astype("datetime64[us]").astype(np.int64))
        value = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc) + _dt.timedelta(
            microseconds=micros
        )
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        value = value.astimezone(_dt.timezone.utc)
        return value.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
    if isinstance(value, _dt.date):
        return value.isoformat()
    raise TypeError(
        f"cannot use {type(value).__name__!r} as a time: expected a datetime, a date or an "
        "RFC 3339 string such as '2026-01-01T00:00:00Z'"
    )


def entity_list(entities: Any) -> List[Any]:
    """Entity keys as a JSON-ready list of str or int."""
    if isinstance(entities, (str, bytes, int)):
        raise TypeError(
            "entities must be a sequence of keys, e.g. ['u1', 'u2'], not a single "
            f"{type(entities).__name__}"
        )
    if isinstance(entities, (pa.Array, pa.ChunkedArray)):
        return entities.to_pylist()
    if hasattr(entities, "to_list"):  # pandas / polars Series
        entities = entities.to_list()
    elif hasattr(entities, "tolist"):  # numpy arrays
        entities = entities.tolist()
    out: List[Any] = []
    for key in entities:
        if hasattr(key, "item") and not isinstance(key, (str, int)):
            key = key.item()  # numpy scalars
        out.append(key)
    return out
