"""What reads return: a pyarrow table, one call away from pandas and polars."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

__all__ = ["FeatureTable"]


class FeatureTable:
    """The result of a read: a ``pyarrow.Table`` with ``to_pandas()`` and ``to_polars()``.

    Every attribute and method of the underlying ``pyarrow.Table`` works on it as is
    (``num_rows``, ``schema``, ``column("age")``, ``to_pylist()``, ``select([...])``, ...);
    :meth:`to_arrow` gives the ``pyarrow.Table`` itself, for APIs that insist on one
    (``pyarrow.parquet.write_table``). It also speaks the Arrow PyCapsule stream interface,
    so ``pyarrow.table(result)``, ``polars.DataFrame(result)`` and DuckDB take it directly.

    Example::

        online = fs.get_online_features("user_features", ["u1", "u2"])
        online.to_pandas()      # pandas DataFrame (timestamps tz-aware UTC)
        online.to_polars()      # polars DataFrame
        online.to_arrow()       # pyarrow.Table
        online.column("age").to_pylist()
    """

    __slots__ = ("_table",)

    def __init__(self, table: pa.Table) -> None:
        self._table = table

    def to_arrow(self) -> pa.Table:
        """The result as a ``pyarrow.Table``."""
        return self._table

    def to_pandas(self, **kwargs: Any) -> Any:
        """The result as a pandas DataFrame (needs pandas); keyword arguments go to
        ``pyarrow.Table.to_pandas``. Timestamps come tz-aware (UTC), missing integers as
        NaN unless ``types_mapper=pandas.ArrowDtype`` or similar is given."""
        return self._table.to_pandas(**kwargs)

    def to_polars(self) -> Any:
        """The result as a polars DataFrame (needs polars; no copy for most types)."""
        try:
            import polars
        except ImportError as e:
            raise ImportError(
                "to_polars() needs polars: pip install 'featherstore[polars]'"
            ) from e
        return polars.from_arrow(self._table)

    def to_pylist(self) -> list:
        """The rows as a list of dicts, one per row."""
        return self._table.to_pylist()

    def __arrow_c_stream__(self, requested_schema: Any = None) -> Any:
        return self._table.__arrow_c_stream__(requested_schema)

    def __getattr__(self, name: str) -> Any:
        if name == "_table":  # not set yet (while unpickling)
            raise AttributeError(name)
        return getattr(self._table, name)

    def __getitem__(self, key: Any) -> Any:
        return self._table[key]

    def __len__(self) -> int:
        return self._table.num_rows

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FeatureTable):
            other = other._table
        if isinstance(other, pa.Table):
            return self._table.equals(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "featherstore.FeatureTable\n" + self._table.to_string(preview_cols=12)

    def __getstate__(self) -> pa.Table:
        return self._table

    def __setstate__(self, table: pa.Table) -> None:
        self._table = table
