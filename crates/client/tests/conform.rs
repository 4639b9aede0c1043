//! `conform_batch`: every cast that keeps each value is made; a value that does not fit is an
//! error naming the column, the row and the value (issue 12). No server needed.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Date32Array, Date64Array, DictionaryArray, Float32Array,
    Float64Array, Int32Array, Int64Array, Int8Array, LargeListArray, LargeStringArray, ListArray,
    NullArray, RecordBatch, StringArray, TimestampNanosecondArray, TimestampSecondArray,
    UInt64Array,
};
use arrow::datatypes::{DataType, Float32Type, Float64Type, Int32Type, Int64Type};
use featherstore_client::{conform_batch, conform_rows, Error, FeatureSetSpec};

fn spec() -> FeatureSetSpec {
    FeatureSetSpec::from_json(
        br#"{"name": "s", "entity": {"name": "id", "type": "int64"},
             "features": [{"name": "i32", "type": "int32"}, {"name": "i64", "type": "int64"},
                          {"name": "f32", "type": "float32"}, {"name": "f64", "type": "float64"},
                          {"name": "label", "type": "string"}, {"name": "day", "type": "date"},
                          {"name": "seen", "type": "timestamp"}, {"name": "emb", "type": "float32[2]"}]}"#,
    )
    .unwrap()
}

/// A batch of the id and event time (one row each per value of `column`), plus `column`.
fn batch(name: &str, column: ArrayRef) -> RecordBatch {
    let rows = column.len();
    RecordBatch::try_from_iter([
        (
            "id",
            Arc::new(Int64Array::from_iter_values(0..rows as i64)) as ArrayRef,
        ),
        (
            "event_timestamp",
            Arc::new(TimestampSecondArray::from(vec![0; rows])) as ArrayRef,
        ),
        (name, column),
    ])
    .unwrap()
}

fn conformed(name: &str, column: ArrayRef) -> ArrayRef {
    conform_batch(&spec(), &batch(name, column))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .column(2)
        .clone()
}

fn refused(name: &str, column: ArrayRef) -> String {
    let err = conform_batch(&spec(), &batch(name, column)).unwrap_err();
    assert!(err.is_invalid_argument(), "{err:?}");
    assert!(matches!(err, Error::Conform(_)), "{err:?}");
    err.to_string()
}

#[test]
fn integers_narrow_when_each_value_fits() {
    let out = conformed(
        "i32",
        Arc::new(Int64Array::from(vec![Some(i32::MIN as i64), None, Some(7)])),
    );
    assert_eq!(
        out.as_primitive::<Int32Type>().iter().collect::<Vec<_>>(),
        [Some(i32::MIN), None, Some(7)]
    );
    let out = conformed("i64", Arc::new(UInt64Array::from(vec![i64::MAX as u64])));
    assert_eq!(out.as_primitive::<Int64Type>().value(0), i64::MAX);
    let message = refused("i32", Arc::new(Int64Array::from(vec![1, 2, 1 << 31])));
    assert_eq!(
        message,
        "column \"i32\" row 2 holds 2147483648, which does not fit int32: out of its range"
    );
    let message = refused("id", Arc::new(UInt64Array::from(vec![0, u64::MAX])));
    assert!(
        message.starts_with("column \"id\" row 1 holds 18446744073709551615"),
        "{message}"
    );
}

#[test]
fn whole_floats_become_integers_and_fractions_are_refused() {
    let out = conformed(
        "i64",
        Arc::new(Float64Array::from(vec![Some(3.0), None, Some(-2.0)])),
    );
    assert_eq!(
        out.as_primitive::<Int64Type>().iter().collect::<Vec<_>>(),
        [Some(3), None, Some(-2)]
    );
    let message = refused("i32", Arc::new(Float64Array::from(vec![1.0, 2.5])));
    assert_eq!(
        message,
        "column \"i32\" row 1 holds 2.5, which does not fit int32: not a whole number"
    );
    assert!(
        refused("i64", Arc::new(Float64Array::from(vec![f64::NAN]))).contains("row 0 holds NaN")
    );
    assert!(refused("i32", Arc::new(Float64Array::from(vec![3e9]))).contains("out of its range"));
}

#[test]
fn floats_round_to_nearest_and_overflow_is_refused() {
    let out = conformed(
        "f32",
        Arc::new(Float64Array::from(vec![
            Some(0.12),
            None,
            Some(f64::NAN),
            Some(1e-50),
        ])),
    );
    let values = out.as_primitive::<Float32Type>();
    assert_eq!(values.value(0), 0.12f32);
    assert!(values.is_null(1) && values.value(2).is_nan());
    assert_eq!(
        values.value(3),
        0.0,
        "underflow rounds to zero, the nearest value"
    );
    let out = conformed("f32", Arc::new(Int64Array::from(vec![16_777_217])));
    assert_eq!(
        out.as_primitive::<Float32Type>().value(0),
        16_777_216.0,
        "nearest float32"
    );
    let half: ArrayRef = Arc::new(Float32Array::from(vec![0.5]));
    let out = conformed(
        "f64",
        arrow::compute::cast(&half, &DataType::Float16).unwrap(),
    );
    assert_eq!(out.as_primitive::<Float64Type>().value(0), 0.5);
    // f32::MAX itself, and infinities, fit; a finite value beyond the range does not.
    conformed(
        "f32",
        Arc::new(Float64Array::from(vec![f64::from(f32::MAX), f64::INFINITY])),
    );
    let message = refused("f32", Arc::new(Float64Array::from(vec![0.0, -1e39])));
    assert!(
        message.starts_with("column \"f32\" row 1 holds -1e39, which does not fit float32: beyond"),
        "{message}"
    );
}

#[test]
fn strings_dictionaries_and_nulls() {
    let out = conformed("label", Arc::new(LargeStringArray::from(vec!["a"])));
    assert_eq!(out.data_type(), &DataType::Utf8);
    let dict: DictionaryArray<arrow::datatypes::Int8Type> =
        vec!["x", "y", "x"].into_iter().collect();
    let out = conformed("label", Arc::new(dict));
    assert_eq!(out.as_string::<i32>().value(2), "x");
    let out = conformed("f32", Arc::new(NullArray::new(2)));
    assert_eq!((out.data_type(), out.null_count()), (&DataType::Float32, 2));
    let out = conformed("i64", Arc::new(Int8Array::from(vec![1])));
    assert_eq!(out.data_type(), &DataType::Int64);
}

#[test]
fn dates_and_timestamps() {
    let day = 86_400_000_000_000i64;
    let out = conformed(
        "day",
        Arc::new(TimestampNanosecondArray::from(vec![20_454 * day, -day])),
    );
    assert_eq!(
        out.as_primitive::<arrow::datatypes::Date32Type>().values(),
        &[20_454, -1]
    );
    let out = conformed("day", Arc::new(Date64Array::from(vec![86_400_000])));
    assert_eq!(
        out.as_primitive::<arrow::datatypes::Date32Type>().value(0),
        1
    );
    let message = refused(
        "day",
        Arc::new(TimestampNanosecondArray::from(vec![day, day + 1])),
    );
    assert!(
        message.contains("row 1") && message.contains("not midnight UTC"),
        "{message}"
    );
    let out = conformed("seen", Arc::new(Date32Array::from(vec![1])));
    assert_eq!(
        out.data_type(),
        &DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into()))
    );
    assert_eq!(
        out.as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
            .value(0),
        86_400_000_000
    );
}

#[test]
fn vectors_conform_their_items_and_name_the_row() {
    let lists = ListArray::from_iter_primitive::<Float64Type, _, _>(vec![
        Some(vec![Some(0.12), Some(1.0)]),
        None,
        Some(vec![Some(2.0), Some(3.0)]),
    ]);
    let out = conformed("emb", Arc::new(lists));
    let list = out.as_list::<i32>();
    assert_eq!(
        list.value(0).as_primitive::<Float32Type>().values(),
        &[0.12f32, 1.0]
    );
    assert!(list.is_null(1));
    let large =
        LargeListArray::from_iter_primitive::<Int64Type, _, _>(vec![Some(vec![Some(1), Some(2)])]);
    assert_eq!(
        conformed("emb", Arc::new(large))
            .as_list::<i64>()
            .value(0)
            .data_type(),
        &DataType::Float32
    );
    let bad = ListArray::from_iter_primitive::<Float64Type, _, _>(vec![
        Some(vec![Some(0.0), Some(0.0)]),
        Some(vec![Some(0.0), Some(0.0)]),
        Some(vec![Some(1.0), Some(5e38)]),
    ]);
    let message = refused("emb", Arc::new(bad));
    assert!(
        message.starts_with("column \"emb\" row 2 holds 5e38, which does not fit float32[2]"),
        "{message}"
    );
}

#[test]
fn rows_count_from_the_first_row_given_and_other_columns_pass() {
    let input = batch("i32", Arc::new(Int64Array::from(vec![0, 1 << 40])));
    let err = conform_rows(&spec(), &input, 1_000)
        .unwrap_err()
        .to_string();
    assert!(err.contains("row 1001"), "{err}");
    // Undeclared columns and types outside the rules are the server's to judge.
    let odd = batch("nope", Arc::new(StringArray::from(vec!["x"])));
    let out = conform_batch(&spec(), &odd).unwrap();
    assert_eq!(out.column(2).data_type(), &DataType::Utf8);
    let text_for_int = batch("i32", Arc::new(StringArray::from(vec!["7"])));
    assert_eq!(
        conform_batch(&spec(), &text_for_int)
            .unwrap()
            .column(2)
            .data_type(),
        &DataType::Utf8
    );
    let ints = batch("i32", Arc::new(Int32Array::from(vec![1])));
    assert_eq!(
        conform_batch(&spec(), &ints).unwrap().column(2).data_type(),
        &DataType::Int32
    );
    let f32s = batch("f32", Arc::new(Float32Array::from(vec![1.5])));
    assert_eq!(
        conform_batch(&spec(), &f32s).unwrap().column(2).data_type(),
        &DataType::Float32
    );
}
