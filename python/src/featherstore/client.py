"""The FeatherStore client over Arrow Flight."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
from typing import Any, Dict, Generator, Iterator, List, Mapping, Optional, Sequence, Union

import pyarrow as pa
import pyarrow.flight as flight

from . import _arrow
from ._table import FeatureTable
from .errors import FeatherStoreError, PermissionDeniedError, from_flight_error

__all__ = ["Client", "FeatureTable", "TimeLike"]

#: A point in time: a ``datetime`` (naive means UTC), a ``date`` or an RFC 3339 string.
TimeLike = Union[str, _dt.datetime, _dt.date]

_FLIGHT_ERRORS = (flight.FlightError, pa.ArrowException, OSError)


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """Re-raises pyarrow Flight errors as FeatherStoreError subclasses."""
    try:
        yield
    except FeatherStoreError:
        raise
    except _FLIGHT_ERRORS as e:
        raise from_flight_error(e) from e


def _quiet_close(closeable: Any) -> None:
    try:
        closeable.close()
    except Exception:  # noqa: BLE001 - the first error is the one reported
        pass


class Client:
    """A connection to a FeatherStore server (its Arrow Flight endpoint).

    Quick start::

        import datetime as dt
        import pandas as pd
        import featherstore

        fs = featherstore.Client("grpc://localhost:8081")

        # 1. Declare a feature set (once; creating the same spec again is a no-op).
        fs.create_feature_set({
            "name": "user_features",
            "entity": {"name": "user_id", "type": "string"},
            "features": [{"name": "age", "type": "int32"},
                         {"name": "ctr_7d", "type": "float32"}],
        })

        # 2. Ingest rows: a pandas or polars DataFrame, a pyarrow Table, a dict of columns or
        #    a list of row dicts, holding the entity column, the event time column
        #    ("event_timestamp" unless the spec names another) and any of the features.
        #    Columns are conformed to the declared types when every value fits (pandas'
        #    float64 into float32, int64 into int32, ...); naive datetimes are UTC.
        now = pd.Timestamp.now(tz="UTC")
        fs.ingest("user_features", pd.DataFrame({
            "user_id": ["u1", "u2"],
            "event_timestamp": [now, now],
            "age": [31, 45],
            "ctr_7d": [0.12, 0.05],
        }))

        # 3. Read. Every read returns a FeatureTable: a pyarrow Table with to_pandas() and
        #    to_polars() one call away.
        fs.get_online_features("user_features", ["u1", "u2"]).to_pandas()   # latest values
        fs.get_history("user_features", ["u1"], start="2026-01-01").to_polars()
        labels = pd.DataFrame({"user_id": ["u1"], "event_timestamp": [now], "label": [1]})
        fs.get_training_data(labels, ["user_features:age", "user_features:ctr_7d"])

    Feature sets: :meth:`create_feature_set`, :meth:`get_feature_set`,
    :meth:`list_feature_sets`, :meth:`delete_feature_set`, :meth:`get_schema`. Writing:
    :meth:`ingest`. Reading: :meth:`get_online_features` (latest value per entity),
    :meth:`get_history` (rows in a time range), :meth:`get_training_data` and
    :meth:`iter_training_data` (point-in-time correct joins onto your entity rows).
    Errors are :class:`featherstore.FeatherStoreError` subclasses (``NotFoundError``,
    ``InvalidArgumentError``, ...).

    Args:
        location: the Flight address, ``grpc://host:port`` (``grpc+tls://`` for TLS). A bare
            ``host:port`` means ``grpc://host:port``.
        timeout: seconds allowed for each call (``None``: no limit).
        headers: extra gRPC headers sent with every call.
        token: the bearer token of a server with auth (docs/security.md), sent as
            ``authorization: Bearer <token>`` with every call; default: the
            ``FEATHERSTORE_TOKEN`` environment variable, else none.
        tls_root_certs: for a ``grpc+tls://`` location, the CA that signed the server's
            certificate: PEM bytes, or the path of a PEM file; default: the file named by
            ``FEATHERSTORE_CA_FILE``, else the system's roots. A server that requires client
            certificates also needs ``cert_chain`` and ``private_key`` (PEM bytes), passed on
            to pyarrow.
        batch_rows: rows per record batch sent by :meth:`ingest` and the training-data calls.
        **flight_kwargs: passed to ``pyarrow.flight.FlightClient`` (TLS roots, ...).

    The client is safe to use from several threads. It is not fork-safe: gRPC, under
    pyarrow.flight, hangs in a child process forked after the parent used it. Start worker
    processes with ``spawn`` or ``forkserver`` (a pickled client reconnects in the child).
    """

    def __init__(
        self,
        location: str = "grpc://localhost:8081",
        *,
        timeout: Optional[float] = None,
        headers: Optional[Dict[str, str]] = None,
        token: Optional[str] = None,
        tls_root_certs: Union[bytes, str, "os.PathLike[str]", None] = None,
        batch_rows: int = _arrow.DEFAULT_BATCH_ROWS,
        **flight_kwargs: Any,
    ) -> None:
        if "://" not in location:
            location = "grpc://" + location
        self.location = location
        self.timeout = timeout
        self.headers = dict(headers or {})
        if token is None:
            token = os.environ.get("FEATHERSTORE_TOKEN") or None
        self.token = token.strip() if token else None
        self.batch_rows = batch_rows
        if tls_root_certs is None and location.startswith("grpc+tls://"):
            tls_root_certs = os.environ.get("FEATHERSTORE_CA_FILE") or None
        if isinstance(tls_root_certs, (str, os.PathLike)):
            with open(tls_root_certs, "rb") as f:
                tls_root_certs = f.read()
        if tls_root_certs is not None:
            flight_kwargs["tls_root_certs"] = tls_root_certs
        self._flight_kwargs = dict(flight_kwargs)
        self._flight = flight.FlightClient(location, **flight_kwargs)
        # gRPC connections do not survive fork(); adapters check this to fail clearly.
        self._pid = os.getpid()

    # -- plumbing -----------------------------------------------------------------------------

    def _options(self) -> flight.FlightCallOptions:
        headers = [(k.lower().encode(), v.encode()) for k, v in self.headers.items()]
        if self.token:
            headers.append((b"authorization", b"Bearer " + self.token.encode()))
        return flight.FlightCallOptions(timeout=self.timeout, headers=headers)

    def _action(self, name: str, body: Any) -> Any:
        payload = json.dumps(body).encode()
        with _translated():
            results = list(self._flight.do_action(flight.Action(name, payload), self._options()))
        if not results:
            return None
        text = b"".join(r.body.to_pybytes() for r in results).decode()
        return json.loads(text) if text.strip() else None

    def _do_get(self, ticket: Dict[str, Any]) -> FeatureTable:
        with _translated():
            reader = self._flight.do_get(
                flight.Ticket(json.dumps(ticket).encode()), self._options()
            )
            return FeatureTable(reader.read_all())

    def clone(self) -> "Client":
        """A new client with the same settings and its own connection (e.g. for a worker
        process)."""
        return Client(
            self.location,
            timeout=self.timeout,
            headers=self.headers,
            token=self.token,
            batch_rows=self.batch_rows,
            **self._flight_kwargs,
        )

    def close(self) -> None:
        """Closes the connection."""
        with contextlib.suppress(Exception):
            self._flight.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"featherstore.Client({self.location!r})"

    def __getstate__(self) -> Dict[str, Any]:
        # Picklable (for DataLoader workers, Ray tasks): the connection is made anew.
        return {
            "location": self.location,
            "timeout": self.timeout,
            "headers": self.headers,
            "token": self.token,
            "batch_rows": self.batch_rows,
            "flight_kwargs": self._flight_kwargs,
        }

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["location"],
            timeout=state["timeout"],
            headers=state["headers"],
            token=state.get("token"),
            batch_rows=state["batch_rows"],
            **state["flight_kwargs"],
        )

    # -- feature sets -------------------------------------------------------------------------

    def create_feature_set(self, spec: Dict[str, Any]) -> Dict[str, Any]:
        """Stores a feature set spec and returns the stored spec (with ``version`` and
        ``created_at``).

        Creating the same spec again is a no-op that returns the stored one.

        Raises:
            AlreadyExistsError: a different spec is stored under that name.
            InvalidArgumentError: the spec is malformed.
        """
        return self._action("create_feature_set", spec)

    def update_feature_set(self, spec: Dict[str, Any]) -> Dict[str, Any]:
        """Changes a stored feature set in place: adds features (nullable; rows stored before
        read them as null), changes ``ttl_seconds``, ``description``, ``tags`` or a feature's
        ``description``. Returns ``{"spec": stored spec, "changes": [...]}``; each accepted
        change bumps ``version``, and the same spec again changes nothing.

        Raises:
            InvalidArgumentError: a change a stored set cannot take (removing, renaming or
                retyping a feature, another entity or timestamp column): use a new set.
            NotFoundError: no feature set has that name.
        """
        return self._action("update_feature_set", spec)

    def get_feature_set(self, name: str, version: Optional[int] = None) -> Dict[str, Any]:
        """The stored spec of `name` (or its version `version`), plus ``stats`` of the set:
        ``rows``, ``entities`` and ``latest_event_timestamp``.

        Raises:
            NotFoundError: no feature set has that name, or no such version.
        """
        body: Dict[str, Any] = {"name": name}
        if version is not None:
            body["version"] = version
        return self._action("get_feature_set", body)

    def list_feature_set_versions(self, name: str) -> List[Dict[str, Any]]:
        """Every stored version of the spec of `name`, oldest first.

        Raises:
            NotFoundError: no feature set has that name.
        """
        return list(self._action("list_feature_set_versions", {"name": name}) or [])

    def list_feature_sets(self) -> List[Dict[str, Any]]:
        """The stored specs of all feature sets."""
        result = self._action("list_feature_sets", {})
        return list(result or [])

    def delete_feature_set(self, name: str) -> None:
        """Deletes `name` and all of its data.

        Raises:
            NotFoundError: no feature set has that name.
        """
        self._action("delete_feature_set", {"name": name})

    # ---- feature services -------------------------------------------------------------

    def create_feature_service(self, service: Dict[str, Any]) -> Dict[str, Any]:
        """Stores a feature service: ``{"name", "features": ["set:feature", "set:*"],
        "description"?, "tags"?}``; returns it as stored (with ``created_at``). The same
        service again is a no-op.

        Raises:
            NotFoundError: a referenced feature set or feature does not exist.
            AlreadyExistsError: a different service is stored under that name.
            InvalidArgumentError: a bad name or reference.
        """
        return self._action("create_feature_service", service)

    def get_feature_service(self, name: str) -> Dict[str, Any]:
        """A stored feature service.

        Raises:
            NotFoundError: no feature service has that name.
        """
        return self._action("get_feature_service", {"name": name})

    def list_feature_services(self) -> List[Dict[str, Any]]:
        """Every stored feature service, by name."""
        return list(self._action("list_feature_services", {}) or [])

    def delete_feature_service(self, name: str) -> None:
        """Deletes a feature service (its feature sets and their data stay).

        Raises:
            NotFoundError: no feature service has that name.
        """
        self._action("delete_feature_service", {"name": name})

    def get_online_features_multi(
        self,
        entities: Mapping[str, Any],
        *,
        feature_service: Optional[str] = None,
        features: Optional[Sequence[str]] = None,
        full_names: bool = False,
        with_timestamps: bool = False,
    ) -> FeatureTable:
        """Online values across feature sets: a feature service's features, or
        ``"set:feature"`` / ``"set:*"`` references, for entity rows given column-wise.

        Args:
            entities: one key column per entity name of the sets read, e.g.
                ``{"user_id": ["u1", "u2"], "merchant_id": [7, 9]}`` (lists, Series or
                arrays), all of one length: one entity row per position.
            feature_service: the name of a stored feature service; or
            features: feature references, in output order.
            full_names: name features ``set__feature`` instead of ``feature``.
            with_timestamps: add each set's event time as ``set__event_timestamp``.

        Returns:
            A :class:`FeatureTable`: one row per entity row, in order, with the key columns,
            then the features in reference order (nulls for unknown entities and values past
            a set's ttl).

        Raises:
            NotFoundError: an unknown service, set or feature.
            InvalidArgumentError: a missing or extra key column, key columns of different
                lengths, a key of the wrong type, or a name clash without `full_names`.
            ResourceExhaustedError: more entity rows than the server allows in one request.
        """
        if (feature_service is None) == (features is None):
            raise TypeError("give exactly one of feature_service and features")
        ticket: Dict[str, Any] = {
            "type": "online",
            "entities": {name: _arrow.entity_list(keys) for name, keys in entities.items()},
            "full_names": bool(full_names),
            "with_timestamps": bool(with_timestamps),
        }
        if feature_service is not None:
            ticket["feature_service"] = feature_service
        else:
            if isinstance(features, str):
                raise TypeError("features must be a list of 'set:feature' strings, not one string")
            ticket["features"] = list(features or [])
        return self._do_get(ticket)

    def get_schema(self, name: str) -> pa.Schema:
        """The Arrow schema of feature set `name`: its entity, timestamp and feature columns
        with their Arrow types (Flight ``GetSchema``)."""
        with _translated():
            result = self._flight.get_schema(
                flight.FlightDescriptor.for_path(name), self._options()
            )
        return result.schema

    # -- ingest -------------------------------------------------------------------------------

    def ingest(
        self,
        feature_set: str,
        data: Any,
        *,
        batch_rows: Optional[int] = None,
        max_in_flight: int = 4,
    ) -> int:
        """Appends rows to `feature_set`, streamed to the server in record batches (DoPut).

        Columns are first conformed to the set's declared types: every cast that keeps each
        value is made (integers and whole-number floats into ``int32``/``int64`` within
        their range, integers and floats into ``float32``/``float64`` rounded to the nearest
        representable value, large/view strings and binaries, dictionaries decoded, lists of
        numbers into embeddings, timestamps of any unit and zone, dates into timestamps and
        midnight timestamps into dates). A timestamp without a time zone (a naive
        ``datetime``, pandas ``datetime64[ns]``) is read as UTC; ``datetime64[ns, tz]`` is the
        same instant in any zone. pandas' nullable dtypes (``Int64``, ``Float32``,
        ``boolean``, ``string``) and NaN in a float column are missing values. A value that
        does not fit (an int64 beyond int32's range, a float64 beyond float32's finite
        range, 2.5 into an integer feature) raises :class:`InvalidArgumentError` naming the
        column, the row (from 0) and the value; for a table or data frame this happens before
        anything is sent. docs/api.md lists the rules. (Conforming reads the set's schema: with
        a token that may write but not read, columns are sent as they are.)

        Args:
            feature_set: the feature set's name.
            data: a ``pyarrow.Table``, ``RecordBatch`` or ``RecordBatchReader``, a pandas
                DataFrame (a named index counts as a column), a polars DataFrame or
                LazyFrame, a dict of columns or a list of row dicts. It holds the entity
                column, the timestamp column and any subset of the declared features.
            batch_rows: rows per batch (default: the client's ``batch_rows``). Each batch is
                stored whole or not at all.
            max_in_flight: batches sent ahead of their acknowledgement.

        Returns:
            The number of rows the server acknowledged as durably stored.

        Raises:
            InvalidArgumentError: a value does not fit its declared type, or a batch was
                rejected (the message names the column); the batches acknowledged before it
                stay stored, and the error's ``rows_acknowledged`` tells how many rows they
                hold.
            NotFoundError: no feature set has that name.
        """
        try:
            declared: Optional[pa.Schema] = self.get_schema(feature_set)
        except PermissionDeniedError:
            # A token that may write but not read (scope `write` alone) cannot see the
            # schema: the columns go as they are, and the server checks them as always.
            declared = None
        try:
            schema, batches = _arrow.record_batches(
                data, batch_rows or self.batch_rows, declared=declared
            )
        except FeatherStoreError as e:
            e.rows_acknowledged = 0
            raise
        descriptor = flight.FlightDescriptor.for_path(feature_set)
        acked_rows = 0
        acked_batches = 0
        sent = 0

        def read_ack() -> None:
            nonlocal acked_rows, acked_batches
            buf = reader.read()
            if buf is None:
                # The call ended early: closing the writer reports the server's status.
                writer.close()
                raise FeatherStoreError(
                    f"the server closed the ingest of {feature_set!r} after acknowledging "
                    f"{acked_batches} of {sent} batches"
                )
            ack = json.loads(buf.to_pybytes().decode() or "{}")
            acked_rows += int(ack.get("rows", 0))
            acked_batches += 1

        try:
            with _translated():
                writer, reader = self._flight.do_put(descriptor, schema, self._options())
                try:
                    for batch in batches:
                        writer.write_batch(batch)
                        sent += 1
                        while sent - acked_batches > max(1, max_in_flight):
                            read_ack()
                    writer.done_writing()
                    while acked_batches < sent:
                        read_ack()
                    writer.close()
                except BaseException:
                    _quiet_close(writer)
                    raise
        except FeatherStoreError as e:
            e.rows_acknowledged = acked_rows
            raise
        return acked_rows

    # -- retrieval ----------------------------------------------------------------------------

    def get_online_features(
        self,
        feature_set: str,
        entities: Sequence[Any],
        features: Optional[Sequence[str]] = None,
    ) -> FeatureTable:
        """The online (latest) value of each entity.

        Args:
            feature_set: the feature set's name.
            entities: the entity keys (str or int, as the set declares): a list, a pandas or
                polars Series, a numpy or pyarrow array.
            features: the features to return, in this order (default: all, in spec order).

        Returns:
            A :class:`FeatureTable` (a pyarrow Table; ``.to_pandas()``, ``.to_polars()``)
            with the entity column, the features and the timestamp column: one row per
            requested entity, in request order, duplicates included. An unknown entity (or
            one past the set's ttl) gets its key and nulls.

        Raises:
            NotFoundError: an unknown feature set or feature.
        """
        ticket: Dict[str, Any] = {
            "type": "online",
            "feature_set": feature_set,
            "entities": _arrow.entity_list(entities),
        }
        if features is not None:
            ticket["features"] = list(features)
        return self._do_get(ticket)

    def get_history(
        self,
        feature_set: str,
        entities: Optional[Sequence[Any]] = None,
        start: Optional[TimeLike] = None,
        end: Optional[TimeLike] = None,
        features: Optional[Sequence[str]] = None,
        *,
        with_ingest_time: bool = False,
        ingested_before: Optional[TimeLike] = None,
    ) -> FeatureTable:
        """Every stored row with ``start <= event time < end`` (either side may be open).

        Args:
            feature_set: the feature set's name.
            entities: only these entity keys (default: all).
            start: inclusive lower bound: a ``datetime`` (naive means UTC), a ``date`` or an
                RFC 3339 string (default: unbounded).
            end: exclusive upper bound, as `start` (default: unbounded).
            features: the features to return, in this order (default: all).
            with_ingest_time: add the column ``ingested_at`` (UTC timestamp): when the server
                stored each row.
            ingested_before: only rows ingested strictly before this instant (as `start`):
                the history as it was known then.

        Returns:
            A :class:`FeatureTable` (a pyarrow Table; ``.to_pandas()``, ``.to_polars()``),
            rows ordered by entity, then event time, then ingest order; columns as for
            :meth:`get_online_features`, then ``ingested_at`` if asked for.

        Raises:
            NotFoundError: an unknown feature set or feature.
            InvalidArgumentError: a time that cannot be read.
        """
        ticket: Dict[str, Any] = {"type": "history", "feature_set": feature_set}
        if entities is not None:
            ticket["entities"] = _arrow.entity_list(entities)
        if start is not None:
            ticket["start"] = _arrow.format_time(start)
        if end is not None:
            ticket["end"] = _arrow.format_time(end)
        if features is not None:
            ticket["features"] = list(features)
        if with_ingest_time:
            ticket["with_ingest_time"] = True
        if ingested_before is not None:
            ticket["ingested_before"] = _arrow.format_time(ingested_before)
        return self._do_get(ticket)

    # -- training data ------------------------------------------------------------------------

    def _exchange(
        self,
        entity_df: Any,
        features: Optional[Sequence[str]],
        timestamp: str,
        full_names: bool,
        batch_rows: Optional[int],
        as_of: Optional[str] = None,
        feature_service: Optional[str] = None,
    ) -> Generator[Union[pa.Schema, pa.RecordBatch], None, None]:
        """Runs the training-data DoExchange: yields the result schema, then its batches."""
        if isinstance(features, str):
            raise TypeError("features must be a list of 'set:feature' strings, not one string")
        if (feature_service is None) == (features is None):
            raise TypeError("give exactly one of features and feature_service")
        command: Dict[str, Any] = {
            "type": "training_data",
            "timestamp": timestamp,
            "full_names": bool(full_names),
        }
        if feature_service is not None:
            command["feature_service"] = feature_service
        else:
            command["features"] = list(features or [])
        if as_of is not None:
            command["as_of"] = as_of
        schema, batches = _arrow.record_batches(entity_df, batch_rows or self.batch_rows)
        descriptor = flight.FlightDescriptor.for_command(json.dumps(command).encode())
        with _translated():
            writer, reader = self._flight.do_exchange(descriptor, self._options())
        finished = False
        try:
            with _translated():
                # The server receives (spools) every entity row before it answers, so writing
                # them all first cannot deadlock. It must not be done from a second thread:
                # a server that refuses the call ends the stream, and a write racing the
                # reader's end of the call aborts the process inside gRPC.
                try:
                    writer.begin(schema)
                    for batch in batches:
                        writer.write_batch(batch)
                    writer.done_writing()
                except _FLIGHT_ERRORS:
                    # The server ended the call early: its status is on the reading side.
                    pass
                yield reader.schema
                while True:
                    try:
                        chunk = reader.read_chunk()
                    except StopIteration:
                        break
                    if chunk.data is not None:
                        yield chunk.data
                writer.close()
                finished = True
        finally:
            if not finished:
                with contextlib.suppress(Exception):
                    reader.cancel()
                _quiet_close(writer)

    def iter_training_data(
        self,
        entity_df: Any,
        features: Optional[Sequence[str]] = None,
        timestamp: str = "event_timestamp",
        full_names: bool = False,
        *,
        batch_rows: Optional[int] = None,
        as_of: Optional[str] = None,
        feature_service: Optional[str] = None,
    ) -> Iterator[pa.RecordBatch]:
        """Streams a point-in-time correct training set (DoExchange ``training_data``).

        Args:
            entity_df: the entity rows (pyarrow, pandas, polars, ...): each referenced set's
                entity column, the `timestamp` column and any other columns (labels), which
                pass through unchanged.
            features: ``"set:feature"`` references; ``"set:*"`` means all of a set's
                features in spec order.
            feature_service: a stored feature service whose features are read, in place of
                `features` (give exactly one of them).
            timestamp: the name of the time column in `entity_df`.
            full_names: name the added columns ``set__feature`` instead of ``feature``.
            batch_rows: rows per batch sent (default: the client's ``batch_rows``).
            as_of: which stored values count for a row at time t: ``"event_time"`` (the
                server's default when not given: event time <= t) or ``"ingest_time"``
                (event time <= t and ingested by t: the data as the store knew it at t, so
                values that arrived late do not leak into earlier rows).

        Yields:
            ``pyarrow.RecordBatch`` es with the same rows in the same order, each with the
            value of every requested feature as of the row's time appended (null where there
            is none); ``batch.to_pandas()`` or ``polars.from_arrow(batch)`` converts one. The
            stream is lazy: nothing is sent before the first batch is asked for.

        Raises:
            NotFoundError: an unknown feature set or feature.
            InvalidArgumentError: missing entity/time column, a name clash without
                `full_names`, or an `as_of` other than ``"event_time"``/``"ingest_time"``.
        """
        stream = self._exchange(
            entity_df,
            features,
            timestamp,
            full_names,
            batch_rows,
            as_of=as_of,
            feature_service=feature_service,
        )
        try:
            next(stream)  # the schema
            for batch in stream:
                yield batch  # type: ignore[misc]
        finally:
            stream.close()

    def get_training_data(
        self,
        entity_df: Any,
        features: Optional[Sequence[str]] = None,
        timestamp: str = "event_timestamp",
        full_names: bool = False,
        *,
        batch_rows: Optional[int] = None,
        as_of: Optional[str] = None,
        feature_service: Optional[str] = None,
    ) -> FeatureTable:
        """The whole point-in-time correct training set, rows in the order of `entity_df`.

        Args: as for :meth:`iter_training_data`.

        Returns:
            A :class:`FeatureTable` (a pyarrow Table; ``.to_pandas()``, ``.to_polars()``):
            the rows of `entity_df` with the value of each requested feature as of each
            row's time appended (null where there is none).

        Raises:
            NotFoundError: an unknown feature set or feature.
            InvalidArgumentError: missing entity/time column, a name clash without
                `full_names`, or an `as_of` other than ``"event_time"``/``"ingest_time"``.
        """
        stream = self._exchange(
            entity_df,
            features,
            timestamp,
            full_names,
            batch_rows,
            as_of=as_of,
            feature_service=feature_service,
        )
        try:
            schema = next(stream)
            batches = list(stream)
        finally:
            stream.close()
        return FeatureTable(pa.Table.from_batches(batches, schema=schema))  # type: ignore[arg-type]
