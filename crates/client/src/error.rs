//! The client's error type: a server status with its message, or a failure on this side.

use arrow::error::ArrowError;
use arrow_flight::error::FlightError;
pub use featherstore_core::ErrorCode;
use featherstore_core::ERROR_CODE_METADATA;
pub use tonic::Code;

/// Everything a [`Client`](crate::Client) call can fail with.
///
/// Errors the server reports keep its gRPC status code and message (PROTOCOL.md, "Errors"),
/// and its typed [`ErrorCode`] ([`Error::error_code`]): the same code an HTTP error body's
/// `error.code` names.
///
/// ```no_run
/// # async fn run(client: featherstore_client::Client) -> featherstore_client::Result<()> {
/// match client.get_feature_set("no_such_set").await {
///     Ok(info) => println!("{} rows", info.stats.rows),
///     Err(e) if e.is_not_found() => println!("not there: {}", e.message()),
///     Err(e) => return Err(e),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with an error status. Transport failures after connecting (the
    /// server went away) also arrive here, as `UNAVAILABLE` or `UNKNOWN`.
    #[error("{message} ({})", code_name(*code))]
    Server {
        code: Code,
        /// The server's own code, sent with the status; for a status without it (a
        /// transport failure, another server), read from the gRPC code where that is
        /// unambiguous. `None` for a gRPC code outside PROTOCOL.md's table.
        error_code: Option<ErrorCode>,
        message: String,
    },
    /// The address given to [`Client::connect`](crate::Client::connect) is not usable.
    #[error("invalid server address {address:?}: {reason}")]
    InvalidAddress { address: String, reason: String },
    /// No connection could be made to the server.
    #[error("cannot connect to {address}: {reason}")]
    Connect { address: String, reason: String },
    /// A request was rejected on this side before it was sent.
    #[error("{0}")]
    InvalidArgument(String),
    /// A value does not fit the type its feature set declares for its column (see
    /// [`conform_batch`](crate::conform_batch)).
    #[error(transparent)]
    Conform(#[from] crate::ConformError),
    /// A setting of the client is not usable: a token that is no header value, a CA or
    /// client certificate file that cannot be read.
    #[error("invalid client setting: {0}")]
    Setting(String),
    /// The server's answer was not what PROTOCOL.md describes.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    /// Encoding or decoding Arrow data failed.
    #[error("arrow: {0}")]
    Arrow(#[from] ArrowError),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The gRPC status code of an error the server reported.
    pub fn code(&self) -> Option<Code> {
        match self {
            Error::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The typed code of the failure, as an HTTP error body would name it: the server's
    /// for an error it reported, `invalid_argument` for a request rejected on this side,
    /// `unavailable` when no connection could be made. `None` for other failures on this
    /// side (an unusable setting, an answer that breaks the protocol, an Arrow error).
    pub fn error_code(&self) -> Option<ErrorCode> {
        match self {
            Error::Server { error_code, .. } => *error_code,
            Error::InvalidArgument(_) | Error::Conform(_) => Some(ErrorCode::InvalidArgument),
            Error::Connect { .. } => Some(ErrorCode::Unavailable),
            Error::InvalidAddress { .. }
            | Error::Setting(_)
            | Error::Protocol(_)
            | Error::Arrow(_) => None,
        }
    }

    /// The server's message for a server error, otherwise the error's text.
    pub fn message(&self) -> String {
        match self {
            Error::Server { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }

    /// An unknown feature set or feature (`NOT_FOUND`).
    pub fn is_not_found(&self) -> bool {
        self.error_code() == Some(ErrorCode::NotFound)
    }

    /// A different spec already stored under the name (`ALREADY_EXISTS`).
    pub fn is_already_exists(&self) -> bool {
        self.error_code() == Some(ErrorCode::AlreadyExists)
    }

    /// A bad spec, ticket, batch, type or timestamp, rejected by the server
    /// (`INVALID_ARGUMENT`) or by the client before sending ([`Error::InvalidArgument`]).
    pub fn is_invalid_argument(&self) -> bool {
        self.error_code() == Some(ErrorCode::InvalidArgument)
    }

    /// A request over a configured limit of the server, or too many of one client at once
    /// (`RESOURCE_EXHAUSTED`: [`ErrorCode::TooLarge`] or [`ErrorCode::TooManyRequests`]).
    pub fn is_resource_exhausted(&self) -> bool {
        self.code() == Some(Code::ResourceExhausted)
    }

    /// No token, or one the server does not know (`UNAUTHENTICATED`).
    pub fn is_unauthenticated(&self) -> bool {
        self.error_code() == Some(ErrorCode::Unauthenticated)
    }

    /// The token lacks the scope or the feature set the call needs (`PERMISSION_DENIED`).
    pub fn is_permission_denied(&self) -> bool {
        self.error_code() == Some(ErrorCode::Forbidden)
    }

    /// The server could not be reached: no connection, or it went away (`UNAVAILABLE`).
    pub fn is_unavailable(&self) -> bool {
        self.error_code() == Some(ErrorCode::Unavailable)
    }

    pub(crate) fn protocol(message: impl Into<String>) -> Self {
        Error::Protocol(message.into())
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        let sent = status
            .metadata()
            .get(ERROR_CODE_METADATA)
            .and_then(|value| value.to_str().ok())
            .and_then(|text| text.parse().ok());
        Error::Server {
            code: status.code(),
            error_code: sent.or_else(|| error_code_of(status.code())),
            message: status.message().to_string(),
        }
    }
}

/// The typed code of a status that does not carry one. RESOURCE_EXHAUSTED is read as
/// `too_large`, the limit PROTOCOL.md gives it; OUT_OF_RANGE is how tonic reports a message
/// over the size limit. The codes PROTOCOL.md does not use have none.
fn error_code_of(code: Code) -> Option<ErrorCode> {
    Some(match code {
        Code::NotFound => ErrorCode::NotFound,
        Code::InvalidArgument => ErrorCode::InvalidArgument,
        Code::AlreadyExists => ErrorCode::AlreadyExists,
        Code::FailedPrecondition => ErrorCode::FailedPrecondition,
        Code::ResourceExhausted | Code::OutOfRange => ErrorCode::TooLarge,
        Code::Unauthenticated => ErrorCode::Unauthenticated,
        Code::PermissionDenied => ErrorCode::Forbidden,
        Code::Unavailable => ErrorCode::Unavailable,
        Code::DeadlineExceeded => ErrorCode::DeadlineExceeded,
        Code::Internal => ErrorCode::Internal,
        Code::Ok
        | Code::Cancelled
        | Code::Unknown
        | Code::Aborted
        | Code::Unimplemented
        | Code::DataLoss => return None,
    })
}

impl From<FlightError> for Error {
    fn from(e: FlightError) -> Self {
        match e {
            FlightError::Tonic(status) => Error::from(*status),
            FlightError::Arrow(e) => Error::Arrow(e),
            // A failure of the caller's own batch stream, carried through the Flight stream.
            FlightError::ExternalError(e) => match e.downcast::<Error>() {
                Ok(e) => *e,
                Err(e) => Error::InvalidArgument(e.to_string()),
            },
            FlightError::NotYetImplemented(m) => Error::protocol(m),
            FlightError::ProtocolError(m) | FlightError::DecodeError(m) => Error::protocol(m),
        }
    }
}

/// The caller's error, wrapped for a Flight stream (undone by `From<FlightError>`).
pub(crate) fn to_flight(e: Error) -> FlightError {
    FlightError::ExternalError(Box::new(e))
}

/// The canonical upper-case name of a gRPC code (`NOT_FOUND`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_keep_code_and_message() {
        let e = Error::from(tonic::Status::not_found("feature set \"x\" not found"));
        assert!(e.is_not_found());
        assert!(!e.is_already_exists());
        assert_eq!(e.message(), "feature set \"x\" not found");
        assert_eq!(e.to_string(), "feature set \"x\" not found (NOT_FOUND)");
        let wrapped = Error::from(FlightError::Tonic(Box::new(tonic::Status::already_exists(
            "exists",
        ))));
        assert!(wrapped.is_already_exists());
    }

    #[test]
    fn the_typed_code_comes_from_the_status_metadata_or_else_its_grpc_code() {
        let mut status = tonic::Status::resource_exhausted("3 streams open");
        status.metadata_mut().insert(
            ERROR_CODE_METADATA,
            tonic::metadata::MetadataValue::from_static("too_many_requests"),
        );
        let e = Error::from(status);
        assert_eq!(e.error_code(), Some(ErrorCode::TooManyRequests));
        assert!(e.is_resource_exhausted());
        let plain = Error::from(tonic::Status::resource_exhausted("too big"));
        assert_eq!(plain.error_code(), Some(ErrorCode::TooLarge));
        let forbidden = Error::from(tonic::Status::permission_denied("no"));
        assert_eq!(forbidden.error_code(), Some(ErrorCode::Forbidden));
        assert!(forbidden.is_permission_denied());
        assert_eq!(Error::from(tonic::Status::unknown("?")).error_code(), None);
        assert_eq!(
            Error::InvalidArgument("x".into()).error_code(),
            Some(ErrorCode::InvalidArgument)
        );
    }

    #[test]
    fn caller_errors_pass_through_flight_streams() {
        let e = Error::from(to_flight(Error::InvalidArgument("bad input".into())));
        assert!(matches!(e, Error::InvalidArgument(m) if m == "bad input"));
    }
}
