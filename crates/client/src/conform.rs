//! Conforming a batch to a feature set's declared types before it is sent: the client-side
//! counterpart of the server's strict ingest rules (PROTOCOL.md, "Ingest rules").
//!
//! The rules are on [`conform_batch`].

use std::sync::Arc;

use arrow::array::{
    new_null_array, Array, ArrayRef, AsArray, FixedSizeListArray, GenericListArray,
    OffsetSizeTrait, RecordBatch,
};
use arrow::compute::{cast, cast_with_options, CastOptions};
use arrow::datatypes::{DataType, Field, Float64Type, Schema, TimeUnit};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use featherstore_core::{EntityType, FeatureSetSpec, FeatureType};

/// A value that does not fit its column's declared type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column:?} row {row} holds {value}, which does not fit {declared}: {reason}")]
pub struct ConformError {
    /// The column, as named in the batch.
    pub column: String,
    /// The row, counted from 0 over everything conformed in one call or stream.
    pub row: u64,
    /// The value as text.
    pub value: String,
    /// The declared type (`int32`, `float32[64]`, ...).
    pub declared: String,
    /// Why it does not fit.
    pub reason: String,
}

/// `batch` with each column the set declares cast to its declared type where every value
/// fits; rows are counted from 0 in errors.
///
/// The server accepts only lossless widenings. Data from files and data frames often has
/// wider types than a set declares (float64 for a `float32` feature, int64 for an `int32` one),
/// so [`conform_batch`] casts every column whose values all survive the cast:
///
/// | declared | accepted, when each value fits |
/// | --- | --- |
/// | `int32`, `int64` (and int64 entities) | any integer type; floats holding whole numbers |
/// | `float32`, `float64` | any integer or float type, each value rounded to the nearest representable one; a finite value beyond float32's range (±3.4028235e38) does not fit |
/// | `string` (and string entities) | Utf8, LargeUtf8, Utf8View, dictionaries of them |
/// | `binary` | Binary, LargeBinary, BinaryView, FixedSizeBinary |
/// | `date` | Date32; Date64 and timestamps holding midnights (UTC) |
/// | `timestamp` (and the event time) | timestamps of any unit and zone (no zone: UTC); Date32/Date64 as midnight UTC |
/// | `float32[N]`, `float64[N]` | List, LargeList or FixedSizeList of integers or floats, items as for `float32`/`float64` |
///
/// A value that does not fit (an int64 beyond int32's range, a float64 beyond float32's, 2.5
/// for an integer feature) is an error naming the column, the row and the value; nothing is
/// rounded into a different value silently. Dictionary columns are decoded first; all-null
/// columns take the declared type. Columns the set does not declare, and types outside these
/// rules, are left as they are for the server to accept or reject.
///
/// ```
/// use std::sync::Arc;
/// use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray, TimestampSecondArray};
/// use featherstore_client::{conform_batch, FeatureSetSpec};
///
/// let spec = FeatureSetSpec::from_json(br#"{"name": "users",
///     "entity": {"name": "user_id", "type": "string"},
///     "features": [{"name": "score", "type": "float32"}]}"#).unwrap();
/// let batch = RecordBatch::try_from_iter([
///     ("user_id", Arc::new(StringArray::from(vec!["u1"])) as ArrayRef),
///     ("event_timestamp", Arc::new(TimestampSecondArray::from(vec![0])) as ArrayRef),
///     ("score", Arc::new(Float64Array::from(vec![0.12])) as ArrayRef),
/// ]).unwrap();
/// let conformed = conform_batch(&spec, &batch).unwrap();
/// assert_eq!(conformed.column(2).data_type(), &arrow::datatypes::DataType::Float32);
///
/// let too_big = RecordBatch::try_from_iter([
///     ("user_id", Arc::new(StringArray::from(vec!["u1"])) as ArrayRef),
///     ("event_timestamp", Arc::new(TimestampSecondArray::from(vec![0])) as ArrayRef),
///     ("score", Arc::new(Float64Array::from(vec![1e39])) as ArrayRef),
/// ]).unwrap();
/// let err = conform_batch(&spec, &too_big).unwrap_err().to_string();
/// assert!(err.starts_with("column \"score\" row 0 holds 1e39"), "{err}");
/// ```
pub fn conform_batch(
    spec: &FeatureSetSpec,
    batch: &RecordBatch,
) -> Result<RecordBatch, crate::Error> {
    conform_rows(spec, batch, 0)
}

/// [`conform_batch`] for a batch whose first row is row `first_row` of a longer input (a file
/// sent in several batches), so that errors name the row as the input counts it.
pub fn conform_rows(
    spec: &FeatureSetSpec,
    batch: &RecordBatch,
    first_row: u64,
) -> Result<RecordBatch, crate::Error> {
    let schema = batch.schema();
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        let name = field.name().as_str();
        let conformed = match declared_type(spec, name) {
            Some(declared) => Column {
                name,
                first_row,
                declared: &declared,
            }
            .conform(column)?,
            None => column.clone(),
        };
        fields.push(Field::new(name, conformed.data_type().clone(), true));
        columns.push(conformed);
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// What a column of the set is declared as.
enum Declared {
    Feature(FeatureType),
    Entity(EntityType),
    EventTime,
}

impl std::fmt::Display for Declared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Declared::Feature(t) => write!(f, "{t}"),
            Declared::Entity(t) => write!(f, "{t}"),
            Declared::EventTime => f.write_str("timestamp"),
        }
    }
}

fn declared_type(spec: &FeatureSetSpec, name: &str) -> Option<Declared> {
    if name == spec.entity.name {
        Some(Declared::Entity(spec.entity.entity_type))
    } else if name == spec.timestamp {
        Some(Declared::EventTime)
    } else {
        spec.feature(name)
            .map(|(_, feature)| Declared::Feature(feature.feature_type))
    }
}

/// One column being conformed, for naming it in errors.
struct Column<'a> {
    name: &'a str,
    first_row: u64,
    declared: &'a Declared,
}

/// The target of a scalar conversion.
#[derive(Clone)]
enum Scalar {
    Int(DataType),
    Float(DataType),
    String,
    Binary,
    Date,
    Timestamp,
}

impl Column<'_> {
    fn conform(&self, column: &ArrayRef) -> Result<ArrayRef, crate::Error> {
        let column = match column.data_type() {
            DataType::Dictionary(_, values) => cast(column, values)?,
            _ => column.clone(),
        };
        let scalar = match self.declared {
            Declared::Entity(EntityType::String) => Scalar::String,
            Declared::Entity(EntityType::Int64) => Scalar::Int(DataType::Int64),
            Declared::EventTime => Scalar::Timestamp,
            Declared::Feature(feature) => match feature {
                FeatureType::Int32 => Scalar::Int(DataType::Int32),
                FeatureType::Int64 => Scalar::Int(DataType::Int64),
                FeatureType::Float32 => Scalar::Float(DataType::Float32),
                FeatureType::Float64 => Scalar::Float(DataType::Float64),
                FeatureType::String => Scalar::String,
                FeatureType::Binary => Scalar::Binary,
                FeatureType::Date => Scalar::Date,
                FeatureType::Timestamp => Scalar::Timestamp,
                FeatureType::Bool => {
                    return Ok(if column.data_type() == &DataType::Null {
                        new_null_array(&DataType::Boolean, column.len())
                    } else {
                        column
                    })
                }
                FeatureType::Float32Vector(_) => {
                    return self.conform_vector(&column, DataType::Float32)
                }
                FeatureType::Float64Vector(_) => {
                    return self.conform_vector(&column, DataType::Float64)
                }
            },
        };
        self.conform_scalar(&column, scalar, |row| row)
    }

    /// Conforms scalar values; `row_of` maps an index into `column` to the row of the batch
    /// (the identity, or for vector items the row of their list).
    fn conform_scalar(
        &self,
        column: &ArrayRef,
        target: Scalar,
        row_of: impl Fn(usize) -> usize,
    ) -> Result<ArrayRef, crate::Error> {
        let actual = column.data_type();
        if actual == &DataType::Null {
            let data_type = match target {
                Scalar::Int(t) | Scalar::Float(t) => t,
                Scalar::String => DataType::Utf8,
                Scalar::Binary => DataType::Binary,
                Scalar::Date => DataType::Date32,
                Scalar::Timestamp => featherstore_core::types::timestamp_type(),
            };
            return Ok(new_null_array(&data_type, column.len()));
        }
        if let Scalar::Int(t) | Scalar::Float(t) = &target {
            if actual == t {
                return Ok(column.clone());
            }
        }
        match target {
            Scalar::Int(target) if actual.is_integer() => {
                self.checked_cast(column, &target, &row_of, "out of its range")
            }
            Scalar::Int(target) if actual.is_floating() => {
                let wide = cast(column, &DataType::Float64)?;
                let values = wide.as_primitive::<Float64Type>();
                if let Some(index) = (0..values.len())
                    .find(|&i| values.is_valid(i) && values.value(i).fract() != 0.0)
                {
                    return Err(self.error(column, index, &row_of, "not a whole number"));
                }
                self.checked_cast(column, &target, &row_of, "out of its range")
            }
            Scalar::Float(target) if actual.is_integer() || actual.is_floating() => {
                let out = cast(column, &target)?;
                if target == DataType::Float32 {
                    // Round to nearest: only a finite value beyond float32's range becomes
                    // infinite, and that one does not fit.
                    let wide = cast(column, &DataType::Float64)?;
                    let source = wide.as_primitive::<Float64Type>();
                    let narrow = out.as_primitive::<arrow::datatypes::Float32Type>();
                    if let Some(index) = (0..out.len()).find(|&i| {
                        out.is_valid(i)
                            && narrow.value(i).is_infinite()
                            && source.value(i).is_finite()
                    }) {
                        return Err(self.error(
                            column,
                            index,
                            &row_of,
                            "beyond float32's largest finite value, ±3.4028235e38",
                        ));
                    }
                }
                Ok(out)
            }
            Scalar::String if matches!(actual, DataType::LargeUtf8 | DataType::Utf8View) => {
                Ok(cast(column, &DataType::Utf8)?)
            }
            Scalar::Binary
                if matches!(
                    actual,
                    DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_)
                ) =>
            {
                Ok(cast(column, &DataType::Binary)?)
            }
            Scalar::Date => self.conform_date(column, &row_of),
            Scalar::Timestamp if matches!(actual, DataType::Date32 | DataType::Date64) => {
                Ok(cast(column, &featherstore_core::types::timestamp_type())?)
            }
            _ => Ok(column.clone()),
        }
    }

    /// A cast whose failures (values out of the target's range, which a safe cast turns into
    /// nulls) are errors naming the first such value.
    fn checked_cast(
        &self,
        column: &ArrayRef,
        target: &DataType,
        row_of: &impl Fn(usize) -> usize,
        reason: &str,
    ) -> Result<ArrayRef, crate::Error> {
        if column.data_type() == target {
            return Ok(column.clone());
        }
        let out = cast_with_options(column, target, &CastOptions::default())?;
        if out.null_count() != column.null_count() {
            if let Some(index) = (0..out.len()).find(|&i| out.is_null(i) && column.is_valid(i)) {
                return Err(self.error(column, index, row_of, reason));
            }
        }
        Ok(out)
    }

    fn conform_date(
        &self,
        column: &ArrayRef,
        row_of: &impl Fn(usize) -> usize,
    ) -> Result<ArrayRef, crate::Error> {
        // Checked in the column's own unit: a nanosecond past midnight is not midnight.
        let per_day: i64 = match column.data_type() {
            DataType::Date64 => 86_400_000,
            DataType::Timestamp(unit, _) => {
                86_400
                    * match unit {
                        TimeUnit::Second => 1,
                        TimeUnit::Millisecond => 1_000,
                        TimeUnit::Microsecond => 1_000_000,
                        TimeUnit::Nanosecond => 1_000_000_000,
                    }
            }
            _ => return Ok(column.clone()),
        };
        let raw = cast(column, &DataType::Int64)?;
        let values = raw.as_primitive::<arrow::datatypes::Int64Type>();
        if let Some(index) = (0..values.len())
            .find(|&i| values.is_valid(i) && values.value(i).rem_euclid(per_day) != 0)
        {
            return Err(self.error(column, index, row_of, "not midnight UTC"));
        }
        let days: arrow::array::Date32Array =
            values.unary_opt(|v| i32::try_from(v.div_euclid(per_day)).ok());
        self.checked_days(column, days, row_of)
    }

    fn checked_days(
        &self,
        column: &ArrayRef,
        days: arrow::array::Date32Array,
        row_of: &impl Fn(usize) -> usize,
    ) -> Result<ArrayRef, crate::Error> {
        if let Some(index) = (0..days.len()).find(|&i| days.is_null(i) && column.is_valid(i)) {
            return Err(self.error(column, index, row_of, "out of its range"));
        }
        Ok(Arc::new(days))
    }

    /// Lists of numbers with their items conformed to `item`; lengths are the server's to
    /// check (it names the row).
    fn conform_vector(&self, column: &ArrayRef, item: DataType) -> Result<ArrayRef, crate::Error> {
        let target = Scalar::Float(item.clone());
        let field = Arc::new(Field::new("item", item, true));
        match column.data_type() {
            DataType::List(_) => self.conform_list(column.as_list::<i32>(), target, field),
            DataType::LargeList(_) => self.conform_list(column.as_list::<i64>(), target, field),
            DataType::FixedSizeList(_, size) => {
                let list = column.as_fixed_size_list();
                let width = (*size).max(1) as usize;
                let values = self.conform_scalar(list.values(), target, |i| i / width)?;
                Ok(Arc::new(FixedSizeListArray::try_new(
                    field,
                    *size,
                    values,
                    list.nulls().cloned(),
                )?))
            }
            _ => Ok(column.clone()),
        }
    }

    fn conform_list<O: OffsetSizeTrait>(
        &self,
        list: &GenericListArray<O>,
        target: Scalar,
        field: Arc<Field>,
    ) -> Result<ArrayRef, crate::Error> {
        let offsets = list.offsets().clone();
        let row_of = |i: usize| {
            offsets
                .partition_point(|o| o.as_usize() <= i)
                .saturating_sub(1)
        };
        let values = self.conform_scalar(list.values(), target, row_of)?;
        Ok(Arc::new(GenericListArray::<O>::try_new(
            field,
            list.offsets().clone(),
            values,
            list.nulls().cloned(),
        )?))
    }

    fn error(
        &self,
        column: &ArrayRef,
        index: usize,
        row_of: &impl Fn(usize) -> usize,
        reason: &str,
    ) -> crate::Error {
        let value = ArrayFormatter::try_new(column.as_ref(), &FormatOptions::default())
            .map(|f| f.value(index).to_string())
            .unwrap_or_else(|_| "a value".to_string());
        crate::Error::Conform(ConformError {
            column: self.name.to_string(),
            row: self.first_row + row_of(index) as u64,
            value,
            declared: self.declared.to_string(),
            reason: reason.to_string(),
        })
    }
}
