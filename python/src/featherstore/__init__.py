"""FeatherStore: a Python client for the FeatherStore real-time feature store.

Quick start::

    import featherstore
    fs = featherstore.Client("grpc://localhost:8081")
    fs.ingest("user_features", df)         # pandas, polars or pyarrow; types conformed
    fs.get_online_features("user_features", ["u1", "u2"]).to_pandas()

``help(featherstore.Client)`` walks through declaring a set, ingesting and reading. Reads
return a :class:`FeatureTable`: a pyarrow Table with ``to_pandas()`` and ``to_polars()``.

The base package needs only pyarrow. pandas and polars inputs are converted when given;
``featherstore.torch``, ``featherstore.tf`` and ``featherstore.ray`` import their framework
only when used.
"""

from ._table import FeatureTable
from .client import Client
from .errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    FeatherStoreError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
    UnimplementedError,
)

__version__ = "0.1.0"

__all__ = [
    "Client",
    "FeatureTable",
    "FeatherStoreError",
    "NotFoundError",
    "InvalidArgumentError",
    "AlreadyExistsError",
    "FailedPreconditionError",
    "ResourceExhaustedError",
    "UnauthenticatedError",
    "PermissionDeniedError",
    "UnimplementedError",
    "UnavailableError",
    "InternalError",
    "__version__",
]
