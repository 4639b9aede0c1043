"""FeatherStore: a Python client for the FeatherStore real-time feature store.

Quick start::

    import featherstore
    fs = featherstore.Client("grpc://localhost:8081")
    fs.get_online_features("user_features", ["u1", "u2"])

The base package needs only pyarrow. pandas and polars inputs are converted when given;
``featherstore.torch``, ``featherstore.tf`` and ``featherstore.ray`` import their framework
only when used.
"""

from .client import Client
from .errors import (
    AlreadyExistsError,
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
    "FeatherStoreError",
    "NotFoundError",
    "InvalidArgumentError",
    "AlreadyExistsError",
    "ResourceExhaustedError",
    "UnauthenticatedError",
    "PermissionDeniedError",
    "UnimplementedError",
    "UnavailableError",
    "InternalError",
    "__version__",
]
