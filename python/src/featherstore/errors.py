"""Exceptions raised by the FeatherStore client.

Every error the server reports reaches the caller as a :class:`FeatherStoreError` subclass that
carries the server's own message (``str(err)`` / ``err.message``) and its status (``err.code``,
the gRPC status name such as ``"NOT_FOUND"``). The original pyarrow exception is chained as
``__cause__``.
"""

from __future__ import annotations

import re
from typing import Optional, Type

__all__ = [
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
]


class FeatherStoreError(Exception):
    """Base class of every error the client raises for a failed server call.

    Attributes:
        message: the server's message, without pyarrow's transport decorations.
        code: the gRPC status name (``"NOT_FOUND"``, ``"INVALID_ARGUMENT"``, ...), or ``None``
            when the status could not be told.
        rows_acknowledged: for a failed :meth:`Client.ingest`, the rows stored before the
            failure (``None`` elsewhere).
    """

    default_code: Optional[str] = None
    rows_acknowledged: Optional[int] = None

    def __init__(self, message: str, code: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code if code is not None else self.default_code

    def __str__(self) -> str:
        return self.message


class NotFoundError(FeatherStoreError, LookupError):
    """An unknown feature set or feature (Flight ``NOT_FOUND``)."""

    default_code = "NOT_FOUND"


class InvalidArgumentError(FeatherStoreError, ValueError):
    """A bad spec, ticket, batch, type or timestamp (Flight ``INVALID_ARGUMENT``)."""

    default_code = "INVALID_ARGUMENT"


class AlreadyExistsError(FeatherStoreError):
    """A different spec is already stored under that name (Flight ``ALREADY_EXISTS``)."""

    default_code = "ALREADY_EXISTS"


class FailedPreconditionError(FeatherStoreError):
    """The state refuses the call: deleting a feature set a feature service uses
    (Flight ``FAILED_PRECONDITION``)."""

    default_code = "FAILED_PRECONDITION"


class ResourceExhaustedError(FeatherStoreError):
    """A request over a configured limit (Flight ``RESOURCE_EXHAUSTED``)."""

    default_code = "RESOURCE_EXHAUSTED"


class UnauthenticatedError(FeatherStoreError):
    """Missing or wrong credentials (Flight ``UNAUTHENTICATED``)."""

    default_code = "UNAUTHENTICATED"


class PermissionDeniedError(FeatherStoreError):
    """The credentials do not allow the call (Flight ``PERMISSION_DENIED``)."""

    default_code = "PERMISSION_DENIED"


class UnimplementedError(FeatherStoreError, NotImplementedError):
    """The server does not implement the call (Flight ``UNIMPLEMENTED``)."""

    default_code = "UNIMPLEMENTED"


class UnavailableError(FeatherStoreError, ConnectionError):
    """The server cannot be reached (Flight ``UNAVAILABLE``)."""

    default_code = "UNAVAILABLE"


class InternalError(FeatherStoreError):
    """A fault of the server (Flight ``INTERNAL``)."""

    default_code = "INTERNAL"


_BY_CODE: dict = {
    "NOT_FOUND": NotFoundError,
    "INVALID_ARGUMENT": InvalidArgumentError,
    "ALREADY_EXISTS": AlreadyExistsError,
    "FAILED_PRECONDITION": FailedPreconditionError,
    "RESOURCE_EXHAUSTED": ResourceExhaustedError,
    "UNAUTHENTICATED": UnauthenticatedError,
    "PERMISSION_DENIED": PermissionDeniedError,
    "UNIMPLEMENTED": UnimplementedError,
    "UNAVAILABLE": UnavailableError,
    "INTERNAL": InternalError,
}

# The words pyarrow puts in "Flight returned <words> error, with message: ..." (or "gRPC
# returned ..."), by gRPC status.
_BY_WORDS = {
    "not found": "NOT_FOUND",
    "invalid argument": "INVALID_ARGUMENT",
    "already exists": "ALREADY_EXISTS",
    "resource exhausted": "RESOURCE_EXHAUSTED",
    "unauthenticated": "UNAUTHENTICATED",
    "unauthorized": "PERMISSION_DENIED",
    "unimplemented": "UNIMPLEMENTED",
    "unavailable": "UNAVAILABLE",
    "internal": "INTERNAL",
    "precondition failed": "FAILED_PRECONDITION",
    "out-of-range": "OUT_OF_RANGE",
    "aborted": "ABORTED",
    "data loss": "DATA_LOSS",
    "timed out": "DEADLINE_EXCEEDED",
    "cancelled": "CANCELLED",
    "unknown": "UNKNOWN",
}

_RETURNED = re.compile(
    r"(?:Flight|gRPC) returned (?P<words>[a-z -]+?) error, with message: (?P<message>.*)",
    re.DOTALL,
)
_DEBUG_CONTEXT = re.compile(r"gRPC client debug context: (?P<code>[A-Z_]+):")
# pyarrow appends these to the server's message; cut at the first one.
_TAILS = (". gRPC client debug context:", ". Client context:", ". Detail:")


def _parse(text: str) -> "tuple[Optional[str], str]":
    """Splits a pyarrow Flight error text into (gRPC status name, server message)."""
    code: Optional[str] = None
    message = text
    match = _RETURNED.search(text)
    if match:
        code = _BY_WORDS.get(match.group("words"))
        message = match.group("message")
    cuts = [i for i in (message.find(tail) for tail in _TAILS) if i >= 0]
    if cuts:
        message = message[: min(cuts)]
    debug = _DEBUG_CONTEXT.search(text)
    if debug:
        code = debug.group("code")
    return code, message


def from_flight_error(error: BaseException) -> FeatherStoreError:
    """Converts a pyarrow Flight/Arrow exception into the matching :class:`FeatherStoreError`."""
    if isinstance(error, FeatherStoreError):
        return error
    import pyarrow as pa
    import pyarrow.flight as flight

    code, message = _parse(str(error))
    if code is None:
        # Fall back on the exception type where the text said nothing.
        if isinstance(error, flight.FlightUnavailableError):
            code = "UNAVAILABLE"
        elif isinstance(error, flight.FlightUnauthenticatedError):
            code = "UNAUTHENTICATED"
        elif isinstance(error, flight.FlightUnauthorizedError):
            code = "PERMISSION_DENIED"
        elif isinstance(error, flight.FlightInternalError):
            code = "INTERNAL"
        elif isinstance(error, flight.FlightTimedOutError):
            code = "DEADLINE_EXCEEDED"
        elif isinstance(error, pa.ArrowKeyError):
            code = "NOT_FOUND"
        elif isinstance(error, pa.ArrowNotImplementedError):
            code = "UNIMPLEMENTED"
        elif isinstance(error, pa.ArrowInvalid):
            code = "INVALID_ARGUMENT"
    cls: Type[FeatherStoreError] = _BY_CODE.get(code or "", FeatherStoreError)
    return cls(message, code)


def is_flight_error(error: BaseException) -> bool:
    """True for the exceptions pyarrow raises for a failed Flight call."""
    import pyarrow as pa
    import pyarrow.flight as flight

    return isinstance(error, (flight.FlightError, pa.ArrowException, OSError))
