"""Conforming input columns to a feature set's declared types before they are sent.

The server accepts only lossless widenings (PROTOCOL.md, "Ingest rules"). Data frames are wider
than most sets: pandas makes float64 and int64 columns, polars too. The client casts every column
the set declares to its declared type when each value fits:

==========================  =================================================================
declared type               accepted, when each value fits
==========================  =================================================================
int32, int64 (and int64     any integer type; floats holding whole numbers (pandas turns an
entity keys)                integer column with missing values into float64 with NaN: NaN
                            is a missing value, so such a column fits)
float32, float64            any integer or float type, each value rounded to the nearest
                            representable one; a finite value beyond float32's range
                            (±3.4028235e38) does not fit
string (and string keys)    string, large_string, string_view, dictionaries of them
binary                      binary, large_binary, binary_view, fixed_size_binary
date                        date32; date64 and timestamps holding midnights (UTC)
timestamp (and the event    timestamps of any unit; a time zone is kept as the same instant,
time column)                a timestamp without a zone (a naive ``datetime``, pandas
                            ``datetime64[ns]``) is read as UTC; date32/date64 as midnight UTC
float32[N], float64[N]      lists of N integers or floats (fixed-size, large or not, numpy
                            arrays in a pandas column), items as for float32/float64
bool                        bool
==========================  =================================================================

A value that does not fit (an int64 beyond int32's range, a float64 beyond float32's, 2.5 for
an integer feature) raises :class:`~featherstore.InvalidArgumentError` naming the column, the
row (counted from 0 over the whole input) and the value, and nothing is sent. Columns the set
does not declare, and types outside these rules, are sent as they are for the server to accept
or reject with its own message.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import pyarrow as pa
import pyarrow.compute as pc

from .errors import InvalidArgumentError

_FLOAT32_MAX_TEXT = "±3.4028235e38"


def declared_name(t: pa.DataType) -> str:
    """The spec's name of the Arrow type `t` of a set column (``float32[64]``, ``int32``)."""
    if pa.types.is_fixed_size_list(t):
        return f"{declared_name(t.value_type)}[{t.list_size}]"
    names = {
        pa.bool_(): "bool",
        pa.int32(): "int32",
        pa.int64(): "int64",
        pa.float32(): "float32",
        pa.float64(): "float64",
        pa.string(): "string",
        pa.binary(): "binary",
        pa.date32(): "date",
    }
    if pa.types.is_timestamp(t):
        return "timestamp"
    return names.get(t, str(t))


class _Column:
    """One column being conformed, for naming it in errors."""

    def __init__(self, name: str, declared: pa.DataType, first_row: int) -> None:
        self.name = name
        self.declared = declared
        self.first_row = first_row

    def error(
        self,
        source: pa.Array,
        index: int,
        reason: str,
        row_of: Callable[[int], int] = lambda i: i,
    ) -> InvalidArgumentError:
        value = source[index].as_py()
        shown = repr(value) if isinstance(value, (str, bytes)) else str(value)
        return InvalidArgumentError(
            f"column {self.name!r} row {self.first_row + row_of(index)} holds {shown}, "
            f"which does not fit {declared_name(self.declared)}: {reason}"
        )

    def conform(self, column: pa.Array) -> pa.Array:
        if pa.types.is_dictionary(column.type):
            column = column.dictionary_decode()
        if isinstance(column.type, pa.ExtensionType):
            column = column.storage
        target = self.declared
        if pa.types.is_fixed_size_list(target):
            return self._vector(column, target.value_type)
        return self._scalar(column, target)

    def _scalar(
        self,
        column: pa.Array,
        target: pa.DataType,
        row_of: Callable[[int], int] = lambda i: i,
    ) -> pa.Array:
        actual = column.type
        if pa.types.is_null(actual):
            return pa.nulls(len(column), target)
        if actual.equals(target):
            return column
        numeric = pa.types.is_integer(actual) or pa.types.is_floating(actual)
        if pa.types.is_integer(target) and numeric:
            if pa.types.is_floating(actual):
                fraction = pc.fill_null(pc.not_equal(column, pc.floor(column)), False)
                infinite = pc.fill_null(pc.invert(pc.is_finite(column)), False)
                bad = _first(pc.or_(fraction, infinite))
                if bad is not None:
                    raise self.error(column, bad, "not a whole number", row_of)
            try:
                return column.cast(target, safe=True)
            except (pa.ArrowInvalid, OverflowError):
                bad = _first_out_of_range(column, target)
                raise self.error(column, bad, "out of its range", row_of) from None
        if pa.types.is_floating(target) and numeric:
            out = column.cast(target, safe=False)
            if pa.types.is_float32(target):
                # Round to nearest: only a finite value beyond float32's range becomes
                # infinite, and that one does not fit.
                overflow = pc.and_(pc.is_inf(out), pc.is_finite(column.cast(pa.float64())))
                bad = _first(pc.fill_null(overflow, False))
                if bad is not None:
                    raise self.error(
                        column,
                        bad,
                        f"beyond float32's largest finite value, {_FLOAT32_MAX_TEXT}",
                        row_of,
                    )
            return out
        if pa.types.is_string(target) and (
            pa.types.is_large_string(actual) or _is(actual, "is_string_view")
        ):
            return column.cast(pa.string())
        if pa.types.is_binary(target) and (
            pa.types.is_large_binary(actual)
            or pa.types.is_fixed_size_binary(actual)
            or _is(actual, "is_binary_view")
        ):
            return column.cast(pa.binary())
        if pa.types.is_date32(target) and (
            pa.types.is_date64(actual) or pa.types.is_timestamp(actual)
        ):
            return self._date(column, row_of)
        if pa.types.is_timestamp(target):
            # Timestamps go as they are: the server reads any unit and zone (no zone: UTC)
            # and names a zone it does not know.
            if pa.types.is_date32(actual) or pa.types.is_date64(actual):
                return column.cast(pa.timestamp("us", tz="UTC"))
        return column

    def _date(self, column: pa.Array, row_of: Callable[[int], int]) -> pa.Array:
        # Checked in the column's own unit: a nanosecond past midnight is not midnight.
        if pa.types.is_date64(column.type):
            per_day = 86_400_000
        else:
            per_day = 86_400 * {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[column.type.unit]
        raw = column.cast(pa.int64())
        # Integer division truncates; a midnight divides evenly (before 1970 too).
        days = pc.divide(raw, per_day)
        remainder = pc.subtract(raw, pc.multiply(days, per_day))
        bad = _first(pc.fill_null(pc.not_equal(remainder, 0), False))
        if bad is not None:
            raise self.error(column, bad, "not midnight UTC", row_of)
        try:
            return days.cast(pa.int32()).cast(pa.date32())
        except (pa.ArrowInvalid, OverflowError):
            bad = _first_out_of_range(days, pa.int32())
            raise self.error(column, bad, "out of its range", row_of) from None

    def _vector(self, column: pa.Array, item: pa.DataType) -> pa.Array:
        actual = column.type
        if pa.types.is_fixed_size_list(actual):
            container = pa.list_(item, actual.list_size)
        elif pa.types.is_large_list(actual):
            container = pa.large_list(item)
        elif pa.types.is_list(actual):
            container = pa.list_(item)
        else:
            return self._scalar(column, column.type)  # the server names the type it expects
        if actual.value_type.equals(item):
            return column
        # Raises on an item that does not fit, naming the row of its list.
        self._scalar(
            column.flatten(),
            item,
            row_of=lambda i: pc.list_parent_indices(column)[i].as_py(),
        )
        return column.cast(container, safe=False)


def _is(t: pa.DataType, predicate: str) -> bool:
    check = getattr(pa.types, predicate, None)
    return bool(check and check(t))


def _first(mask: pa.Array) -> Optional[int]:
    """The index of the first true value of a boolean array without nulls, if any."""
    index = pc.index(mask, True).as_py()
    return None if index is None or index < 0 else index


def _first_out_of_range(column: pa.Array, target: pa.DataType) -> int:
    """The first value that a safe cast of `column` to integer `target` refuses."""
    for index in range(len(column)):
        if column[index].is_valid:
            try:
                column.slice(index, 1).cast(target, safe=True)
            except (pa.ArrowInvalid, OverflowError):
                return index
    return 0


def conform_batch(batch: pa.RecordBatch, declared: pa.Schema, first_row: int = 0) -> pa.RecordBatch:
    """`batch` with each column `declared` names cast to its declared type where every value
    fits (see the module documentation); `first_row` is the row number of its first row in
    the whole input, for error messages."""
    arrays = []
    fields = []
    for field, column in zip(batch.schema, batch.columns):
        index = declared.get_field_index(field.name)
        if index >= 0:
            column = _Column(field.name, declared.field(index).type, first_row).conform(column)
        arrays.append(column)
        fields.append(pa.field(field.name, column.type, True))
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


def conformed_schema(schema: pa.Schema, declared: pa.Schema) -> pa.Schema:
    """The schema :func:`conform_batch` gives batches of `schema`."""
    empty = pa.RecordBatch.from_arrays([pa.array([], f.type) for f in schema], schema=schema)
    return conform_batch(empty, declared).schema


def conform_all(batches: Any, declared: pa.Schema) -> Any:
    """Conforms an iterable of batches lazily, counting rows over all of them."""
    rows = 0
    for batch in batches:
        yield conform_batch(batch, declared, rows)
        rows += batch.num_rows
