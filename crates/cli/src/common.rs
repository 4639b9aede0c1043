//! What the client commands share: the server address, the error type, spec lookup, entity
//! key parsing, and small tables.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use clap::Args;
use featherstore_client::{Client, Entities, EntityType, FeatureSetSpec};

#[derive(Args, Clone)]
pub(crate) struct ServerArgs {
    /// Arrow Flight address of the server (http://HOST:PORT, grpc://HOST:PORT or HOST:PORT).
    #[arg(
        long,
        env = "FEATHERSTORE_FLIGHT",
        default_value = featherstore_client::DEFAULT_ADDRESS,
        value_name = "ADDRESS"
    )]
    pub server: String,
    /// Bearer token of a server with auth: the global `--token` (set by `main`).
    #[arg(skip)]
    pub token: Option<String>,
    /// PEM file of the CA that signed a TLS server's certificate (https:// or grpc+tls://).
    #[arg(long, global = true, env = featherstore_client::CA_FILE_ENV, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for a server that requires one; with --key-file.
    #[arg(
        long,
        global = true,
        env = "FEATHERSTORE_CERT_FILE",
        value_name = "FILE",
        requires = "key_file"
    )]
    pub cert_file: Option<PathBuf>,
    /// Private key (PEM) of --cert-file.
    #[arg(
        long,
        global = true,
        env = "FEATHERSTORE_KEY_FILE",
        value_name = "FILE",
        requires = "cert_file"
    )]
    pub key_file: Option<PathBuf>,
}

impl ServerArgs {
    pub(crate) async fn connect(&self) -> Result<Client, CliError> {
        let mut builder = Client::builder(self.server.as_str());
        if let Some(token) = &self.token {
            builder = builder.token(token);
        }
        if let Some(ca_file) = &self.ca_file {
            builder = builder.ca_file(ca_file);
        }
        if let (Some(cert), Some(key)) = (&self.cert_file, &self.key_file) {
            builder = builder.client_identity(cert, key);
        }
        builder.connect().await.map_err(|e| self.describe(e))
    }

    /// A client error as a user reads it: the server's message alone, or how to point the
    /// command at a server.
    pub(crate) fn describe(&self, e: featherstore_client::Error) -> CliError {
        CliError::from_client(e, &self.server)
    }
}

/// One line for the user: printed as `featherstore: <message>`, exit status 1.
#[derive(Debug)]
pub(crate) struct CliError(pub String);

pub(crate) type CliResult<T = ()> = Result<T, CliError>;

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl CliError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        CliError(message.into())
    }

    pub(crate) fn from_client(e: featherstore_client::Error, server: &str) -> Self {
        use featherstore_client::Error;
        match e {
            Error::Connect { address, reason } => CliError(format!(
                "cannot reach a FeatherStore server at {address} ({reason}); \
                 set --server or FEATHERSTORE_FLIGHT"
            )),
            e if e.is_unavailable() => {
                let at = if server.is_empty() {
                    String::new()
                } else {
                    format!(" at {server}")
                };
                CliError(format!("the server{at} is unavailable: {}", e.message()))
            }
            e if e.is_unauthenticated() => CliError(format!(
                "{}; pass --token or set {}",
                e.message(),
                featherstore_client::TOKEN_ENV
            )),
            Error::Server { message, .. } => CliError(message),
            other => CliError(other.to_string()),
        }
    }

    /// Prefixes the message with where it happened (`file.csv: ...`).
    pub(crate) fn context(self, context: impl fmt::Display) -> Self {
        CliError(format!("{context}: {}", self.0))
    }
}

impl From<featherstore_client::Error> for CliError {
    fn from(e: featherstore_client::Error) -> Self {
        CliError::from_client(e, "")
    }
}

macro_rules! display_error {
    ($($t:ty),*) => {$(
        impl From<$t> for CliError {
            fn from(e: $t) -> Self {
                CliError(e.to_string())
            }
        }
    )*};
}
display_error!(
    std::io::Error,
    arrow::error::ArrowError,
    parquet::errors::ParquetError,
    featherstore_core::Error,
    serde_json::Error,
    String,
    &str
);

/// A set's spec without its statistics (listing is cheap; statistics may scan storage).
pub(crate) async fn fetch_spec(client: &Client, name: &str) -> CliResult<FeatureSetSpec> {
    let specs = client.list_feature_sets().await?;
    specs.into_iter().find(|s| s.name == name).ok_or_else(|| {
        CliError(format!(
            "{} (`featherstore list` shows the sets)",
            featherstore_core::Error::no_such_set(name)
        ))
    })
}

/// Entity keys from the command line, typed by the set's entity type.
pub(crate) fn parse_entities(spec: &FeatureSetSpec, keys: &[String]) -> CliResult<Entities> {
    match spec.entity.entity_type {
        EntityType::String => Ok(Entities::strings(keys.iter().cloned())),
        EntityType::Int64 => keys
            .iter()
            .map(|k| {
                k.trim().parse::<i64>().map_err(|_| {
                    CliError(format!(
                        "entity {k:?} is not an integer; feature set {:?} has int64 entity key {:?}",
                        spec.name, spec.entity.name
                    ))
                })
            })
            .collect::<CliResult<Vec<_>>>()
            .map(Entities::ints),
    }
}

/// A text table (arrow's pretty printer) of string cells.
pub(crate) fn text_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let fields: Vec<Field> = headers
        .iter()
        .map(|h| Field::new(*h, DataType::Utf8, false))
        .collect();
    let columns: Vec<ArrayRef> = (0..headers.len())
        .map(|c| {
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r[c].as_str()),
            )) as ArrayRef
        })
        .collect();
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .expect("columns match the header");
    arrow::util::pretty::pretty_format_batches(&[batch])
        .expect("strings format")
        .to_string()
}

/// `1234567` as `1,234,567`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A tokio runtime for one command.
pub(crate) fn runtime() -> CliResult<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError(format!("starting the async runtime: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_thousands() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }
}
