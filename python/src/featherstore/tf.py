"""TensorFlow: training data streamed from FeatherStore as a ``tf.data.Dataset``.

Example::

    from featherstore.tf import training_dataset

    ds = training_dataset(client, labels_df, ["user_features:*"], label="clicked",
                          batch_size=256)
    model.fit(ds, epochs=3)

Importing this module imports tensorflow; ``import featherstore`` alone does not.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional, Sequence, Union

try:
    import tensorflow as tf
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "featherstore.tf needs TensorFlow: pip install tensorflow-cpu "
        "(or 'featherstore[tensorflow]')"
    ) from e

from . import _tensors
from .client import Client

__all__ = ["training_dataset"]


def training_dataset(
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
) -> "tf.data.Dataset":
    """Point-in-time correct training rows as a ``tf.data.Dataset``.

    Elements are ``(features, label)`` with ``features`` a ``TensorSpec((num_inputs,),
    tf.float32)`` (numeric features side by side; an embedding ``float32[N]`` takes N
    places) and ``label`` a ``TensorSpec((), tf.int64)`` for an integer label column or
    ``tf.float32`` otherwise. Without a `label`, elements are the features alone. With
    `batch_size`, elements are batches (leading dimension ``None``).

    The data is streamed from the server each time the dataset is iterated (each epoch).
    Null feature values become `fill_null`. Arguments are those of
    :class:`featherstore.torch.TrainingDataset`.
    """
    fs = client if isinstance(client, Client) else Client(client)
    entities = _tensors.as_table(entity_df)
    columns = _tensors.feature_columns(
        fs, list(features), full_names, feature_columns, entities.schema
    )
    width = sum(c.width for c in columns)
    x_spec = tf.TensorSpec(shape=(None, width), dtype=tf.float32)
    if label is not None:
        y_dtype = tf.int64 if _tensors.label_kind(entities.schema, label) == "int64" else tf.float32
        signature: Any = (x_spec, tf.TensorSpec(shape=(None,), dtype=y_dtype))
    else:
        signature = x_spec
    refs = list(features)

    def generate() -> Iterator[Any]:
        if entities.num_rows == 0:
            return
        for batch in fs.iter_training_data(entities, refs, timestamp, full_names):
            x, y = _tensors.batch_to_numpy(batch, columns, label, fill_null)
            yield (x, y) if label is not None else x

    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature).unbatch()
    if batch_size is not None:
        dataset = dataset.batch(batch_size)
    return dataset
