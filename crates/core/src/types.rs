//! The value types a feature set may declare, and their Arrow types.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, TimeUnit};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, Result};

/// Largest embedding dimension a spec may declare; bounds per-row allocation on ingest.
pub(crate) const MAX_EMBEDDING_DIM: usize = 65_536;

/// The Arrow timestamp type of every stored time: microseconds, UTC.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntityType {
    String,
    Int64,
}

impl EntityType {
    pub fn arrow_type(self) -> DataType {
        match self {
            EntityType::String => DataType::Utf8,
            EntityType::Int64 => DataType::Int64,
        }
    }
}

impl fmt::Display for EntityType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EntityType::String => "string",
            EntityType::Int64 => "int64",
        })
    }
}

/// A feature's declared type; serialized as PROTOCOL.md spells it (`"float32[64]"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FeatureType {
    Bool,
    Int32,
    Int64,
    Float32,
    Float64,
    String,
    Binary,
    Date,
    Timestamp,
    Float32Vector(usize),
    Float64Vector(usize),
}

impl FeatureType {
    pub fn arrow_type(self) -> DataType {
        match self {
            FeatureType::Bool => DataType::Boolean,
            FeatureType::Int32 => DataType::Int32,
            FeatureType::Int64 => DataType::Int64,
            FeatureType::Float32 => DataType::Float32,
            FeatureType::Float64 => DataType::Float64,
            FeatureType::String => DataType::Utf8,
            FeatureType::Binary => DataType::Binary,
            FeatureType::Date => DataType::Date32,
            FeatureType::Timestamp => timestamp_type(),
            FeatureType::Float32Vector(n) => vector_type(DataType::Float32, n),
            FeatureType::Float64Vector(n) => vector_type(DataType::Float64, n),
        }
    }

    /// Byte width of a value of this type in Arrow; `None` for bool (bits) and the
    /// variable-length types.
    pub fn fixed_width(self) -> Option<usize> {
        match self {
            FeatureType::Int32 | FeatureType::Float32 | FeatureType::Date => Some(4),
            FeatureType::Int64 | FeatureType::Float64 | FeatureType::Timestamp => Some(8),
            FeatureType::Float32Vector(n) => Some(4 * n),
            FeatureType::Float64Vector(n) => Some(8 * n),
            FeatureType::Bool | FeatureType::String | FeatureType::Binary => None,
        }
    }
}

fn vector_type(item: DataType, n: usize) -> DataType {
    DataType::FixedSizeList(
        Arc::new(Field::new("item", item, true)),
        i32::try_from(n).expect("dimension bounded by MAX_EMBEDDING_DIM"),
    )
}

impl fmt::Display for FeatureType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FeatureType::Bool => f.write_str("bool"),
            FeatureType::Int32 => f.write_str("int32"),
            FeatureType::Int64 => f.write_str("int64"),
            FeatureType::Float32 => f.write_str("float32"),
            FeatureType::Float64 => f.write_str("float64"),
            FeatureType::String => f.write_str("string"),
            FeatureType::Binary => f.write_str("binary"),
            FeatureType::Date => f.write_str("date"),
            FeatureType::Timestamp => f.write_str("timestamp"),
            FeatureType::Float32Vector(n) => write!(f, "float32[{n}]"),
            FeatureType::Float64Vector(n) => write!(f, "float64[{n}]"),
        }
    }
}

impl FromStr for FeatureType {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let scalar = match text {
            "bool" => Some(FeatureType::Bool),
            "int32" => Some(FeatureType::Int32),
            "int64" => Some(FeatureType::Int64),
            "float32" => Some(FeatureType::Float32),
            "float64" => Some(FeatureType::Float64),
            "string" => Some(FeatureType::String),
            "binary" => Some(FeatureType::Binary),
            "date" => Some(FeatureType::Date),
            "timestamp" => Some(FeatureType::Timestamp),
            _ => None,
        };
        if let Some(t) = scalar {
            return Ok(t);
        }
        let vector = |prefix: &str| -> Option<usize> {
            let n = text.strip_prefix(prefix)?.strip_suffix(']')?;
            n.parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_EMBEDDING_DIM).contains(n))
        };
        if let Some(n) = vector("float32[") {
            return Ok(FeatureType::Float32Vector(n));
        }
        if let Some(n) = vector("float64[") {
            return Ok(FeatureType::Float64Vector(n));
        }
        Err(Error::invalid(format!(
            "unknown feature type {text:?}: expected bool, int32, int64, float32, float64, string, \
             binary, date, timestamp, float32[N] or float64[N] with 1 <= N <= {MAX_EMBEDDING_DIM}"
        )))
    }
}

impl Serialize for FeatureType {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FeatureType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_round_trip() {
        for name in [
            "bool",
            "int32",
            "date",
            "timestamp",
            "float32[64]",
            "float64[3]",
        ] {
            assert_eq!(name.parse::<FeatureType>().unwrap().to_string(), name);
        }
        for bad in [
            "float32[0]",
            "float32[]",
            "int16",
            "float32[70000]",
            "Float32",
        ] {
            assert!(bad.parse::<FeatureType>().is_err(), "{bad}");
        }
    }
}
