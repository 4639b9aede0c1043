use arrow::error::ArrowError;

/// What kind of failure an error is: decides the gRPC status and HTTP code in the API layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    NotFound,
    InvalidArgument,
    AlreadyExists,
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

impl ErrorCode {
    /// The `error.code` string of PROTOCOL.md's HTTP error body.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NotFound => "not_found",
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::AlreadyExists => "already_exists",
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

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    AlreadyExists(String),
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

    /// A feature that `set` does not declare: the one wording of this error.
    pub fn undeclared_feature(set: &str, feature: &str) -> Self {
        Error::NotFound(format!(
            "feature {feature:?} is not declared by feature set {set:?}"
        ))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
