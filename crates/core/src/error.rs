use std::fmt;
use std::str::FromStr;

use arrow::error::ArrowError;

/// What kind of failure an error is: every error type of the workspace has one, and it alone
/// decides the gRPC status and the HTTP status in the API layer (`crates/server/src/error.rs`).
/// Its string ([`ErrorCode::as_str`]) is the `error.code` of an HTTP error body and the value of
/// the [`ERROR_CODE_METADATA`] entry of a Flight error status, so a client reads back the same
/// code from either API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    NotFound,
    InvalidArgument,
    AlreadyExists,
    /// The request is valid but the state refuses it (deleting a set a feature service uses).
    FailedPrecondition,
    TooLarge,
    Unauthenticated,
    Forbidden,
    /// Too many requests of one client at once: retry once some finished.
    TooManyRequests,
    /// The server is overloaded or a resource it needs is busy: retry later.
    Unavailable,
    /// A request (or a stream that stopped moving) ran out of its time.
    DeadlineExceeded,
    Internal,
}

/// The gRPC metadata key of a Flight error status that carries its [`ErrorCode`] string.
/// Needed because gRPC statuses are coarser than the codes: `too_large` and
/// `too_many_requests` are both RESOURCE_EXHAUSTED.
pub const ERROR_CODE_METADATA: &str = "x-featherstore-error-code";

impl ErrorCode {
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::NotFound,
        ErrorCode::InvalidArgument,
        ErrorCode::AlreadyExists,
        ErrorCode::FailedPrecondition,
        ErrorCode::TooLarge,
        ErrorCode::Unauthenticated,
        ErrorCode::Forbidden,
        ErrorCode::TooManyRequests,
        ErrorCode::Unavailable,
        ErrorCode::DeadlineExceeded,
        ErrorCode::Internal,
    ];

    /// The `error.code` string of PROTOCOL.md's HTTP error body.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NotFound => "not_found",
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::FailedPrecondition => "failed_precondition",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::TooManyRequests => "too_many_requests",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::DeadlineExceeded => "deadline_exceeded",
            ErrorCode::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An `error.code` string that is none of [`ErrorCode`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown error code {0:?}")]
pub struct UnknownErrorCode(pub String);

/// Reads back an `error.code` string (an HTTP error body, a Flight status's metadata).
impl FromStr for ErrorCode {
    type Err = UnknownErrorCode;

    fn from_str(text: &str) -> Result<Self, UnknownErrorCode> {
        ErrorCode::ALL
            .into_iter()
            .find(|code| code.as_str() == text)
            .ok_or_else(|| UnknownErrorCode(text.to_owned()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    TooManyRequests(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    DeadlineExceeded(String),
    #[error("{0}")]
    Internal(String),
    #[error("arrow: {0}")]
    Arrow(#[from] ArrowError),
    /// A client's Arrow IPC message that failed the checks or arrow's decoding.
    #[error(transparent)]
    Ipc(#[from] crate::ipc::IpcError),
}

impl Error {
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::NotFound(_) => ErrorCode::NotFound,
            Error::InvalidArgument(_) | Error::Ipc(_) => ErrorCode::InvalidArgument,
            Error::AlreadyExists(_) => ErrorCode::AlreadyExists,
            Error::FailedPrecondition(_) => ErrorCode::FailedPrecondition,
            Error::TooLarge(_) => ErrorCode::TooLarge,
            Error::TooManyRequests(_) => ErrorCode::TooManyRequests,
            Error::Unavailable(_) => ErrorCode::Unavailable,
            Error::DeadlineExceeded(_) => ErrorCode::DeadlineExceeded,
            Error::Internal(_) | Error::Arrow(_) => ErrorCode::Internal,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidArgument(message.into())
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Error::NotFound(message.into())
    }

    /// No feature set of this name: the one wording of this error, in every layer.
    pub fn no_such_set(name: &str) -> Self {
        Error::NotFound(format!("feature set {name:?} does not exist"))
    }

    /// No feature service of this name: the one wording of this error, in every layer.
    pub fn no_such_service(name: &str) -> Self {
        Error::NotFound(format!("feature service {name:?} does not exist"))
    }

    /// A feature that `set` does not declare: the one wording of this error.
    pub fn undeclared_feature(set: &str, feature: &str) -> Self {
        Error::NotFound(format!(
            "feature {feature:?} is not declared by feature set {set:?}"
        ))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_read_back_from_their_strings() {
        for code in ErrorCode::ALL {
            assert_eq!(code.as_str().parse::<ErrorCode>(), Ok(code));
            assert_eq!(code.to_string(), code.as_str());
        }
        assert_eq!(
            "teapot".parse::<ErrorCode>(),
            Err(UnknownErrorCode("teapot".into()))
        );
    }
}
