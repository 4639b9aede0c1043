//! Entity keys as requests carry them (JSON), typed by the feature set's entity type.

use serde_json::Value;

use crate::types::EntityType;
use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
pub enum EntityKeys {
    String(Vec<String>),
    Int64(Vec<i64>),
}

impl EntityKeys {
    /// Converts JSON entity values to keys of `entity_type`; a value of another JSON type is
    /// an invalid argument naming its position.
    pub fn from_json(entity_type: EntityType, values: &[Value]) -> Result<Self> {
        Self::parse(entity_type, values, |i| format!("entity {i}"))
    }

    /// [`from_json`](Self::from_json) for the key column `column` of a request across sets:
    /// the error names the column and the row.
    pub fn from_json_column(
        entity_type: EntityType,
        column: &str,
        values: &[Value],
    ) -> Result<Self> {
        Self::parse(entity_type, values, |i| {
            format!("key column {column:?} row {i}")
        })
    }

    fn parse(
        entity_type: EntityType,
        values: &[Value],
        position: impl Fn(usize) -> String,
    ) -> Result<Self> {
        let wrong = |i: usize, v: &Value| {
            Error::invalid(format!(
                "{} is {v}; expected a JSON {} for a {entity_type} entity key",
                position(i),
                match entity_type {
                    EntityType::String => "string",
                    EntityType::Int64 => "integer",
                }
            ))
        };
        match entity_type {
            EntityType::String => values
                .iter()
                .enumerate()
                .map(|(i, v)| v.as_str().map(str::to_owned).ok_or_else(|| wrong(i, v)))
                .collect::<Result<_>>()
                .map(EntityKeys::String),
            EntityType::Int64 => values
                .iter()
                .enumerate()
                .map(|(i, v)| v.as_i64().ok_or_else(|| wrong(i, v)))
                .collect::<Result<_>>()
                .map(EntityKeys::Int64),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            EntityKeys::String(keys) => keys.len(),
            EntityKeys::Int64(keys) => keys.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn typed_by_entity_type() {
        let ints = EntityKeys::from_json(EntityType::Int64, &[json!(1), json!(-2)]).unwrap();
        assert_eq!(ints, EntityKeys::Int64(vec![1, -2]));
        let err = EntityKeys::from_json(EntityType::Int64, &[json!(1), json!("2")]).unwrap_err();
        assert!(err.to_string().contains("entity 1"), "{err}");
        assert!(EntityKeys::from_json(EntityType::String, &[json!(1.5)]).is_err());
        let err = EntityKeys::from_json_column(EntityType::Int64, "merchant_id", &[json!("7")])
            .unwrap_err();
        assert!(
            err.to_string().contains("key column \"merchant_id\" row 0"),
            "{err}"
        );
    }
}
