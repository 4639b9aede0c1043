//! Validation and lossless coercion of an ingested batch to a set's canonical schema
//! (PROTOCOL.md, "Ingest rules"): every path (Flight, HTTP, CLI) goes through [`coerce_batch`].

use std::sync::Arc;

use arrow::array::timezone::Tz;
use arrow::array::{
    new_null_array, Array, ArrayRef, AsArray, FixedSizeListArray, FixedSizeListBuilder,
    Float32Builder, Float64Builder, GenericListArray, Int64Array, OffsetSizeTrait, RecordBatch,
    TimestampMicrosecondArray,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Date32Type, Field, Float32Type, Float64Type, TimeUnit};

use crate::spec::FeatureSetSpec;
use crate::time::{days_in_range, micros_in_range, DATE_RANGE, MICROS_PER_SECOND, TIMESTAMP_RANGE};
use crate::types::{EntityType, FeatureType};
use crate::{Error, Result};

/// Checks `batch` against `spec` and returns it in the canonical schema
/// ([`FeatureSetSpec::arrow_schema`]): entity, features in spec order (absent ones null),
/// timestamp as UTC microseconds. Any violation rejects the whole batch.
pub fn coerce_batch(spec: &FeatureSetSpec, batch: &RecordBatch) -> Result<RecordBatch> {
    let schema = batch.schema();
    let mut entity = None;
    let mut timestamp = None;
    let mut features: Vec<Option<ArrayRef>> = vec![None; spec.features.len()];

    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        let name = field.name().as_str();
        let duplicate = || Error::invalid(format!("column {name:?} appears more than once"));
        if name == spec.entity.name {
            if entity.is_some() {
                return Err(duplicate());
            }
            entity = Some(coerce_entity(spec, column)?);
        } else if name == spec.timestamp {
            if timestamp.is_some() {
                return Err(duplicate());
            }
            timestamp = Some(coerce_event_time(name, column)?);
        } else if let Some((index, feature)) = spec.feature(name) {
            if features[index].is_some() {
                return Err(duplicate());
            }
            features[index] = Some(coerce_feature(name, feature.feature_type, column)?);
        } else {
            return Err(Error::invalid(format!(
                "column {name:?} is not declared by feature set {:?}: expected the entity {:?}, \
                 the timestamp {:?} or one of its features",
                spec.name, spec.entity.name, spec.timestamp
            )));
        }
    }

    let missing = |what: &str, column: &str| {
        Error::invalid(format!(
            "batch lacks the {what} column {column:?} of feature set {:?}",
            spec.name
        ))
    };
    let entity = entity.ok_or_else(|| missing("entity", &spec.entity.name))?;
    let timestamp = timestamp.ok_or_else(|| missing("timestamp", &spec.timestamp))?;

    let rows = batch.num_rows();
    let mut columns = Vec::with_capacity(spec.features.len() + 2);
    columns.push(entity);
    for (feature, column) in spec.features.iter().zip(features) {
        columns.push(
            column.unwrap_or_else(|| new_null_array(&feature.feature_type.arrow_type(), rows)),
        );
    }
    columns.push(timestamp);
    Ok(RecordBatch::try_new(spec.arrow_schema(), columns)?)
}

fn type_error(column: &str, expected: &str, actual: &DataType) -> Error {
    Error::invalid(format!(
        "column {column:?} has type {actual}; expected {expected}"
    ))
}

fn reject_nulls(column: &str, what: &str, array: &ArrayRef) -> Result<()> {
    if array.null_count() > 0 {
        return Err(Error::invalid(format!(
            "column {column:?} holds {} null {what} values; {what} values may not be null",
            array.null_count()
        )));
    }
    Ok(())
}

fn coerce_entity(spec: &FeatureSetSpec, column: &ArrayRef) -> Result<ArrayRef> {
    let name = spec.entity.name.as_str();
    let coerced = coerce_key(name, spec.entity.entity_type, column)?;
    reject_nulls(name, "entity", &coerced)?;
    Ok(coerced)
}

/// Entity key values of column `name` as `entity_type` (Utf8 or Int64), nulls kept.
pub fn coerce_key(name: &str, entity_type: EntityType, column: &ArrayRef) -> Result<ArrayRef> {
    match entity_type {
        EntityType::String => coerce_string(name, column),
        EntityType::Int64 => coerce_int64(name, column),
    }
}

/// Any timestamp unit and zone into UTC microseconds, finer units truncated toward the past.
fn coerce_event_time(name: &str, column: &ArrayRef) -> Result<ArrayRef> {
    let coerced = coerce_timestamp(name, column)?;
    reject_nulls(name, "timestamp", &coerced)?;
    Ok(coerced)
}

/// Any timestamp unit and zone into UTC microseconds (floored), nulls kept. A value outside
/// [`TIMESTAMP_RANGE`](crate::time::TIMESTAMP_RANGE), or a zone that is neither an offset
/// (`+05:30`) nor a known IANA name, rejects the column.
pub fn coerce_timestamp(name: &str, column: &ArrayRef) -> Result<ArrayRef> {
    coerce_timestamp_rows(name, column, 0)
}

/// [`coerce_timestamp`] for a column whose first row is row `first_row` of its request, so
/// that errors name the row as the client counts it.
pub fn coerce_timestamp_rows(name: &str, column: &ArrayRef, first_row: usize) -> Result<ArrayRef> {
    let (unit, zone) = match column.data_type() {
        DataType::Timestamp(unit, zone) => (*unit, zone.as_deref()),
        DataType::Null => {
            return Ok(Arc::new(
                TimestampMicrosecondArray::new_null(column.len()).with_timezone("UTC"),
            ))
        }
        other => {
            return Err(type_error(
                name,
                "a timestamp (any unit, any time zone)",
                other,
            ))
        }
    };
    if let Some(zone) = zone {
        // The values are UTC instants whatever the zone; an unknown zone is still a client
        // error, not something to read as UTC without a word.
        zone.parse::<Tz>().map_err(|_| {
            Error::invalid(format!(
                "column {name:?} has the unknown time zone {zone:?}: expected an offset like \
                 \"+05:30\" or an IANA time zone name like \"Europe/Berlin\""
            ))
        })?;
    }
    let values = column.to_data();
    let raw = Int64Array::from(values.into_builder().data_type(DataType::Int64).build()?);
    let to_micros = |v: i64| -> Option<i64> {
        match unit {
            TimeUnit::Second => v.checked_mul(MICROS_PER_SECOND),
            TimeUnit::Millisecond => v.checked_mul(1_000),
            TimeUnit::Microsecond => Some(v),
            TimeUnit::Nanosecond => Some(v.div_euclid(1_000)),
        }
        .filter(|&micros| micros_in_range(micros))
    };
    let out_of_range = |row: usize, value: i64| {
        Error::invalid(format!(
            "column {name:?} row {} holds the timestamp {value} ({}) outside the accepted \
             range {TIMESTAMP_RANGE}",
            first_row + row,
            unit_name(unit)
        ))
    };
    let micros: TimestampMicrosecondArray = if unit == TimeUnit::Microsecond {
        // Already microseconds: check in place, keep the buffer.
        if let Some((row, value)) = raw
            .iter()
            .enumerate()
            .find_map(|(row, v)| v.filter(|&v| to_micros(v).is_none()).map(|v| (row, v)))
        {
            return Err(out_of_range(row, value));
        }
        TimestampMicrosecondArray::new(raw.values().clone(), raw.nulls().cloned())
    } else {
        let mut converted = Vec::with_capacity(raw.len());
        for (row, value) in raw.iter().enumerate() {
            converted.push(match value {
                Some(v) => to_micros(v).ok_or_else(|| out_of_range(row, v))?,
                None => 0,
            });
        }
        TimestampMicrosecondArray::new(converted.into(), raw.nulls().cloned())
    };
    Ok(Arc::new(micros.with_timezone("UTC")))
}

fn unit_name(unit: TimeUnit) -> &'static str {
    match unit {
        TimeUnit::Second => "seconds",
        TimeUnit::Millisecond => "milliseconds",
        TimeUnit::Microsecond => "microseconds",
        TimeUnit::Nanosecond => "nanoseconds",
    }
}

/// Rejects a date outside [`DATE_RANGE`](crate::time::DATE_RANGE).
fn check_dates(name: &str, column: &ArrayRef) -> Result<()> {
    let dates = column
        .as_primitive_opt::<Date32Type>()
        .ok_or_else(|| type_error(name, "date (Date32)", column.data_type()))?;
    if let Some((row, days)) = dates
        .iter()
        .enumerate()
        .find_map(|(row, d)| d.filter(|&d| !days_in_range(d)).map(|d| (row, d)))
    {
        return Err(Error::invalid(format!(
            "column {name:?} row {row} holds the date {days} (days since 1970-01-01) outside the \
             accepted range {DATE_RANGE}"
        )));
    }
    Ok(())
}

fn coerce_string(name: &str, column: &ArrayRef) -> Result<ArrayRef> {
    match column.data_type() {
        DataType::Utf8 => Ok(column.clone()),
        DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => {
            Ok(cast(column, &DataType::Utf8)?)
        }
        other => Err(type_error(
            name,
            "string (Utf8, LargeUtf8 or Utf8View)",
            other,
        )),
    }
}

fn coerce_int64(name: &str, column: &ArrayRef) -> Result<ArrayRef> {
    match column.data_type() {
        DataType::Int64 => Ok(column.clone()),
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::Null => Ok(cast(column, &DataType::Int64)?),
        other => Err(type_error(
            name,
            "int64 (Int64, or a narrower Int8/16/32, UInt8/16/32)",
            other,
        )),
    }
}

fn coerce_feature(name: &str, feature_type: FeatureType, column: &ArrayRef) -> Result<ArrayRef> {
    let coerced = coerce_feature_type(name, feature_type, column)?;
    if feature_type == FeatureType::Date {
        check_dates(name, &coerced)?;
    }
    Ok(coerced)
}

fn coerce_feature_type(
    name: &str,
    feature_type: FeatureType,
    column: &ArrayRef,
) -> Result<ArrayRef> {
    let actual = column.data_type();
    let target = feature_type.arrow_type();
    if actual == &target {
        return Ok(column.clone());
    }
    let widen = |accepted: &[DataType], expected: &str| -> Result<ArrayRef> {
        if accepted.contains(actual) || actual == &DataType::Null {
            Ok(cast(column, &target)?)
        } else {
            Err(type_error(name, expected, actual))
        }
    };
    use DataType as D;
    match feature_type {
        FeatureType::String => coerce_string(name, column),
        FeatureType::Int64 => coerce_int64(name, column),
        FeatureType::Int32 => widen(
            &[D::Int8, D::Int16, D::UInt8, D::UInt16],
            "int32 (Int32, or a narrower Int8/16, UInt8/16)",
        ),
        FeatureType::Float64 => widen(
            &[D::Float16, D::Float32],
            "float64 (Float64, Float32 or Float16)",
        ),
        FeatureType::Float32 => widen(&[D::Float16], "float32 (Float32 or Float16)"),
        FeatureType::Bool => widen(&[], "bool (Boolean)"),
        FeatureType::Binary => widen(
            &[D::LargeBinary, D::BinaryView],
            "binary (Binary, LargeBinary or BinaryView)",
        ),
        FeatureType::Date => widen(&[], "date (Date32)"),
        FeatureType::Timestamp => coerce_timestamp(name, column),
        FeatureType::Float32Vector(n) => coerce_vector(name, column, n, false),
        FeatureType::Float64Vector(n) => coerce_vector(name, column, n, true),
    }
}

/// List, LargeList or FixedSizeList of floats, every non-null entry of length `n`, into
/// FixedSizeList(n).
fn coerce_vector(name: &str, column: &ArrayRef, n: usize, wide: bool) -> Result<ArrayRef> {
    let item = if wide {
        DataType::Float64
    } else {
        DataType::Float32
    };
    let expected = format!(
        "{}[{n}] (FixedSizeList, List or LargeList of {n} {} values)",
        if wide { "float64" } else { "float32" },
        if wide { "float" } else { "Float32/Float16" }
    );
    let item_ok = |t: &DataType| {
        matches!(t, DataType::Float16 | DataType::Float32) || (wide && t == &DataType::Float64)
    };
    match column.data_type() {
        DataType::FixedSizeList(field, size) if item_ok(field.data_type()) => {
            if *size as usize != n {
                return Err(Error::invalid(format!(
                    "column {name:?} holds vectors of length {size}; expected {expected}"
                )));
            }
            let list = column.as_fixed_size_list();
            let values = cast(list.values(), &item)?;
            let field = Arc::new(Field::new("item", item, true));
            Ok(Arc::new(FixedSizeListArray::try_new(
                field,
                *size,
                values,
                list.nulls().cloned(),
            )?))
        }
        DataType::List(field) if item_ok(field.data_type()) => {
            list_to_fixed(name, column.as_list::<i32>(), n, &item, &expected)
        }
        DataType::LargeList(field) if item_ok(field.data_type()) => {
            list_to_fixed(name, column.as_list::<i64>(), n, &item, &expected)
        }
        DataType::Null => Ok(new_null_array(
            &if wide {
                FeatureType::Float64Vector(n)
            } else {
                FeatureType::Float32Vector(n)
            }
            .arrow_type(),
            column.len(),
        )),
        other => Err(type_error(name, &expected, other)),
    }
}

fn list_to_fixed<O: OffsetSizeTrait>(
    name: &str,
    list: &GenericListArray<O>,
    n: usize,
    item: &DataType,
    expected: &str,
) -> Result<ArrayRef> {
    for (row, window) in list.value_offsets().windows(2).enumerate() {
        let len = (window[1] - window[0]).as_usize();
        if len != n && list.is_valid(row) {
            return Err(Error::invalid(format!(
                "column {name:?} row {row} holds a vector of length {len}; expected {expected}"
            )));
        }
    }
    let values = cast(list.values(), item)?;
    let field = Arc::new(Field::new("item", item.clone(), true));
    let offsets = list.value_offsets();
    let first = offsets[0].as_usize();
    let contiguous = offsets.windows(2).all(|w| (w[1] - w[0]).as_usize() == n);
    if contiguous {
        // Fast path: every entry (null ones too) spans exactly n values, so the child array
        // can be reused as it is.
        let values = values.slice(first, list.len() * n);
        return Ok(Arc::new(FixedSizeListArray::try_new(
            field,
            n as i32,
            values,
            list.nulls().cloned(),
        )?));
    }
    // Null entries of other lengths: rebuild with n placeholder values per null entry.
    macro_rules! rebuild {
        ($builder:ty, $arrow:ty) => {{
            let values = values.as_primitive::<$arrow>();
            let mut builder = FixedSizeListBuilder::with_capacity(
                <$builder>::with_capacity(list.len() * n),
                n as i32,
                list.len(),
            )
            .with_field(field);
            for (row, window) in offsets.windows(2).enumerate() {
                if list.is_valid(row) {
                    for i in window[0].as_usize()..window[1].as_usize() {
                        builder
                            .values()
                            .append_option(values.is_valid(i).then(|| values.value(i)));
                    }
                    builder.append(true);
                } else {
                    builder.values().append_nulls(n);
                    builder.append(false);
                }
            }
            Arc::new(builder.finish()) as ArrayRef
        }};
    }
    Ok(if item == &DataType::Float64 {
        rebuild!(Float64Builder, Float64Type)
    } else {
        rebuild!(Float32Builder, Float32Type)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        Int32Array, Int64Array, Int8Array, ListArray, StringArray, TimestampNanosecondArray,
        TimestampSecondArray,
    };
    use arrow::datatypes::Schema;

    fn spec() -> FeatureSetSpec {
        FeatureSetSpec::from_json(
            br#"{"name": "s", "entity": {"name": "id", "type": "int64"},
                 "features": [{"name": "a", "type": "int32"}, {"name": "f", "type": "float64"},
                              {"name": "e", "type": "float32[2]"}, {"name": "s", "type": "string"}]}"#,
        )
        .unwrap()
    }

    fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
        let fields: Vec<_> = columns
            .iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect();
        RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns.into_iter().map(|(_, a)| a).collect(),
        )
        .unwrap()
    }

    #[test]
    fn widens_and_fills_absent_features() {
        let input = batch(vec![
            ("id", Arc::new(Int8Array::from(vec![1, 2]))),
            (
                "event_timestamp",
                Arc::new(TimestampNanosecondArray::from(vec![1_999, -1]).with_timezone("+05:00")),
            ),
            ("a", Arc::new(Int8Array::from(vec![Some(3), None]))),
            (
                "f",
                cast(
                    &(Arc::new(arrow::array::Float32Array::from(vec![0.5; 2])) as ArrayRef),
                    &DataType::Float16,
                )
                .unwrap(),
            ),
            (
                "e",
                Arc::new(ListArray::from_iter_primitive::<Float32Type, _, _>(vec![
                    Some(vec![Some(1.0), Some(2.0)]),
                    None,
                ])),
            ),
        ]);
        let out = coerce_batch(&spec(), &input).unwrap();
        assert_eq!(out.schema(), spec().arrow_schema());
        let ts = out
            .column(5)
            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
        assert_eq!(ts.values(), &[1, -1], "nanoseconds floor toward the past");
        assert_eq!(
            out.column(1)
                .as_primitive::<arrow::datatypes::Int32Type>()
                .value(0),
            3
        );
        assert_eq!(out.column(4).null_count(), 2, "absent feature is null");
        assert!(out.column(3).is_null(1));
    }

    #[test]
    fn rejects_with_named_column_and_types() {
        let ts: ArrayRef = Arc::new(TimestampSecondArray::from(vec![1]));
        let cases: Vec<(Vec<(&str, ArrayRef)>, &str)> = vec![
            (
                vec![
                    ("id", Arc::new(StringArray::from(vec!["x"]))),
                    ("event_timestamp", ts.clone()),
                ],
                "column \"id\" has type Utf8; expected int64",
            ),
            (
                vec![
                    ("id", Arc::new(Int8Array::from(vec![None]))),
                    ("event_timestamp", ts.clone()),
                ],
                "null entity",
            ),
            (
                vec![
                    ("id", Arc::new(Int8Array::from(vec![1]))),
                    ("event_timestamp", ts.clone()),
                    ("zzz", Arc::new(Int8Array::from(vec![1]))),
                ],
                "\"zzz\" is not declared",
            ),
            (
                vec![("id", Arc::new(Int8Array::from(vec![1])))],
                "lacks the timestamp",
            ),
            (
                vec![
                    ("id", Arc::new(Int8Array::from(vec![1]))),
                    ("event_timestamp", ts.clone()),
                    ("a", Arc::new(Int64Array::from(vec![1]))),
                ],
                "column \"a\" has type Int64; expected int32",
            ),
            (
                vec![
                    ("id", Arc::new(Int8Array::from(vec![1]))),
                    ("event_timestamp", ts.clone()),
                    (
                        "e",
                        Arc::new(ListArray::from_iter_primitive::<Float32Type, _, _>(vec![
                            Some(vec![Some(1.0)]),
                        ])),
                    ),
                ],
                "length 1",
            ),
            (
                vec![
                    ("id", Arc::new(Int8Array::from(vec![1]))),
                    ("event_timestamp", Arc::new(Int32Array::from(vec![1]))),
                ],
                "expected a timestamp",
            ),
        ];
        for (columns, expected) in cases {
            let err = coerce_batch(&spec(), &batch(columns)).unwrap_err();
            assert_eq!(err.code(), crate::ErrorCode::InvalidArgument);
            assert!(err.to_string().contains(expected), "{err} vs {expected}");
        }
    }

    fn with_time(time: ArrayRef) -> RecordBatch {
        batch(vec![
            ("id", Arc::new(Int64Array::from(vec![1; time.len()]))),
            ("event_timestamp", time),
        ])
    }

    #[test]
    fn rejects_times_outside_the_range_naming_column_row_and_value() {
        use arrow::array::{Date32Array, TimestampMillisecondArray};
        let cases: Vec<(ArrayRef, Vec<&str>)> = vec![
            (
                Arc::new(TimestampSecondArray::from(vec![0, i64::MIN])),
                vec![
                    "\"event_timestamp\" row 1",
                    "-9223372036854775808 (seconds)",
                ],
            ),
            (
                Arc::new(TimestampMillisecondArray::from(vec![1 << 62])),
                vec!["row 0", "4611686018427387904 (milliseconds)"],
            ),
            (
                Arc::new(TimestampMicrosecondArray::from(vec![
                    crate::time::MAX_MICROS + 1,
                ])),
                vec!["row 0", "(microseconds)"],
            ),
            (
                Arc::new(TimestampSecondArray::from(vec![-62_135_596_801])),
                vec!["row 0", "-62135596801 (seconds)"],
            ),
        ];
        for (time, needles) in cases {
            let err = coerce_batch(&spec(), &with_time(time)).unwrap_err();
            assert_eq!(err.code(), crate::ErrorCode::InvalidArgument);
            let message = err.to_string();
            for needle in needles.iter().chain(&[crate::time::TIMESTAMP_RANGE]) {
                assert!(message.contains(needle), "{message:?} lacks {needle:?}");
            }
        }
        // The limits themselves are fine, in any unit; a null is not checked.
        let edges = coerce_batch(
            &spec(),
            &with_time(Arc::new(TimestampSecondArray::from(vec![
                -62_135_596_800,
                253_402_300_799,
            ]))),
        )
        .unwrap();
        let ts = edges
            .column(5)
            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
        assert_eq!(
            ts.values(),
            &[crate::time::MIN_MICROS, 253_402_300_799_000_000]
        );

        let dates: FeatureSetSpec = FeatureSetSpec::from_json(
            br#"{"name": "s", "entity": {"name": "id", "type": "int64"},
                 "features": [{"name": "d", "type": "date"}, {"name": "t", "type": "timestamp"}]}"#,
        )
        .unwrap();
        let ok_time: ArrayRef = Arc::new(TimestampSecondArray::from(vec![0, 0]));
        let err = coerce_batch(
            &dates,
            &batch(vec![
                ("id", Arc::new(Int64Array::from(vec![1, 2]))),
                ("event_timestamp", ok_time.clone()),
                (
                    "d",
                    Arc::new(Date32Array::from(vec![
                        Some(0),
                        Some(crate::time::MAX_DAYS + 1),
                    ])),
                ),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("\"d\" row 1") && err.contains(crate::time::DATE_RANGE),
            "{err}"
        );
        let err = coerce_batch(
            &dates,
            &batch(vec![
                ("id", Arc::new(Int64Array::from(vec![1, 2]))),
                ("event_timestamp", ok_time),
                (
                    "t",
                    Arc::new(TimestampMillisecondArray::from(vec![None, Some(i64::MAX)])),
                ),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("\"t\" row 1") && err.contains("9223372036854775807"),
            "{err}"
        );
    }

    #[test]
    fn time_zones_must_be_known() {
        for zone in ["+05:30", "UTC", "Asia/Kolkata", "-01:00"] {
            let time = Arc::new(TimestampSecondArray::from(vec![1]).with_timezone(zone));
            let out = coerce_batch(&spec(), &with_time(time)).unwrap();
            let ts = out
                .column(5)
                .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
            assert_eq!(ts.values(), &[1_000_000], "{zone}: the same instant");
        }
        for zone in ["Mars/Olympus_Mons", "", "+25:00"] {
            let time = Arc::new(TimestampSecondArray::from(vec![1]).with_timezone(zone));
            let err = coerce_batch(&spec(), &with_time(time)).unwrap_err();
            assert_eq!(err.code(), crate::ErrorCode::InvalidArgument);
            let message = err.to_string();
            assert!(
                message.contains("\"event_timestamp\"") && message.contains(&format!("{zone:?}")),
                "{message}"
            );
        }
    }
}
