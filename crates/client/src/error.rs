//! The client's error type: a server status with its message, or a failure on this side.

use arrow::error::ArrowError;
use arrow_flight::error::FlightError;
pub use tonic::Code;

/// Everything a [`Client`](crate::Client) call can fail with.
///
/// Errors the server reports keep its gRPC status code and message (PROTOCOL.md, "Errors"):
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
    Server { code: Code, message: String },
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

    /// The server's message for a server error, otherwise the error's text.
    pub fn message(&self) -> String {
        match self {
            Error::Server { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }

    /// An unknown feature set or feature (`NOT_FOUND`).
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(Code::NotFound)
    }

    /// A different spec already stored under the name (`ALREADY_EXISTS`).
    pub fn is_already_exists(&self) -> bool {
        self.code() == Some(Code::AlreadyExists)
    }

    /// A bad spec, ticket, batch, type or timestamp, rejected by the server
    /// (`INVALID_ARGUMENT`) or by the client before sending ([`Error::InvalidArgument`]).
    pub fn is_invalid_argument(&self) -> bool {
        self.code() == Some(Code::InvalidArgument)
            || matches!(self, Error::InvalidArgument(_) | Error::Conform(_))
    }

    /// A request over a configured limit of the server (`RESOURCE_EXHAUSTED`).
    pub fn is_resource_exhausted(&self) -> bool {
        self.code() == Some(Code::ResourceExhausted)
    }

    /// No token, or one the server does not know (`UNAUTHENTICATED`).
    pub fn is_unauthenticated(&self) -> bool {
        self.code() == Some(Code::Unauthenticated)
    }

    /// The token lacks the scope or the feature set the call needs (`PERMISSION_DENIED`).
    pub fn is_permission_denied(&self) -> bool {
        self.code() == Some(Code::PermissionDenied)
    }

    /// The server could not be reached: no connection, or it went away (`UNAVAILABLE`).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Connect { .. }) || self.code() == Some(Code::Unavailable)
    }

    pub(crate) fn protocol(message: impl Into<String>) -> Self {
        Error::Protocol(message.into())
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        Error::Server {
            code: status.code(),
            message: status.message().to_string(),
        }
    }
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
    fn caller_errors_pass_through_flight_streams() {
        let e = Error::from(to_flight(Error::InvalidArgument("bad input".into())));
        assert!(matches!(e, Error::InvalidArgument(m) if m == "bad input"));
    }
}
