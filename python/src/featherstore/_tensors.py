"""Shared by the framework adapters: which columns are features, and Arrow batches to numpy."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from .client import Client

_SCALAR_TYPES = {"bool", "int32", "int64", "float32", "float64"}
_VECTOR = re.compile(r"^float(32|64)\[(\d+)\]$")


@dataclass(frozen=True)
class Column:
    """A numeric column fed to a model: `width` values per row (1, or N for an embedding)."""

    name: str
    width: int


def _width_of_spec_type(type_name: str) -> Optional[int]:
    if type_name in _SCALAR_TYPES:
        return 1
    match = _VECTOR.match(type_name)
    return int(match.group(2)) if match else None


def _width_of_arrow_type(t: pa.DataType) -> Optional[int]:
    if pa.types.is_boolean(t) or pa.types.is_integer(t) or pa.types.is_floating(t):
        return 1
    if pa.types.is_fixed_size_list(t) and (
        pa.types.is_floating(t.value_type) or pa.types.is_integer(t.value_type)
    ):
        return t.list_size
    return None


def resolve_features(
    client: "Client", features: Sequence[str], full_names: bool
) -> List[Tuple[str, str]]:
    """(output column name, spec type) of each requested feature, in the order the server
    appends them: ``set:*`` expands in spec order; names are ``feature`` or ``set__feature``."""
    specs: Dict[str, Dict[str, Any]] = {}
    out: List[Tuple[str, str]] = []
    for ref in features:
        if ":" not in ref:
            raise ValueError(f"feature reference {ref!r} must look like 'set:feature' or 'set:*'")
        set_name, feature = ref.split(":", 1)
        if set_name not in specs:
            specs[set_name] = client.get_feature_set(set_name)
        declared = specs[set_name].get("features", [])
        chosen = declared if feature == "*" else [f for f in declared if f["name"] == feature]
        if not chosen:
            from .errors import NotFoundError

            raise NotFoundError(f"feature set {set_name!r} has no feature {feature!r}")
        for f in chosen:
            name = f"{set_name}__{f['name']}" if full_names else f["name"]
            out.append((name, f["type"]))
    return out


def feature_columns(
    client: "Client",
    features: Sequence[str],
    full_names: bool,
    chosen: Optional[Sequence[str]] = None,
    entity_schema: Optional[pa.Schema] = None,
) -> List[Column]:
    """The numeric model inputs: all requested features, or the `chosen` column names (which
    may also name numeric columns of the entity rows, passed through by the server).

    Raises TypeError for a column that has no numeric form (string, binary, date, timestamp).
    """
    resolved = resolve_features(client, features, full_names)
    by_name = dict(resolved)
    names = list(chosen) if chosen is not None else [name for name, _ in resolved]
    columns = []
    for name in names:
        if name in by_name:
            type_name = by_name[name]
            width = _width_of_spec_type(type_name)
        elif entity_schema is not None and name in entity_schema.names:
            type_name = str(entity_schema.field(name).type)
            width = _width_of_arrow_type(entity_schema.field(name).type)
        else:
            raise ValueError(
                f"{name!r} is neither a requested feature {[n for n, _ in resolved]} nor a "
                "column of the entity rows"
            )
        if width is None:
            raise TypeError(
                f"column {name!r} has type {type_name}, which has no tensor form; pass "
                "feature_columns=[...] with numeric columns only"
            )
        columns.append(Column(name, width))
    return columns


def label_kind(schema: pa.Schema, label: str) -> str:
    """``"int64"`` or ``"float32"``: the numpy dtype a label column becomes."""
    if label not in schema.names:
        raise ValueError(f"label column {label!r} is not in the entity rows {schema.names}")
    t = schema.field(label).type
    if pa.types.is_integer(t):
        return "int64"
    if pa.types.is_floating(t) or pa.types.is_boolean(t):
        return "float32"
    raise TypeError(f"label column {label!r} has type {t}; expected a number or a bool")


def _column_numpy(array: pa.Array, width: int, fill_null: float) -> "np.ndarray":
    import numpy as np

    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    n = len(array)
    if width == 1 and not pa.types.is_fixed_size_list(array.type):
        values = pc.cast(array, pa.float32())
        values = pc.fill_null(values, pa.scalar(fill_null, pa.float32()))
        return values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(n, 1)
    if not pa.types.is_fixed_size_list(array.type):
        raise TypeError(f"expected a fixed-size list for an embedding, got {array.type}")
    size = array.type.list_size
    flat = array.values.slice(array.offset * size, n * size)
    flat = pc.fill_null(pc.cast(flat, pa.float32()), pa.scalar(fill_null, pa.float32()))
    matrix = flat.to_numpy(zero_copy_only=False).astype(np.float32, copy=True).reshape(n, size)
    if array.null_count:
        matrix[array.is_null().to_numpy(zero_copy_only=False)] = fill_null
    return matrix


def batch_to_numpy(
    batch: pa.RecordBatch,
    columns: Sequence[Column],
    label: Optional[str] = None,
    fill_null: float = float("nan"),
) -> Tuple["np.ndarray", Optional["np.ndarray"]]:
    """(features float32 [rows, sum of widths], label [rows] or None) of one batch.

    Null feature values become `fill_null` (NaN by default). A null label is an error for an
    integer label, NaN for a float one.
    """
    import numpy as np

    n = batch.num_rows
    parts = [_column_numpy(batch.column(c.name), c.width, fill_null) for c in columns]
    x = np.concatenate(parts, axis=1) if parts else np.zeros((n, 0), dtype=np.float32)
    y = None
    if label is not None:
        array = batch.column(label)
        if label_kind(batch.schema, label) == "int64":
            if array.null_count:
                raise ValueError(f"label column {label!r} has {array.null_count} null values")
            y = pc.cast(array, pa.int64()).to_numpy(zero_copy_only=False).astype(np.int64)
        else:
            y = (
                pc.cast(array, pa.float32())
                .to_numpy(zero_copy_only=False)
                .astype(np.float32, copy=False)
            )
    return x, y


def shard(table: pa.Table, index: int, count: int) -> pa.Table:
    """The `index`-th of `count` contiguous, near-equal slices of `table`."""
    rows = table.num_rows
    start = rows * index // count
    stop = rows * (index + 1) // count
    return table.slice(start, stop - start)


def as_table(entity_df: Any) -> pa.Table:
    """`entity_df` (any input :meth:`Client.ingest` takes) as one pyarrow Table."""
    from . import _arrow

    arrow = _arrow.to_arrow(entity_df)
    if isinstance(arrow, pa.RecordBatchReader):
        arrow = arrow.read_all()
    return arrow
