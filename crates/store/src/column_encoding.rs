//! Parquet column encodings of stored rows, shared by the backends that write Parquet files
//! (the Parquet and Delta backends).

use arrow::datatypes::Schema;
use parquet::arrow::ArrowSchemaConverter;
use parquet::basic::Type as PhysicalType;
use parquet::file::properties::WriterPropertiesBuilder;

use crate::query::sql::SEQ_COLUMN;
use crate::Result;

/// Turns dictionary encoding off for every floating-point leaf column of `schema` (scalar
/// and vector features alike) and for the ingest sequence (`_seq`), and leaves it on for the
/// rest.
///
/// A dictionary pays for repeated values: entity keys, categories, flags, dates, ingest
/// times. Measured features of floating point are nearly all distinct, so every value was
/// hashed into a dictionary that the writer then abandoned once it outgrew its page: in a
/// profile of the Parquet backend during ingest, that hashing was 38% of the server's CPU.
/// `_seq` is distinct by construction; with the floats' gone, its dictionary was the largest
/// part of a flush (20% of the flush's CPU, session 23).
pub(crate) fn dictionaries_only_where_values_repeat(
    builder: WriterPropertiesBuilder,
    schema: &Schema,
) -> Result<WriterPropertiesBuilder> {
    let parquet_schema = ArrowSchemaConverter::new().convert(schema)?;
    Ok(parquet_schema
        .columns()
        .iter()
        .filter(|column| {
            matches!(
                column.physical_type(),
                PhysicalType::FLOAT | PhysicalType::DOUBLE
            ) || column.path().string() == SEQ_COLUMN
        })
        .fold(builder, |builder, column| {
            builder.set_column_dictionary_enabled(column.path().clone(), false)
        }))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::datatypes::{DataType, Field};
    use parquet::file::properties::WriterProperties;
    use parquet::schema::types::ColumnPath;

    use super::*;

    #[test]
    fn only_floating_point_columns_and_the_ingest_sequence_lose_their_dictionary() {
        let item = Arc::new(Field::new("item", DataType::Float32, true));
        let schema = Schema::new(vec![
            Field::new("user_id", DataType::Utf8, false),
            Field::new("score", DataType::Float32, true),
            Field::new("amount", DataType::Float64, true),
            Field::new("count", DataType::Int64, true),
            Field::new("embedding", DataType::FixedSizeList(item, 3), true),
            Field::new("_seq", DataType::Int64, false),
        ]);
        let properties =
            dictionaries_only_where_values_repeat(WriterProperties::builder(), &schema)
                .unwrap()
                .build();
        let converted = ArrowSchemaConverter::new().convert(&schema).unwrap();
        let dictionary: Vec<(String, bool)> = converted
            .columns()
            .iter()
            .map(|column| {
                let path: &ColumnPath = column.path();
                (path.string(), properties.dictionary_enabled(column.path()))
            })
            .collect();
        assert_eq!(
            dictionary,
            [
                ("user_id".to_string(), true),
                ("score".to_string(), false),
                ("amount".to_string(), false),
                ("count".to_string(), true),
                ("embedding.list.item".to_string(), false),
                ("_seq".to_string(), false),
            ]
        );
    }
}
