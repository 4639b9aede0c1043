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
            _ => ErrorCode::Internal,
        }
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
