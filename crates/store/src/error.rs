use featherstore_core::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Domain(#[from] featherstore_core::Error),
    #[error("duckdb: {0}")]
    DuckDb(#[from] duckdb::Error),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Corrupt(String),
    /// The Delta Lake backend's table operations (`crate::delta`).
    #[error("delta lake: {0}")]
    Delta(#[from] deltalake::DeltaTableError),
    /// The object store under the Delta Lake backend (`crate::delta`).
    #[error("object store: {0}")]
    ObjectStore(#[from] deltalake::ObjectStoreError),
    /// The Redis online backend failed to answer (unreachable, restarting, or refusing).
    #[error("the online store (Redis) is unavailable: {0}")]
    Redis(#[from] redis::RedisError),
    /// The Redis online backend did not answer in time.
    #[error("the online store (Redis) did not answer within {timeout_ms} ms")]
    OnlineTimeout { timeout_ms: u64 },
    /// The consumer of a result stream went away; the producer stops.
    #[error("the receiver of the results went away")]
    Cancelled,
}

impl Error {
    /// Domain errors keep their code; everything else is a fault of the server.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Domain(e) => e.code(),
            Error::Delta(e) => crate::delta::error_code(e),
            // The object store is unreachable or failing: retrying later may succeed.
            Error::ObjectStore(_) => ErrorCode::Unavailable,
            // A remote online store that cannot answer now: the caller may retry.
            Error::Redis(_) | Error::OnlineTimeout { .. } => ErrorCode::Unavailable,
            _ => ErrorCode::Internal,
        }
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
