"""PyTorch: training data streamed from FeatherStore as an ``IterableDataset``.

Example::

    from torch.utils.data import DataLoader
    from featherstore.torch import TrainingDataset

    ds = TrainingDataset(client, labels_df, ["user_features:*"], label="clicked")
    for x, y in DataLoader(ds, batch_size=256):
        ...

Importing this module imports torch; ``import featherstore`` alone does not.
"""

from __future__ import annotations

import os
from typing import Any, Iterator, Optional, Sequence, Tuple, Union

try:
    import torch
    from torch.utils.data import DataLoader, IterableDataset, get_worker_info
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("featherstore.torch needs PyTorch: pip install 'featherstore[torch]'") from e

from . import _tensors
from .client import Client

__all__ = ["TrainingDataset", "training_dataset"]

Item = Union["torch.Tensor", Tuple["torch.Tensor", "torch.Tensor"]]


class TrainingDataset(IterableDataset):  # type: ignore[type-arg]
    """Point-in-time correct training rows, streamed from the server as tensors.

    Each item is ``(features, label)``: ``features`` a float32 tensor of shape
    ``[num_inputs]`` (the numeric features side by side, an embedding ``float32[N]`` taking
    N places), ``label`` a scalar tensor (int64 for an integer label column, float32
    otherwise). Without a `label` an item is the features tensor alone. With `batch_size`
    each item is already a batch (``[batch, num_inputs]`` and ``[batch]``); then use
    ``DataLoader(ds, batch_size=None)``.

    Null feature values (no value as of the row's time, or a null value) become `fill_null`.

    With ``num_workers=k`` every worker streams its own contiguous slice of the entity rows
    over its own connection, so each row is seen once per epoch. Workers must be started
    with ``spawn`` or ``forkserver`` (gRPC hangs after ``fork``): use :meth:`loader`, or
    ``DataLoader(ds, num_workers=k, multiprocessing_context="spawn")``. Each epoch streams
    the data again from the server.

    Args:
        client: a :class:`featherstore.Client` or its Flight address.
        entity_df: the entity rows (pyarrow, pandas, polars, ...) with the entity columns, the
            `timestamp` column and the label.
        features: ``"set:feature"`` / ``"set:*"`` references, as for
            :meth:`Client.get_training_data`.
        label: the name of the label column in `entity_df`, or None.
        timestamp: the time column of `entity_df`.
        full_names: name the feature columns ``set__feature``.
        feature_columns: the columns that make up the features tensor, in order (default:
            every requested feature; all must be numeric or fixed-size numeric lists).
        batch_size: yield whole batches of this many rows instead of single rows.
        fill_null: the value of a missing feature.
    """

    def __init__(
        self,
        client: Union[Client, str],
        entity_df: Any,
        features: Sequence[str],
        label: Optional[str] = None,
        *,
        timestamp: str = "event_timestamp",
        full_names: bool = False,
        feature_columns: Optional[Sequence[str]] = None,
        batch_size: Optional[int] = None,
        fill_null: float = float("nan"),
    ) -> None:
        super().__init__()
        self.client = client if isinstance(client, Client) else Client(client)
        self.entities = _tensors.as_table(entity_df)
        self.features = list(features)
        self.label = label
        self.timestamp = timestamp
        self.full_names = full_names
        self.batch_size = batch_size
        self.fill_null = fill_null
        self.columns = _tensors.feature_columns(
            self.client, self.features, full_names, feature_columns, self.entities.schema
        )
        if label is not None:
            _tensors.label_kind(self.entities.schema, label)
        self.num_inputs = sum(c.width for c in self.columns)

    def loader(self, num_workers: int = 0, **kwargs: Any) -> "DataLoader":
        """A ``DataLoader`` over this dataset, with worker processes started by ``spawn``
        (gRPC does not survive ``fork``). Without `batch_size` here, the loader batches the
        rows (``batch_size=1`` by default, as ``DataLoader``); when the dataset batches
        (``TrainingDataset(..., batch_size=n)``) the loader passes its batches through."""
        if num_workers > 0:
            kwargs.setdefault("multiprocessing_context", "spawn")
        if self.batch_size is not None:
            kwargs.setdefault("batch_size", None)
        return DataLoader(self, num_workers=num_workers, **kwargs)

    @property
    def num_rows(self) -> int:
        """The number of entity rows, hence of items per epoch (before batching)."""
        return self.entities.num_rows

    def _batches(self) -> Iterator[Tuple["torch.Tensor", Optional["torch.Tensor"]]]:
        info = get_worker_info()
        if info is None:
            client, rows = self.client, self.entities
        else:
            if getattr(self.client, "_pid", None) != os.getpid():
                raise RuntimeError(
                    "featherstore.torch: this DataLoader worker was forked from a process that "
                    "already uses gRPC, and gRPC connections hang after fork. Start workers with "
                    "DataLoader(..., multiprocessing_context='spawn') (or 'forkserver'), or use "
                    "TrainingDataset.loader(num_workers=...), which does."
                )
            # A worker streams its own slice of the rows over its own connection.
            client = self.client
            rows = _tensors.shard(self.entities, info.id, info.num_workers)
        if rows.num_rows == 0:
            return
        for batch in client.iter_training_data(
            rows, self.features, self.timestamp, self.full_names
        ):
            x, y = _tensors.batch_to_numpy(batch, self.columns, self.label, self.fill_null)
            yield torch.from_numpy(x), (torch.from_numpy(y) if y is not None else None)

    def __iter__(self) -> Iterator[Item]:
        if self.batch_size is None:
            for x, y in self._batches():
                if y is None:
                    yield from x
                else:
                    yield from zip(x, y)
            return
        yield from self._rebatched(self.batch_size)

    def _rebatched(self, size: int) -> Iterator[Item]:
        pending_x: list = []
        pending_y: list = []
        held = 0
        for x, y in self._batches():
            pending_x.append(x)
            if y is not None:
                pending_y.append(y)
            held += len(x)
            while held >= size:
                all_x = torch.cat(pending_x)
                all_y = torch.cat(pending_y) if pending_y else None
                yield (all_x[:size], all_y[:size]) if all_y is not None else all_x[:size]
                pending_x = [all_x[size:]]
                pending_y = [all_y[size:]] if all_y is not None else []
                held -= size
        if held:
            all_x = torch.cat(pending_x)
            all_y = torch.cat(pending_y) if pending_y else None
            yield (all_x, all_y) if all_y is not None else all_x


def training_dataset(
    client: Union[Client, str],
    entity_df: Any,
    features: Sequence[str],
    label: Optional[str] = None,
    **kwargs: Any,
) -> TrainingDataset:
    """Same as :class:`TrainingDataset` (a function form, alike in the tf and ray modules)."""
    return TrainingDataset(client, entity_df, features, label, **kwargs)
