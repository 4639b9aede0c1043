//! JSON rows on the HTTP API: decoding ingest rows into a batch, encoding result rows.

use std::sync::Arc;

use arrow::array::{
    new_null_array, Array, ArrayRef, AsArray, BinaryBuilder, BooleanBuilder, Date32Builder,
    FixedSizeListBuilder, Float32Builder, Float64Builder, Int32Builder, Int64Builder, RecordBatch,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{
    DataType, Date32Type, Float32Type, Float64Type, Int32Type, Int64Type, TimeUnit,
    TimestampMicrosecondType,
};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::{Map, Number, Value};

use crate::spec::FeatureSetSpec;
use crate::time::{format_date, format_timestamp, parse_date, parse_timestamp};
use crate::types::{EntityType, FeatureType};
use crate::{Error, Result};

/// Builds a canonical batch of `spec` from JSON objects (one per row). Unknown keys, values of
/// the wrong JSON type and null entity/timestamp values are rejected naming row and column.
pub fn rows_to_batch(spec: &FeatureSetSpec, rows: &[Map<String, Value>]) -> Result<RecordBatch> {
    for (i, row) in rows.iter().enumerate() {
        if let Some(key) = row
            .keys()
            .find(|k| *k != &spec.entity.name && *k != &spec.timestamp && spec.feature(k).is_none())
        {
            return Err(Error::invalid(format!(
                "row {i}: column {key:?} is not declared by feature set {:?}",
                spec.name
            )));
        }
    }
    let mut columns = Vec::with_capacity(spec.features.len() + 2);
    let entity = &spec.entity.name;
    let key_type = match spec.entity.entity_type {
        EntityType::String => FeatureType::String,
        EntityType::Int64 => FeatureType::Int64,
    };
    columns.push(column_from_json(rows, entity, key_type, false)?);
    for feature in &spec.features {
        columns.push(column_from_json(
            rows,
            &feature.name,
            feature.feature_type,
            true,
        )?);
    }
    columns.push(column_from_json(
        rows,
        &spec.timestamp,
        FeatureType::Timestamp,
        false,
    )?);
    Ok(RecordBatch::try_new(spec.arrow_schema(), columns)?)
}

fn column_from_json(
    rows: &[Map<String, Value>],
    name: &str,
    feature_type: FeatureType,
    nullable: bool,
) -> Result<ArrayRef> {
    if nullable && rows.iter().all(|r| r.get(name).is_none_or(Value::is_null)) {
        return Ok(new_null_array(&feature_type.arrow_type(), rows.len()));
    }
    let wrong = |i: usize, v: &Value, expected: &str| {
        Error::invalid(format!(
            "row {i}: column {name:?} is {v}; expected {expected}"
        ))
    };
    let cells = rows.iter().enumerate().map(|(i, r)| match r.get(name) {
        None | Some(Value::Null) if !nullable => Err(Error::invalid(format!(
            "row {i}: column {name:?} is missing or null; it may not be null"
        ))),
        None | Some(Value::Null) => Ok((i, None)),
        Some(v) => Ok((i, Some(v))),
    });
    macro_rules! build {
        ($builder:expr, $expected:expr, |$v:ident| $convert:expr) => {{
            let mut builder = $builder;
            for cell in cells {
                let (i, value) = cell?;
                match value {
                    None => builder.append_null(),
                    Some($v) => {
                        let converted: Option<_> = $convert;
                        builder.append_value(converted.ok_or_else(|| wrong(i, $v, $expected))?)
                    }
                }
            }
            Arc::new(builder.finish()) as ArrayRef
        }};
    }
    let n = rows.len();
    Ok(match feature_type {
        FeatureType::Bool => build!(BooleanBuilder::with_capacity(n), "true or false", |v| v
            .as_bool()),
        FeatureType::Int32 => build!(Int32Builder::with_capacity(n), "a 32-bit integer", |v| v
            .as_i64()
            .and_then(|x| i32::try_from(x).ok())),
        FeatureType::Int64 => build!(Int64Builder::with_capacity(n), "an integer", |v| v.as_i64()),
        FeatureType::Float32 => build!(Float32Builder::with_capacity(n), "a number", |v| v
            .as_f64()
            .map(|x| x as f32)),
        FeatureType::Float64 => {
            build!(Float64Builder::with_capacity(n), "a number", |v| v.as_f64())
        }
        FeatureType::String => build!(StringBuilder::with_capacity(n, n * 8), "a string", |v| v
            .as_str()),
        FeatureType::Binary => build!(
            BinaryBuilder::with_capacity(n, n * 8),
            "a base64 string",
            |v| v.as_str().and_then(|s| BASE64.decode(s).ok())
        ),
        FeatureType::Date => build!(Date32Builder::with_capacity(n), "a date YYYY-MM-DD", |v| v
            .as_str()
            .and_then(|s| parse_date(s).ok())),
        FeatureType::Timestamp => {
            let builder = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
            build!(builder, "an RFC 3339 timestamp string", |v| v
                .as_str()
                .and_then(|s| parse_timestamp(s).ok()))
        }
        FeatureType::Float32Vector(dim) => {
            let mut builder = FixedSizeListBuilder::new(Float32Builder::new(), dim as i32);
            for cell in cells {
                let (i, value) = cell?;
                append_vector(&mut builder, value, dim, |x| x as f32)
                    .map_err(|v| wrong(i, v, &format!("an array of {dim} numbers")))?;
            }
            Arc::new(builder.finish())
        }
        FeatureType::Float64Vector(dim) => {
            let mut builder = FixedSizeListBuilder::new(Float64Builder::new(), dim as i32);
            for cell in cells {
                let (i, value) = cell?;
                append_vector(&mut builder, value, dim, |x| x)
                    .map_err(|v| wrong(i, v, &format!("an array of {dim} numbers")))?;
            }
            Arc::new(builder.finish())
        }
    })
}

fn append_vector<'v, T: arrow::datatypes::ArrowPrimitiveType>(
    builder: &mut FixedSizeListBuilder<arrow::array::PrimitiveBuilder<T>>,
    value: Option<&'v Value>,
    dim: usize,
    convert: impl Fn(f64) -> T::Native,
) -> std::result::Result<(), &'v Value> {
    let Some(value) = value else {
        builder.values().append_nulls(dim);
        builder.append(false);
        return Ok(());
    };
    let items = value.as_array().filter(|a| a.len() == dim).ok_or(value)?;
    for item in items {
        builder
            .values()
            .append_value(convert(item.as_f64().ok_or(value)?));
    }
    builder.append(true);
    Ok(())
}

/// Appends the rows of `batch` as JSON objects to `out`, comma-separated; `first` tracks
/// whether a row was already written (for streaming a `{"rows": [...]}` body batch by batch).
pub fn write_rows(batch: &RecordBatch, out: &mut Vec<u8>, first: &mut bool) -> Result<()> {
    let schema = batch.schema();
    for row in 0..batch.num_rows() {
        if !*first {
            out.push(b',');
        }
        *first = false;
        let mut object = Map::with_capacity(batch.num_columns());
        for (field, column) in schema.fields().iter().zip(batch.columns()) {
            object.insert(field.name().clone(), cell_to_json(column.as_ref(), row));
        }
        serde_json::to_writer(&mut *out, &Value::Object(object))
            .map_err(|e| Error::Internal(format!("encoding JSON rows: {e}")))?;
    }
    Ok(())
}

/// One cell as JSON: timestamps RFC 3339, dates `YYYY-MM-DD`, binary base64, vectors arrays,
/// non-finite floats null.
pub fn cell_to_json(array: &dyn Array, row: usize) -> Value {
    if array.is_null(row) {
        return Value::Null;
    }
    let float = |x: f64| Number::from_f64(x).map_or(Value::Null, Value::Number);
    match array.data_type() {
        DataType::Boolean => Value::Bool(array.as_boolean().value(row)),
        DataType::Int32 => Value::from(array.as_primitive::<Int32Type>().value(row)),
        DataType::Int64 => Value::from(array.as_primitive::<Int64Type>().value(row)),
        DataType::Float32 => float(f64::from(array.as_primitive::<Float32Type>().value(row))),
        DataType::Float64 => float(array.as_primitive::<Float64Type>().value(row)),
        DataType::Utf8 => Value::String(array.as_string::<i32>().value(row).to_owned()),
        DataType::Binary => Value::String(BASE64.encode(array.as_binary::<i32>().value(row))),
        DataType::Date32 => {
            Value::String(format_date(array.as_primitive::<Date32Type>().value(row)))
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => Value::String(format_timestamp(
            array.as_primitive::<TimestampMicrosecondType>().value(row),
        )),
        DataType::FixedSizeList(_, _) => {
            let values = array.as_fixed_size_list().value(row);
            Value::Array(
                (0..values.len())
                    .map(|i| cell_to_json(values.as_ref(), i))
                    .collect(),
            )
        }
        other => Value::String(format!("<unsupported type {other}>")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec() -> FeatureSetSpec {
        FeatureSetSpec::from_json(
            br#"{"name": "s", "entity": {"name": "id", "type": "string"},
                 "features": [{"name": "n", "type": "int32"}, {"name": "b", "type": "binary"},
                              {"name": "d", "type": "date"}, {"name": "e", "type": "float32[2]"}]}"#,
        )
        .unwrap()
    }

    fn rows(value: Value) -> Vec<Map<String, Value>> {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn round_trips_rows() {
        let input = json!([
            {"id": "u1", "event_timestamp": "2026-01-01T00:00:00Z", "n": 7, "b": "AQI=", "d": "2026-01-02", "e": [1.0, 2.5]},
            {"id": "u2", "event_timestamp": "2026-01-01T00:00:00.5Z"}
        ]);
        let batch = rows_to_batch(&spec(), &rows(input.clone())).unwrap();
        let mut out = Vec::new();
        let mut first = true;
        write_rows(&batch, &mut out, &mut first).unwrap();
        let back: Value = serde_json::from_slice(&[b"[", &out[..], b"]"].concat()).unwrap();
        assert_eq!(back[0], input[0]);
        assert_eq!(back[1]["n"], Value::Null);
        assert_eq!(back[1]["event_timestamp"], "2026-01-01T00:00:00.500Z");
    }

    #[test]
    fn rejects_bad_rows_naming_row_and_column() {
        let cases = [
            (
                json!([{"id": "u", "event_timestamp": "2026-01-01T00:00:00Z", "n": "7"}]),
                "row 0: column \"n\"",
            ),
            (
                json!([{"id": "u", "event_timestamp": "2026-01-01T00:00:00Z", "n": 3000000000i64}]),
                "32-bit",
            ),
            (
                json!([{"id": "u", "event_timestamp": "2026-01-01T00:00:00Z"}, {"id": "u"}]),
                "row 1: column \"event_timestamp\"",
            ),
            (
                json!([{"id": "u", "event_timestamp": "2026-01-01T00:00:00Z", "zz": 1}]),
                "\"zz\" is not declared",
            ),
            (
                json!([{"id": "u", "event_timestamp": "2026-01-01T00:00:00Z", "e": [1]}]),
                "2 numbers",
            ),
            (
                json!([{"id": 5, "event_timestamp": "2026-01-01T00:00:00Z"}]),
                "column \"id\"",
            ),
        ];
        for (input, expected) in cases {
            let err = rows_to_batch(&spec(), &rows(input)).unwrap_err();
            assert!(err.to_string().contains(expected), "{err} vs {expected}");
        }
    }
}
