//! JSON rows on the HTTP API and in JSON lines files: decoding ingest rows straight into Arrow
//! builders, encoding result rows.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, BooleanBuilder, Date32Builder, FixedSizeListBuilder,
    Float32Builder, Float64Builder, Int32Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{
    DataType, Date32Type, Float32Type, Float64Type, Int32Type, Int64Type, TimeUnit,
    TimestampMicrosecondType,
};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Number, Value};

use crate::spec::FeatureSetSpec;
use crate::time::{
    format_date, format_timestamp, parse_date, parse_timestamp, write_timestamp_json,
};
use crate::types::{EntityType, FeatureType};
use crate::{Error, Result};

/// Decodes a `{"rows": [{...}, ...]}` body straight into a canonical batch of `spec`: each
/// row goes into Arrow builders as it is read, so the peak memory is the body plus the batch,
/// never a tree of the whole body. Errors name the row and the column (see [`RowsBuilder`]).
pub fn rows_body_to_batch(spec: &FeatureSetSpec, body: &[u8]) -> Result<RecordBatch> {
    let mut builder = RowsBuilder::new(spec);
    let mut json = serde_json::Deserializer::from_slice(body);
    let parsed = json
        .deserialize_map(BodyVisitor {
            builder: &mut builder,
        })
        .and_then(|()| json.end());
    if let Err(e) = parsed {
        return Err(builder.failure.take().unwrap_or_else(|| {
            Error::invalid(format!(
                "invalid rows body (expected {{\"rows\": [{{...}}, ...]}}): {e}"
            ))
        }));
    }
    builder.finish()
}

/// Builds a canonical batch of a spec from JSON objects, one row at a time. A key the spec
/// does not declare, a key given twice in a row, a value of the wrong JSON type or out of its
/// type's range, and a missing or null entity or timestamp are rejected naming row and column.
pub struct RowsBuilder<'s> {
    spec: &'s FeatureSetSpec,
    /// Canonical order: entity, features in spec order, timestamp.
    columns: Vec<JsonColumn<'s>>,
    by_name: HashMap<&'s str, usize>,
    /// Per column, the last row that gave it a value: finds keys given twice and left out.
    set_in_row: Vec<Option<usize>>,
    rows: usize,
    /// The first error met inside a row: it names the row and column, which serde's own
    /// error (which only knows the position in the text) cannot.
    failure: Option<Error>,
}

struct JsonColumn<'s> {
    name: &'s str,
    nullable: bool,
    builder: ColumnBuilder,
}

enum ColumnBuilder {
    Bool(BooleanBuilder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Float32(Float32Builder),
    Float64(Float64Builder),
    String(StringBuilder),
    Binary(BinaryBuilder),
    Date(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder),
    Float32Vector(FixedSizeListBuilder<Float32Builder>, usize),
    Float64Vector(FixedSizeListBuilder<Float64Builder>, usize),
}

impl ColumnBuilder {
    fn new(feature_type: FeatureType) -> Self {
        match feature_type {
            FeatureType::Bool => ColumnBuilder::Bool(BooleanBuilder::new()),
            FeatureType::Int32 => ColumnBuilder::Int32(Int32Builder::new()),
            FeatureType::Int64 => ColumnBuilder::Int64(Int64Builder::new()),
            FeatureType::Float32 => ColumnBuilder::Float32(Float32Builder::new()),
            FeatureType::Float64 => ColumnBuilder::Float64(Float64Builder::new()),
            FeatureType::String => ColumnBuilder::String(StringBuilder::new()),
            FeatureType::Binary => ColumnBuilder::Binary(BinaryBuilder::new()),
            FeatureType::Date => ColumnBuilder::Date(Date32Builder::new()),
            FeatureType::Timestamp => {
                ColumnBuilder::Timestamp(TimestampMicrosecondBuilder::new().with_timezone("UTC"))
            }
            FeatureType::Float32Vector(n) => ColumnBuilder::Float32Vector(
                FixedSizeListBuilder::new(Float32Builder::new(), n as i32),
                n,
            ),
            FeatureType::Float64Vector(n) => ColumnBuilder::Float64Vector(
                FixedSizeListBuilder::new(Float64Builder::new(), n as i32),
                n,
            ),
        }
    }

    fn append_null(&mut self) {
        match self {
            ColumnBuilder::Bool(b) => b.append_null(),
            ColumnBuilder::Int32(b) => b.append_null(),
            ColumnBuilder::Int64(b) => b.append_null(),
            ColumnBuilder::Float32(b) => b.append_null(),
            ColumnBuilder::Float64(b) => b.append_null(),
            ColumnBuilder::String(b) => b.append_null(),
            ColumnBuilder::Binary(b) => b.append_null(),
            ColumnBuilder::Date(b) => b.append_null(),
            ColumnBuilder::Timestamp(b) => b.append_null(),
            ColumnBuilder::Float32Vector(b, n) => {
                b.values().append_nulls(*n);
                b.append(false);
            }
            ColumnBuilder::Float64Vector(b, n) => {
                b.values().append_nulls(*n);
                b.append(false);
            }
        }
    }

    /// Appends a non-null JSON value; on a mismatch, says what was expected.
    fn append(&mut self, value: &Value) -> std::result::Result<(), Mismatch> {
        let wrong = |expected: &str| Mismatch::Type(expected.to_owned());
        match self {
            ColumnBuilder::Bool(b) => {
                b.append_value(value.as_bool().ok_or_else(|| wrong("true or false"))?)
            }
            ColumnBuilder::Int32(b) => b.append_value(
                value
                    .as_i64()
                    .and_then(|x| i32::try_from(x).ok())
                    .ok_or_else(|| wrong("a 32-bit integer"))?,
            ),
            ColumnBuilder::Int64(b) => {
                b.append_value(value.as_i64().ok_or_else(|| wrong("an integer"))?)
            }
            ColumnBuilder::Float32(b) => {
                b.append_value(float32(value).ok_or_else(|| wrong("a number"))??)
            }
            ColumnBuilder::Float64(b) => {
                b.append_value(value.as_f64().ok_or_else(|| wrong("a number"))?)
            }
            ColumnBuilder::String(b) => {
                b.append_value(value.as_str().ok_or_else(|| wrong("a string"))?)
            }
            ColumnBuilder::Binary(b) => b.append_value(
                value
                    .as_str()
                    .and_then(|s| BASE64.decode(s).ok())
                    .ok_or_else(|| wrong("a base64 string"))?,
            ),
            ColumnBuilder::Date(b) => {
                let text = value.as_str().ok_or_else(|| wrong("a date YYYY-MM-DD"))?;
                b.append_value(parse_date(text).map_err(Mismatch::Value)?)
            }
            ColumnBuilder::Timestamp(b) => {
                let text = value
                    .as_str()
                    .ok_or_else(|| wrong("an RFC 3339 timestamp string"))?;
                b.append_value(parse_timestamp(text).map_err(Mismatch::Value)?)
            }
            ColumnBuilder::Float32Vector(b, n) => {
                let items = vector_items(value, *n)?;
                for item in items {
                    let x = float32(item).ok_or_else(|| Mismatch::Type(vector_expected(*n)))??;
                    b.values().append_value(x);
                }
                b.append(true);
            }
            ColumnBuilder::Float64Vector(b, n) => {
                let items = vector_items(value, *n)?;
                for item in items {
                    let x = item
                        .as_f64()
                        .ok_or_else(|| Mismatch::Type(vector_expected(*n)))?;
                    b.values().append_value(x);
                }
                b.append(true);
            }
        }
        Ok(())
    }

    fn finish(self) -> ArrayRef {
        match self {
            ColumnBuilder::Bool(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Int32(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Int64(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Float32(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Float64(mut b) => Arc::new(b.finish()),
            ColumnBuilder::String(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Binary(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Date(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Timestamp(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Float32Vector(mut b, _) => Arc::new(b.finish()),
            ColumnBuilder::Float64Vector(mut b, _) => Arc::new(b.finish()),
        }
    }
}

/// Why a JSON value does not fit its column.
enum Mismatch {
    /// The wrong JSON type (or shape): what was expected instead.
    Type(String),
    /// The right JSON type, but not a value of the column's type (bad or out-of-range date,
    /// timestamp, float32).
    Value(Error),
}

/// A JSON number as float32: `None` if it is not a number; an error if it is finite but
/// beyond float32's range (rounding to the nearest float32 is fine).
fn float32(value: &Value) -> Option<std::result::Result<f32, Mismatch>> {
    let x = value.as_f64()?;
    let narrowed = x as f32;
    Some(if x.is_finite() && narrowed.is_infinite() {
        Err(Mismatch::Value(Error::invalid(format!(
            "{x} is out of the range of float32 (-3.4028235e38 to 3.4028235e38)"
        ))))
    } else {
        Ok(narrowed)
    })
}

fn vector_expected(n: usize) -> String {
    format!("an array of {n} numbers")
}

fn vector_items(value: &Value, n: usize) -> std::result::Result<&Vec<Value>, Mismatch> {
    value
        .as_array()
        .filter(|items| items.len() == n)
        .ok_or_else(|| Mismatch::Type(vector_expected(n)))
}

impl<'s> RowsBuilder<'s> {
    pub fn new(spec: &'s FeatureSetSpec) -> Self {
        let key_type = match spec.entity.entity_type {
            EntityType::String => FeatureType::String,
            EntityType::Int64 => FeatureType::Int64,
        };
        let mut columns = Vec::with_capacity(spec.features.len() + 2);
        let column = |name: &'s str, feature_type: FeatureType, nullable: bool| JsonColumn {
            name,
            nullable,
            builder: ColumnBuilder::new(feature_type),
        };
        columns.push(column(&spec.entity.name, key_type, false));
        for feature in &spec.features {
            columns.push(column(&feature.name, feature.feature_type, true));
        }
        columns.push(column(&spec.timestamp, FeatureType::Timestamp, false));
        let by_name = columns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name, i))
            .collect();
        RowsBuilder {
            spec,
            set_in_row: vec![None; columns.len()],
            columns,
            by_name,
            rows: 0,
            failure: None,
        }
    }

    /// Rows appended so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Appends one row from the text of one JSON object (a line of a JSON lines file).
    pub fn push_json(&mut self, text: &str) -> Result<()> {
        let mut json = serde_json::Deserializer::from_str(text);
        let parsed = RowSeed { builder: self }
            .deserialize(&mut json)
            .and_then(|()| json.end());
        parsed.map_err(|e| {
            self.failure.take().unwrap_or_else(|| {
                Error::invalid(format!("row {}: expected a JSON object: {e}", self.rows))
            })
        })
    }

    /// The batch of the rows appended, in the spec's canonical schema.
    pub fn finish(self) -> Result<RecordBatch> {
        let columns = self
            .columns
            .into_iter()
            .map(|c| c.builder.finish())
            .collect();
        Ok(RecordBatch::try_new(self.spec.arrow_schema(), columns)?)
    }

    /// Records the first error of a row and returns serde's stand-in for it.
    fn fail<E: de::Error>(&mut self, error: Error) -> E {
        let message = error.to_string();
        self.failure.get_or_insert(error);
        E::custom(message)
    }

    fn cell<E: de::Error>(&mut self, index: usize, value: &Value) -> std::result::Result<(), E> {
        let row = self.rows;
        let column = &mut self.columns[index];
        let name = column.name;
        let appended = if value.is_null() {
            if column.nullable {
                column.builder.append_null();
                Ok(())
            } else {
                Err(Error::invalid(format!(
                    "row {row}: column {name:?} is missing or null; it may not be null"
                )))
            }
        } else {
            column
                .builder
                .append(value)
                .map_err(|mismatch| match mismatch {
                    Mismatch::Type(expected) => Error::invalid(format!(
                        "row {row}: column {name:?} is {value}; expected {expected}"
                    )),
                    Mismatch::Value(e) => {
                        Error::invalid(format!("row {row}: column {name:?}: {e}"))
                    }
                })
        };
        appended.map_err(|e| self.fail(e))
    }

    /// Ends a row: columns it left out are null, or an error if they may not be.
    fn end_row<E: de::Error>(&mut self) -> std::result::Result<(), E> {
        let row = self.rows;
        for index in 0..self.columns.len() {
            if self.set_in_row[index] != Some(row) {
                self.cell::<E>(index, &Value::Null)?;
            }
        }
        self.rows += 1;
        Ok(())
    }
}

/// The top level of a rows body: `{"rows": [...]}` and nothing else.
struct BodyVisitor<'b, 's> {
    builder: &'b mut RowsBuilder<'s>,
}

impl<'de> Visitor<'de> for BodyVisitor<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object {\"rows\": [...]}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        let mut seen_rows = false;
        while let Some(key) = map.next_key::<String>()? {
            if key != "rows" {
                return Err(self.builder.fail(Error::invalid(format!(
                    "invalid rows body: unknown key {key:?}; expected {{\"rows\": [{{...}}, ...]}}"
                ))));
            }
            if seen_rows {
                return Err(self.builder.fail(Error::invalid(
                    "invalid rows body: the key \"rows\" appears more than once",
                )));
            }
            seen_rows = true;
            map.next_value_seed(RowsSeed {
                builder: &mut *self.builder,
            })?;
        }
        if !seen_rows {
            return Err(self.builder.fail(Error::invalid(
                "invalid rows body: missing \"rows\"; expected {\"rows\": [{...}, ...]}",
            )));
        }
        Ok(())
    }
}

/// The array of rows.
struct RowsSeed<'b, 's> {
    builder: &'b mut RowsBuilder<'s>,
}

impl<'de> DeserializeSeed<'de> for RowsSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for RowsSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of row objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
        while seq
            .next_element_seed(RowSeed {
                builder: &mut *self.builder,
            })?
            .is_some()
        {}
        Ok(())
    }
}

/// A key of a row: the index of its column, or the unknown name. Keys are looked up as they
/// are read, without an allocation per key.
struct ColumnKey<'b, 's> {
    by_name: &'b HashMap<&'s str, usize>,
}

impl<'de> DeserializeSeed<'de> for ColumnKey<'_, '_> {
    type Value = std::result::Result<usize, String>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for ColumnKey<'_, '_> {
    type Value = std::result::Result<usize, String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a column name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> std::result::Result<Self::Value, E> {
        Ok(self.by_name.get(key).copied().ok_or_else(|| key.to_owned()))
    }
}

/// One row object, appended to the builder as it is read.
struct RowSeed<'b, 's> {
    builder: &'b mut RowsBuilder<'s>,
}

impl<'de> DeserializeSeed<'de> for RowSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RowSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "row {} as a JSON object", self.builder.rows)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        let builder = self.builder;
        let row = builder.rows;
        while let Some(key) = map.next_key_seed(ColumnKey {
            by_name: &builder.by_name,
        })? {
            let index = match key {
                Ok(index) => index,
                Err(unknown) => {
                    return Err(builder.fail(Error::invalid(format!(
                        "row {row}: column {unknown:?} is not declared by feature set {:?}",
                        builder.spec.name
                    ))))
                }
            };
            if builder.set_in_row[index] == Some(row) {
                let name = builder.columns[index].name;
                return Err(builder.fail(Error::invalid(format!(
                    "row {row}: key {name:?} appears more than once"
                ))));
            }
            builder.set_in_row[index] = Some(row);
            // One cell at a time: only this value is ever a tree.
            let value: Value = map.next_value()?;
            builder.cell::<A::Error>(index, &value)?;
        }
        builder.end_row()
    }
}

/// Appends the rows of `batch` as JSON objects to `out`, comma-separated; `first` tracks
/// whether a row was already written (for streaming a `{"rows": [...]}` body batch by batch).
///
/// Written straight into `out`, cell by cell, with each column name escaped once per batch:
/// the same bytes as serializing a [`cell_to_json`] object per row, without a map, a key
/// clone and a `Value` per cell (the JSON answer cost ~100x the index lookup that way).
pub fn write_rows(batch: &RecordBatch, out: &mut Vec<u8>, first: &mut bool) -> Result<()> {
    let schema = batch.schema();
    let mut keys = Vec::with_capacity(batch.num_columns());
    for (i, field) in schema.fields().iter().enumerate() {
        let mut key = Vec::with_capacity(field.name().len() + 4);
        key.push(if i == 0 { b'{' } else { b',' });
        write_json(&mut key, field.name().as_str())?;
        key.push(b':');
        keys.push(key);
    }
    for row in 0..batch.num_rows() {
        if !*first {
            out.push(b',');
        }
        *first = false;
        if keys.is_empty() {
            out.push(b'{');
        }
        for (key, column) in keys.iter().zip(batch.columns()) {
            out.extend_from_slice(key);
            write_cell(column.as_ref(), row, out)?;
        }
        out.push(b'}');
    }
    Ok(())
}

fn write_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<()> {
    serde_json::to_writer(out, value)
        .map_err(|e| Error::Internal(format!("encoding JSON rows: {e}")))
}

/// Writes what [`cell_to_json`] answers for the cell, as serde_json would write it.
fn write_cell(array: &dyn Array, row: usize, out: &mut Vec<u8>) -> Result<()> {
    if array.is_null(row) {
        out.extend_from_slice(b"null");
        return Ok(());
    }
    match array.data_type() {
        DataType::Boolean => write_json(out, &array.as_boolean().value(row)),
        DataType::Int32 => write_json(out, &array.as_primitive::<Int32Type>().value(row)),
        DataType::Int64 => write_json(out, &array.as_primitive::<Int64Type>().value(row)),
        DataType::Float32 => write_float32(out, array.as_primitive::<Float32Type>().value(row)),
        // serde_json writes a non-finite f64 as null, as `cell_to_json` answers it.
        DataType::Float64 => write_json(out, &array.as_primitive::<Float64Type>().value(row)),
        DataType::Utf8 => write_json(out, array.as_string::<i32>().value(row)),
        DataType::Binary => {
            // Base64 needs no escaping.
            out.push(b'"');
            out.extend_from_slice(
                BASE64
                    .encode(array.as_binary::<i32>().value(row))
                    .as_bytes(),
            );
            out.push(b'"');
            Ok(())
        }
        DataType::Date32 => write_json(
            out,
            &format_date(array.as_primitive::<Date32Type>().value(row)),
        ),
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            write_timestamp_json(
                out,
                array.as_primitive::<TimestampMicrosecondType>().value(row),
            );
            Ok(())
        }
        DataType::FixedSizeList(_, _) => {
            let values = array.as_fixed_size_list().value(row);
            out.push(b'[');
            for i in 0..values.len() {
                if i > 0 {
                    out.push(b',');
                }
                write_cell(values.as_ref(), i, out)?;
            }
            out.push(b']');
            Ok(())
        }
        _ => write_json(out, &cell_to_json(array, row)),
    }
}

/// Writes a float32 as [`float32_to_json`] renders it. Where both print plain decimals
/// (`1e-4 <= |x| < 1e11`, and zero), the shortest float32 digits (zmij, the formatter
/// serde_json uses for float64) are already serde_json's
/// rendering of the widened float64, so they are written at once: the round trip through a
/// float64 (format, parse, format again) was most of the cost of a JSON online answer.
/// Elsewhere the notations differ (`1e-5` against `1e-05`, say), and the value goes the long
/// way.
fn write_float32(out: &mut Vec<u8>, x: f32) -> Result<()> {
    if x == 0.0 || (1e-4..1e11).contains(&x.abs()) {
        let mut digits = zmij::Buffer::new();
        out.extend_from_slice(digits.format_finite(x).as_bytes());
        return Ok(());
    }
    match float32_widened(x) {
        Some(widened) => write_json(out, &widened),
        None => write_json(out, &()),
    }
}

/// One cell as JSON: timestamps RFC 3339, dates `YYYY-MM-DD`, binary base64, vectors arrays,
/// float32 values by their shortest round-trip digits (see [`float32_to_json`]), non-finite
/// floats null.
pub fn cell_to_json(array: &dyn Array, row: usize) -> Value {
    if array.is_null(row) {
        return Value::Null;
    }
    let float = |x: f64| Number::from_f64(x).map_or(Value::Null, Value::Number);
    match array.data_type() {
        DataType::Boolean => Value::Bool(array.as_boolean().value(row)),
        DataType::Int32 => Value::from(array.as_primitive::<Int32Type>().value(row)),
        DataType::Int64 => Value::from(array.as_primitive::<Int64Type>().value(row)),
        DataType::Float32 => float32_to_json(array.as_primitive::<Float32Type>().value(row)),
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

/// A float32 as the JSON number with the fewest digits that reads back as the same float32:
/// `0.12`, not the digits of its exact float64 widening (`0.11999999731779099`). Non-finite
/// values are null.
pub fn float32_to_json(x: f32) -> Value {
    float32_widened(x)
        .and_then(Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

/// The f64 that serde_json writes with the shortest round-trip digits of `x`; `None` for a
/// non-finite `x`.
fn float32_widened(x: f32) -> Option<f64> {
    if !x.is_finite() {
        return None;
    }
    // ryu writes an f32's shortest round-trip digits (at most 9); read as an f64 they give the
    // f64 closest to that decimal, which serde_json writes with the same digits.
    let mut digits = ryu::Buffer::new();
    Some(
        digits
            .format_finite(x)
            .parse::<f64>()
            .unwrap_or(f64::from(x)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Map};

    fn spec() -> FeatureSetSpec {
        FeatureSetSpec::from_json(
            br#"{"name": "s", "entity": {"name": "id", "type": "string"},
                 "features": [{"name": "n", "type": "int32"}, {"name": "b", "type": "binary"},
                              {"name": "d", "type": "date"}, {"name": "e", "type": "float32[2]"}]}"#,
        )
        .unwrap()
    }

    fn rows(value: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({ "rows": value })).unwrap()
    }

    fn rows_to_batch(spec: &FeatureSetSpec, body: &[u8]) -> Result<RecordBatch> {
        rows_body_to_batch(spec, body)
    }

    /// The encoding before `write_rows` wrote straight into its buffer: a `serde_json` object
    /// of `cell_to_json` values per row. The reference the direct writer must match byte for
    /// byte.
    fn rows_through_values(batch: &RecordBatch) -> Vec<u8> {
        let mut out = Vec::new();
        for row in 0..batch.num_rows() {
            if row > 0 {
                out.push(b',');
            }
            let mut object = Map::new();
            for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
                object.insert(field.name().clone(), cell_to_json(column.as_ref(), row));
            }
            serde_json::to_writer(&mut out, &Value::Object(object)).unwrap();
        }
        out
    }

    fn assert_same_rows(batch: &RecordBatch) {
        let mut direct = Vec::new();
        write_rows(batch, &mut direct, &mut true).unwrap();
        assert_eq!(
            String::from_utf8(direct).unwrap(),
            String::from_utf8(rows_through_values(batch)).unwrap()
        );
    }

    #[test]
    fn direct_rows_match_value_rows_on_every_type() {
        use arrow::array::{
            BinaryArray, BooleanArray, Date32Array, Float32Array, Float64Array, Int32Array,
            Int64Array, StringArray, TimestampMicrosecondArray, TimestampNanosecondArray,
        };
        let floats32 = [
            Some(0.1f32),
            Some(1e-7),
            Some(f32::MAX),
            Some(f32::MIN_POSITIVE),
            Some(f32::NAN),
            Some(f32::INFINITY),
            Some(-0.0),
            Some(1.0),
            None,
            Some(123_456_789.0),
        ];
        let floats64 = floats32.map(|x| x.map(|x| f64::from(x) * 1.1));
        let strings = [
            Some("plain"),
            Some("quote \" and backslash \\"),
            Some("line\nbreak\ttab"),
            Some("\u{1}control\u{1f}"),
            Some("été 🚀"),
            None,
            Some(""),
            Some("</script>"),
            Some("\u{7f}"),
            Some("z"),
        ];
        let mut vectors = FixedSizeListBuilder::new(Float32Builder::new(), 2);
        for (row, x) in floats32.iter().enumerate() {
            vectors.values().append_option(*x);
            vectors.values().append_value(row as f32 / 3.0);
            vectors.append(row != 5);
        }
        let rows = floats32.len() as i64;
        let batch = RecordBatch::try_from_iter(vec![
            (
                "id",
                Arc::new(StringArray::from(strings.to_vec())) as ArrayRef,
            ),
            (
                "na\"me\\",
                Arc::new(Int32Array::from_iter(
                    (0..rows).map(|i| (i % 3 != 0).then_some(i as i32 * -7)),
                )),
            ),
            (
                "big",
                Arc::new(Int64Array::from_iter(
                    (0..rows).map(|i| (i != 2).then_some(i64::MAX - i)),
                )),
            ),
            ("f32", Arc::new(Float32Array::from(floats32.to_vec()))),
            ("f64", Arc::new(Float64Array::from(floats64.to_vec()))),
            (
                "flag",
                Arc::new(BooleanArray::from_iter(
                    (0..rows).map(|i| (i != 4).then_some(i % 2 == 0)),
                )),
            ),
            (
                "bytes",
                Arc::new(BinaryArray::from_iter(
                    (0..rows).map(|i| (i != 1).then(|| vec![i as u8; i as usize])),
                )),
            ),
            (
                "day",
                Arc::new(Date32Array::from_iter(
                    (0..rows).map(|i| (i != 3).then_some(20_000 + i as i32 * 400)),
                )),
            ),
            ("vector", Arc::new(vectors.finish())),
            (
                "nanos",
                Arc::new(TimestampNanosecondArray::from_iter_values(0..rows)),
            ),
            (
                "event_timestamp",
                Arc::new(
                    TimestampMicrosecondArray::from_iter(
                        (0..rows)
                            .map(|i| (i != 0).then_some(1_767_225_600_000_000 + i * 1_000_001)),
                    )
                    .with_timezone("UTC"),
                ),
            ),
        ])
        .unwrap();
        assert_same_rows(&batch);
        assert_same_rows(&batch.slice(3, 4));
        assert_same_rows(&batch.slice(0, 0));
        let mixed = featherstore_testkit::fixtures::mixed_batch(
            &mut featherstore_testkit::fixtures::Rng(3),
            0,
            500,
        );
        assert_same_rows(&mixed);
        // The kit's spec is of the kit's own build of this crate (a unit test's crate is a
        // second copy): carried over by its JSON form.
        let spec: crate::FeatureSetSpec = serde_json::from_value(
            serde_json::to_value(featherstore_testkit::fixtures::mixed_spec()).unwrap(),
        )
        .unwrap();
        assert_same_rows(&crate::coerce::coerce_batch(&spec, &mixed).unwrap());
    }

    #[test]
    fn direct_rows_continue_a_streamed_body() {
        let batch = rows_to_batch(
            &spec(),
            &rows(json!([
                {"id": "a", "n": 1, "event_timestamp": "2026-01-01T00:00:00Z"},
                {"id": "b", "event_timestamp": "2026-01-01T00:00:01Z"}
            ])),
        )
        .unwrap();
        let mut out = Vec::new();
        let mut first = true;
        write_rows(&batch, &mut out, &mut first).unwrap();
        write_rows(&batch.slice(0, 0), &mut out, &mut first).unwrap();
        write_rows(&batch, &mut out, &mut first).unwrap();
        let rows: Value = serde_json::from_slice(&[b"[", out.as_slice(), b"]"].concat()).unwrap();
        assert_eq!(rows.as_array().unwrap().len(), 4);
        assert_eq!(rows[2]["id"], "a");
        assert_eq!(rows[3]["n"], Value::Null);
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

    fn spec_with_floats() -> FeatureSetSpec {
        FeatureSetSpec::from_json(
            br#"{"name": "s", "entity": {"name": "id", "type": "string"},
                 "features": [{"name": "f", "type": "float32"}, {"name": "v", "type": "float32[2]"},
                              {"name": "t", "type": "timestamp"}, {"name": "d", "type": "date"}]}"#,
        )
        .unwrap()
    }

    fn error_of(spec: &FeatureSetSpec, body: &str) -> String {
        let err = rows_body_to_batch(spec, body.as_bytes()).unwrap_err();
        assert_eq!(err.code(), crate::ErrorCode::InvalidArgument, "{err}");
        err.to_string()
    }

    #[test]
    fn rejects_duplicate_keys_and_out_of_range_values() {
        let spec = spec_with_floats();
        let ts = r#""event_timestamp": "2026-01-01T00:00:00Z""#;
        let cases = [
            (
                format!(r#"{{"rows": [{{"id": "a", {ts}}}, {{"id": "a", {ts}, "f": 1, "f": 2}}]}}"#),
                vec!["row 1", "\"f\"", "more than once"],
            ),
            (
                format!(r#"{{"rows": [{{"id": "a", "id": "b", {ts}}}]}}"#),
                vec!["row 0", "\"id\"", "more than once"],
            ),
            (
                format!(r#"{{"rows": [{{"id": "a", {ts}, "f": 1e39}}]}}"#),
                vec!["row 0", "column \"f\"", "1000000000000000000000000000000000000000", "float32"],
            ),
            (
                format!(r#"{{"rows": [{{"id": "a", {ts}, "v": [1, -1e39]}}]}}"#),
                vec!["row 0", "column \"v\"", "float32"],
            ),
            (
                format!(r#"{{"rows": [{{"id": "a", {ts}, "t": "0000-12-31T23:59:59Z"}}]}}"#),
                vec!["row 0", "column \"t\"", "0000-12-31T23:59:59Z", "0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z"],
            ),
            (
                r#"{"rows": [{"id": "a", "event_timestamp": "2026-01-01T00:00:00-00:00"}, {"id": "a", "event_timestamp": "9999-12-31T23:00:00-01:00"}]}"#.to_string(),
                vec!["row 1", "column \"event_timestamp\"", "out of range"],
            ),
            (
                format!(r#"{{"rows": [{{"id": "a", {ts}, "d": "0000-01-01"}}]}}"#),
                vec!["row 0", "column \"d\"", "0001-01-01 to 9999-12-31"],
            ),
            (
                format!(r#"{{"rows": [{{"id": "a", {ts}}}], "rows": []}}"#),
                vec!["\"rows\" appears more than once"],
            ),
            (r#"{"rows": [], "more": 1}"#.to_string(), vec!["unknown key \"more\""]),
            (r#"{}"#.to_string(), vec!["missing \"rows\""]),
            (r#"{"rows": [1]}"#.to_string(), vec!["invalid rows body", "row 0 as a JSON object"]),
            (r#"{"rows": []} x"#.to_string(), vec!["invalid rows body", "trailing"]),
        ];
        for (body, needles) in cases {
            let message = error_of(&spec, &body);
            for needle in needles {
                assert!(
                    message.contains(needle),
                    "{body}: {message:?} lacks {needle:?}"
                );
            }
        }
    }

    #[test]
    fn float32_rounds_to_nearest_and_keeps_its_limits() {
        let spec = spec_with_floats();
        let body = r#"{"rows": [
            {"id": "a", "event_timestamp": "0001-01-01T00:00:00Z", "f": 3.4028235e38, "v": [0.1, -3.4028235e38]},
            {"id": "b", "event_timestamp": "9999-12-31T23:59:59.999999Z", "f": 1e-50, "t": "9999-12-31T23:59:59.999999Z", "d": "9999-12-31"}
        ]}"#;
        let batch = rows_body_to_batch(&spec, body.as_bytes()).unwrap();
        let f = batch.column(1).as_primitive::<Float32Type>();
        assert_eq!(f.value(0), f32::MAX);
        assert_eq!(f.value(1), 0.0, "underflow rounds to zero");
        let mut out = Vec::new();
        write_rows(&batch, &mut out, &mut true).unwrap();
        let back: Value = serde_json::from_slice(&[b"[", &out[..], b"]"].concat()).unwrap();
        assert_eq!(back[0]["event_timestamp"], "0001-01-01T00:00:00Z");
        assert_eq!(back[1]["t"], "9999-12-31T23:59:59.999999Z");
        assert_eq!(back[1]["d"], "9999-12-31");
    }

    #[test]
    fn float32_cells_are_written_as_their_json_value_renders() {
        // Bit patterns across the whole float32 range (every exponent, both signs), plus the
        // edges of the direct path.
        let mut values: Vec<f32> = (0..u32::MAX / 7919)
            .map(|i| f32::from_bits(i.wrapping_mul(7919)))
            .collect();
        for edge in [
            1e-4f32,
            1e11,
            0.0,
            -0.0,
            f32::MIN_POSITIVE,
            f32::MAX,
            f32::NAN,
        ] {
            values.extend([edge, -edge, edge.next_up(), edge.next_down()]);
        }
        for x in values {
            let mut direct = Vec::new();
            write_float32(&mut direct, x).unwrap();
            let through_value = serde_json::to_vec(&float32_to_json(x)).unwrap();
            assert_eq!(
                String::from_utf8(direct).unwrap(),
                String::from_utf8(through_value).unwrap(),
                "{x:e} (bits {:#x})",
                x.to_bits()
            );
        }
    }

    #[test]
    fn float32_renders_its_shortest_round_trip_digits() {
        let values = [
            0.12f32,
            0.1,
            1.0 / 3.0,
            f32::MAX,
            f32::MIN_POSITIVE,
            1e-45,
            -2.5,
            16_777_217.0,
        ];
        for x in values {
            let json = serde_json::to_string(&float32_to_json(x)).unwrap();
            assert_eq!(
                json,
                serde_json::to_string(&x).unwrap(),
                "{x}: serde's f32 digits"
            );
            assert_eq!(json.parse::<f32>().unwrap(), x, "{json} reads back as {x}");
        }
        assert_eq!(
            serde_json::to_string(&float32_to_json(0.12)).unwrap(),
            "0.12"
        );
        assert_eq!(float32_to_json(f32::NAN), Value::Null);
        assert_eq!(float32_to_json(f32::INFINITY), Value::Null);

        let batch = RecordBatch::try_from_iter([
            (
                "f32",
                Arc::new(arrow::array::Float32Array::from(vec![0.12f32])) as ArrayRef,
            ),
            (
                "f64",
                Arc::new(arrow::array::Float64Array::from(vec![f64::from(0.12f32)])) as ArrayRef,
            ),
            ("v", {
                let mut list = FixedSizeListBuilder::new(Float32Builder::new(), 2);
                list.values().append_slice(&[0.12, 0.7]);
                list.append(true);
                Arc::new(list.finish()) as ArrayRef
            }),
        ])
        .unwrap();
        let mut out = Vec::new();
        write_rows(&batch, &mut out, &mut true).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"f32":0.12,"f64":0.11999999731779099,"v":[0.12,0.7]}"#,
            "float64 keeps its own digits"
        );
    }

    #[test]
    fn json_lines_rows_append_one_at_a_time() {
        let spec = spec();
        let mut builder = RowsBuilder::new(&spec);
        builder
            .push_json(r#"{"id": "u1", "event_timestamp": "2026-01-01T00:00:00Z", "n": 1}"#)
            .unwrap();
        let err = builder
            .push_json(r#"{"id": "u2", "#)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("row 1: expected a JSON object"), "{err}");
        let mut builder = RowsBuilder::new(&spec);
        for line in [
            r#"{"id": "u1", "event_timestamp": "2026-01-01T00:00:00Z", "n": 1}"#,
            r#"{"id": "u2", "event_timestamp": "2026-01-02T00:00:00Z"}"#,
        ] {
            builder.push_json(line).unwrap();
        }
        assert_eq!(builder.rows(), 2);
        let batch = builder.finish().unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert!(batch.column(1).is_null(1));
    }
}
