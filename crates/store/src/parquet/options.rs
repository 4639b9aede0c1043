//! Tuning of the Parquet backend: file layout (row groups, codec), when the log is flushed
//! into Parquet and when small files are compacted.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use arrow::datatypes::Schema;
use parquet::basic::{BrotliLevel, GzipLevel, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use crate::{column_encoding, Error, Result};

/// The codec of the Parquet data files, as spelled in configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Snappy,
    Gzip,
    Zstd,
    Brotli,
    /// Written as Parquet's `LZ4_RAW`: the older `LZ4` codec is deprecated by the format
    /// because writers disagreed on its framing.
    Lz4,
    None,
}

const COMPRESSION_NAMES: &str = "snappy, gzip, zstd, brotli, lz4, none";

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Snappy => "snappy",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Brotli => "brotli",
            Compression::Lz4 => "lz4",
            Compression::None => "none",
        }
    }

    fn codec(self) -> parquet::basic::Compression {
        use parquet::basic::Compression as Codec;
        match self {
            Compression::Snappy => Codec::SNAPPY,
            Compression::Gzip => Codec::GZIP(GzipLevel::default()),
            Compression::Zstd => Codec::ZSTD(ZstdLevel::default()),
            Compression::Brotli => Codec::BROTLI(BrotliLevel::default()),
            Compression::Lz4 => Codec::LZ4_RAW,
            Compression::None => Codec::UNCOMPRESSED,
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A compression name that is not one of [`Compression`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown parquet compression {0:?}: expected one of {COMPRESSION_NAMES}")]
pub struct UnknownCompression(pub String);

impl FromStr for Compression {
    type Err = UnknownCompression;

    /// Accepts the configuration names in any letter case (`zstd`, `ZSTD`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        [
            Compression::Snappy,
            Compression::Gzip,
            Compression::Zstd,
            Compression::Brotli,
            Compression::Lz4,
            Compression::None,
        ]
        .into_iter()
        .find(|c| c.as_str().eq_ignore_ascii_case(text))
        .ok_or_else(|| UnknownCompression(text.to_string()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParquetOptions {
    /// Most rows in one Parquet row group.
    pub row_group_size: usize,
    pub compression: Compression,
    /// A set's unflushed rows are written to Parquet once there are this many...
    pub flush_rows: usize,
    /// ...or once the oldest of them has waited this long.
    pub flush_interval: Duration,
    /// A date partition is compacted once it holds this many small files (fewer rows than
    /// `flush_rows` each): they are merged into one.
    pub compact_min_files: usize,
}

impl Default for ParquetOptions {
    fn default() -> Self {
        ParquetOptions {
            row_group_size: 128 * 1024,
            compression: Compression::Snappy,
            flush_rows: 1_000_000,
            flush_interval: Duration::from_secs(60),
            compact_min_files: 8,
        }
    }
}

impl ParquetOptions {
    pub(super) fn validate(&self) -> Result<()> {
        let problem = if self.row_group_size == 0 {
            "row_group_size must be at least 1"
        } else if self.flush_rows == 0 {
            "flush_rows must be at least 1"
        } else if self.flush_interval.is_zero() {
            "flush_interval must be positive"
        } else if self.compact_min_files < 2 {
            "compact_min_files must be at least 2: merging one file gains nothing"
        } else {
            return Ok(());
        };
        Err(Error::Domain(featherstore_core::Error::invalid(format!(
            "invalid parquet storage options: {problem}"
        ))))
    }

    /// Writer settings of every data file of `schema`. `sorted_by` are the column indices the
    /// rows are sorted by (entity, event time, ingest order), recorded in the footer so
    /// readers can rely on the order.
    pub(super) fn writer_properties(
        &self,
        schema: &Schema,
        sorted_by: &[usize],
    ) -> Result<WriterProperties> {
        let sorting = sorted_by
            .iter()
            .map(|&column| SortingColumn {
                column_idx: column as i32,
                descending: false,
                nulls_first: false,
            })
            .collect();
        let builder = WriterProperties::builder()
            .set_max_row_group_row_count(Some(self.row_group_size))
            .set_compression(self.compression.codec())
            .set_sorting_columns(Some(sorting));
        Ok(column_encoding::dictionaries_only_where_values_repeat(builder, schema)?.build())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_parses_config_names() {
        assert_eq!("zstd".parse::<Compression>(), Ok(Compression::Zstd));
        assert_eq!("LZ4".parse::<Compression>(), Ok(Compression::Lz4));
        assert_eq!("none".parse::<Compression>(), Ok(Compression::None));
        let err = "lzo".parse::<Compression>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown parquet compression \"lzo\": expected one of snappy, gzip, zstd, brotli, lz4, none"
        );
        let parsed: Compression = serde_json::from_str("\"brotli\"").unwrap();
        assert_eq!(parsed, Compression::Brotli);
        assert!(serde_json::from_str::<Compression>("\"lzo\"").is_err());
        for c in COMPRESSION_NAMES.split(", ") {
            assert_eq!(c.parse::<Compression>().unwrap().to_string(), c);
        }
    }

    #[test]
    fn rejects_degenerate_options() {
        assert!(ParquetOptions::default().validate().is_ok());
        let zero_rows = ParquetOptions {
            row_group_size: 0,
            ..ParquetOptions::default()
        };
        assert!(zero_rows
            .validate()
            .unwrap_err()
            .to_string()
            .contains("row_group_size"));
    }
}
