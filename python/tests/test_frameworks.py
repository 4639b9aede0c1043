"""The PyTorch, TensorFlow and Ray adapters against the real frameworks and the real server.

One backend is enough here: the adapters only consume the client's streams.
"""

from __future__ import annotations

import math
from typing import Iterator, Tuple

import pyarrow as pa
import pytest

import featherstore
from conftest import (
    TS,
    require_framework,
    skip_if_no_training_data,
    unique,
    user_rows,
    user_spec,
    utc,
)

pytestmark = pytest.mark.framework

N = 300  # entity rows


@pytest.fixture
def training(one_client: featherstore.Client) -> Iterator[Tuple[str, pa.Table]]:
    """A feature set with history, and N entity rows with a label and expected values."""
    name = unique("fw")
    one_client.create_feature_set(user_spec(name))
    one_client.ingest(
        name,
        user_rows(
            [
                {
                    "user_id": f"u{i}",
                    "event_timestamp": utc(2026, 1, 1),
                    "age": i,
                    "ctr_7d": i / 100,
                    "country": "DE",
                    "embedding": [i, i + 1, i + 2, i + 3],
                }
                for i in range(10)
            ]
            + [
                # a later value that the entity rows, as of 2026-01-02, must not see
                {"user_id": "u0", "event_timestamp": utc(2026, 1, 3), "age": 1000}
            ]
        ),
    )
    rows = pa.table(
        {
            "user_id": [f"u{i % 12}" for i in range(N)],  # u10, u11 are unknown: nulls
            "event_timestamp": pa.array([utc(2026, 1, 2)] * N, TS),
            "label": pa.array([i % 2 for i in range(N)], pa.int64()),
        }
    )
    yield name, rows
    one_client.delete_feature_set(name)


def expected_row(i: int) -> list:
    k = i % 12
    if k >= 10:
        return [math.nan] * 6
    return [float(k), k / 100, float(k), k + 1.0, k + 2.0, k + 3.0]


def assert_rows(features, labels, start: int = 0) -> None:
    for j, (x, y) in enumerate(zip(features, labels)):
        i = start + j
        want = expected_row(i)
        got = [float(v) for v in x]
        assert len(got) == 6
        for g, w in zip(got, want):
            assert (math.isnan(g) and math.isnan(w)) or g == pytest.approx(w, rel=1e-6), (
                i,
                got,
                want,
            )
        assert int(y) == i % 2


FEATURES_TAIL = ["age", "ctr_7d", "embedding"]


def test_import_featherstore_needs_no_framework() -> None:
    import subprocess
    import sys

    code = (
        "import sys, featherstore; "
        "names = ('torch', 'tensorflow', 'ray', 'pandas', 'polars'); "
        "print(sorted(m for m in names if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_torch_dataset(one_client: featherstore.Client, training) -> None:
    torch = require_framework("torch")
    skip_if_no_training_data(one_client)
    from torch.utils.data import DataLoader

    from featherstore.torch import TrainingDataset

    name, rows = training
    refs = [f"{name}:{f}" for f in FEATURES_TAIL]
    ds = TrainingDataset(one_client, rows, refs, label="label")
    assert isinstance(ds, torch.utils.data.IterableDataset)
    assert ds.num_inputs == 6 and ds.num_rows == N
    loader = DataLoader(ds, batch_size=64)
    xs, ys = [], []
    for x, y in loader:
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape[1] == 6 and x.shape[0] == y.shape[0] <= 64
        xs.append(x)
        ys.append(y)
    x, y = torch.cat(xs), torch.cat(ys)
    assert x.shape == (N, 6)
    assert_rows(x, y)
    # the tensors train: one optimizer step on the non-null rows
    model = torch.nn.Linear(6, 2)
    mask = ~torch.isnan(x).any(dim=1)
    loss = torch.nn.functional.cross_entropy(model(x[mask]), y[mask])
    loss.backward()
    assert model.weight.grad is not None


def test_torch_dataset_batches_and_workers(one_client: featherstore.Client, training) -> None:
    torch = require_framework("torch")
    skip_if_no_training_data(one_client)
    from torch.utils.data import DataLoader

    from featherstore.torch import TrainingDataset

    name, rows = training
    ds = TrainingDataset(
        one_client.location,
        rows.to_pandas() if _has("pandas") else rows,
        [f"{name}:age", f"{name}:ctr_7d", f"{name}:embedding"],
        label="label",
        batch_size=100,
        fill_null=-1.0,
    )
    sizes = [len(x) for x, _ in ds]
    assert sizes == [100, 100, 100]
    # two worker processes (spawned): every row exactly once
    seen = sorted(int(v) for x, _ in ds.loader(num_workers=2) for v in x[:, 0])
    assert len(seen) == N
    expected = sorted(int(expected_row(i)[0]) if i % 12 < 10 else -1 for i in range(N))
    assert seen == expected
    # forked workers would hang in gRPC: they fail with a clear message instead
    forked = DataLoader(ds, batch_size=None, num_workers=1, multiprocessing_context="fork")
    with pytest.raises(RuntimeError, match="spawn"):
        list(forked)
    # no label: features only
    plain = TrainingDataset(one_client, rows, [f"{name}:age"])
    first = next(iter(plain))
    assert isinstance(first, torch.Tensor) and first.shape == (1,)


def test_torch_rejects_non_numeric_feature(one_client: featherstore.Client, training) -> None:
    require_framework("torch")
    from featherstore.torch import TrainingDataset

    name, rows = training
    with pytest.raises(TypeError, match="country"):
        TrainingDataset(one_client, rows, [f"{name}:*"], label="label")
    ds = TrainingDataset(
        one_client, rows, [f"{name}:*"], label="label", feature_columns=["age", "embedding"]
    )
    assert ds.num_inputs == 5


def test_tensorflow_dataset(one_client: featherstore.Client, training) -> None:
    tf = require_framework("tensorflow")
    skip_if_no_training_data(one_client)
    from featherstore.tf import training_dataset

    name, rows = training
    refs = [f"{name}:{f}" for f in FEATURES_TAIL]
    ds = training_dataset(one_client, rows, refs, label="label")
    assert isinstance(ds, tf.data.Dataset)
    x_spec, y_spec = ds.element_spec
    assert x_spec == tf.TensorSpec(shape=(6,), dtype=tf.float32)
    assert y_spec == tf.TensorSpec(shape=(), dtype=tf.int64)
    items = list(ds.as_numpy_iterator())
    assert len(items) == N
    assert_rows([x for x, _ in items], [y for _, y in items])

    unlabelled = training_dataset(one_client, rows, refs)
    assert unlabelled.element_spec == tf.TensorSpec(shape=(6,), dtype=tf.float32)
    assert sum(1 for _ in unlabelled) == N

    batched = training_dataset(one_client, rows, refs, label="label", batch_size=128)
    x_spec, y_spec = batched.element_spec
    assert x_spec.shape.as_list() == [None, 6] and y_spec.shape.as_list() == [None]
    assert [int(x.shape[0]) for x, _ in batched] == [128, 128, 44]
    # a Keras model fits on it (nulls filled with 0)
    filled = training_dataset(
        one_client, rows, refs, label="label", batch_size=64, fill_null=0.0
    ).map(lambda x, y: (x, tf.cast(y, tf.float32)))
    model = tf.keras.Sequential([tf.keras.Input(shape=(6,)), tf.keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    history = model.fit(filled, epochs=1, verbose=0)
    assert len(history.history["loss"]) == 1


@pytest.fixture(scope="module")
def ray_cluster():
    """A local one-CPU Ray cluster for this module, shut down afterwards."""
    ray = require_framework("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    if started:
        ray.shutdown()


def test_ray_dataset(one_client: featherstore.Client, training, ray_cluster) -> None:
    ray = ray_cluster
    skip_if_no_training_data(one_client)
    import featherstore.ray as fray

    name, rows = training
    ds = fray.training_dataset(one_client, rows, [f"{name}:age", f"{name}:ctr_7d"], block_rows=128)
    assert isinstance(ds, ray.data.Dataset)
    assert ds.count() == N
    table = pa.concat_tables(ray.get(ref) for ref in ds.to_arrow_refs())
    assert table.column("user_id").to_pylist() == rows.column("user_id").to_pylist()
    assert table.column("age").to_pylist()[:12] == list(range(10)) + [None, None]
    assert set(ds.schema().names) >= {"user_id", "event_timestamp", "label", "age", "ctr_7d"}


def test_ray_online_and_history(one_client: featherstore.Client, training, ray_cluster) -> None:
    import featherstore.ray as fray

    name, _ = training
    online = fray.online_dataset(one_client, name, ["u0", "u1", "nobody"], features=["age"])
    assert [r["age"] for r in online.take_all()] == [1000, 1, None]
    history = fray.history_dataset(one_client, name, entities=["u0"])
    assert history.count() == 2


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True
