//! Batch coercion: a feature set spec and a batch, both derived from the fuzz input (columns
//! of the set's types, of the narrower/wider types coercion accepts, of wrong types, missing,
//! duplicated or unknown), through `coerce_batch`.
#![no_main]

use std::sync::Arc;

use arrow::array::{
    make_array, new_null_array, Array, ArrayData, ArrayRef, FixedSizeListArray, LargeListArray,
    LargeStringArray, ListArray, RecordBatch, StringArray, StringViewArray,
};
use arrow::array::{BinaryArray, BinaryViewArray, LargeBinaryArray};
use arrow::buffer::{Buffer, NullBuffer, OffsetBuffer};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use featherstore_core::coerce::coerce_batch;
use featherstore_core::{FeatureSetSpec, FeatureType};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

const MAX_ROWS: usize = 16;

fn feature_type(u: &mut Unstructured) -> Result<FeatureType> {
    Ok(match u.int_in_range(0..=10)? {
        0 => FeatureType::Bool,
        1 => FeatureType::Int32,
        2 => FeatureType::Int64,
        3 => FeatureType::Float32,
        4 => FeatureType::Float64,
        5 => FeatureType::String,
        6 => FeatureType::Binary,
        7 => FeatureType::Date,
        8 => FeatureType::Timestamp,
        9 => FeatureType::Float32Vector(u.int_in_range(1..=4)?),
        _ => FeatureType::Float64Vector(u.int_in_range(1..=4)?),
    })
}

fn float_item(u: &mut Unstructured) -> Result<Arc<Field>> {
    let item = u.choose(&[DataType::Float16, DataType::Float32, DataType::Float64])?;
    Ok(Arc::new(Field::new("item", item.clone(), true)))
}

/// Any Arrow type a client might send for a column.
fn input_type(u: &mut Unstructured) -> Result<DataType> {
    let zones = [
        None,
        Some("UTC"),
        Some("+05:30"),
        Some("America/New_York"),
        Some("Mars/Base"),
    ];
    Ok(match u.int_in_range(0..=25)? {
        0 => DataType::Null,
        1 => DataType::Boolean,
        2 => DataType::Int8,
        3 => DataType::Int16,
        4 => DataType::Int32,
        5 => DataType::Int64,
        6 => DataType::UInt8,
        7 => DataType::UInt16,
        8 => DataType::UInt32,
        9 => DataType::UInt64,
        10 => DataType::Float16,
        11 => DataType::Float32,
        12 => DataType::Float64,
        13 => DataType::Utf8,
        14 => DataType::LargeUtf8,
        15 => DataType::Utf8View,
        16 => DataType::Binary,
        17 => DataType::LargeBinary,
        18 => DataType::BinaryView,
        19 => DataType::Date32,
        20 => DataType::Date64,
        21 => {
            let unit = u.choose(&[
                TimeUnit::Second,
                TimeUnit::Millisecond,
                TimeUnit::Microsecond,
                TimeUnit::Nanosecond,
            ])?;
            DataType::Timestamp(*unit, u.choose(&zones)?.map(Into::into))
        }
        22 => DataType::List(float_item(u)?),
        23 => DataType::LargeList(float_item(u)?),
        _ => DataType::FixedSizeList(float_item(u)?, u.int_in_range(0..=4)?),
    })
}

fn nulls(u: &mut Unstructured, rows: usize) -> Result<Option<NullBuffer>> {
    if !u.arbitrary::<bool>()? {
        return Ok(None);
    }
    let valid: Vec<bool> = (0..rows).map(|_| u.arbitrary()).collect::<Result<_>>()?;
    Ok(Some(NullBuffer::from(valid)))
}

fn bytes(u: &mut Unstructured, count: usize) -> Vec<u8> {
    let mut out = vec![0u8; count];
    let _ = u.fill_buffer(&mut out);
    out
}

/// An array of `data_type` with `rows` rows, its values and nulls from the fuzz input.
fn array(u: &mut Unstructured, data_type: &DataType, rows: usize) -> Result<ArrayRef> {
    let nulls = nulls(u, rows)?;
    let strings = |u: &mut Unstructured| -> Result<Vec<Option<String>>> {
        (0..rows)
            .map(|row| {
                let value: String = u.arbitrary()?;
                Ok(nulls
                    .as_ref()
                    .is_none_or(|n| n.is_valid(row))
                    .then_some(value))
            })
            .collect()
    };
    let binaries = |u: &mut Unstructured| -> Result<Vec<Option<Vec<u8>>>> {
        (0..rows)
            .map(|row| {
                let value: Vec<u8> = u.arbitrary()?;
                Ok(nulls
                    .as_ref()
                    .is_none_or(|n| n.is_valid(row))
                    .then_some(value))
            })
            .collect()
    };
    Ok(match data_type {
        DataType::Null => new_null_array(data_type, rows),
        DataType::Utf8 => Arc::new(StringArray::from(strings(u)?)),
        DataType::LargeUtf8 => Arc::new(LargeStringArray::from(strings(u)?)),
        DataType::Utf8View => Arc::new(StringViewArray::from(strings(u)?)),
        DataType::Binary => Arc::new(BinaryArray::from_iter(binaries(u)?)),
        DataType::LargeBinary => Arc::new(LargeBinaryArray::from_iter(binaries(u)?)),
        DataType::BinaryView => Arc::new(BinaryViewArray::from_iter(binaries(u)?)),
        DataType::List(item) | DataType::LargeList(item) => {
            let lengths: Vec<usize> = (0..rows)
                .map(|_| u.int_in_range(0..=4))
                .collect::<Result<_>>()?;
            let values = array(u, item.data_type(), lengths.iter().sum())?;
            if matches!(data_type, DataType::List(_)) {
                let offsets = OffsetBuffer::<i32>::from_lengths(lengths);
                Arc::new(ListArray::new(item.clone(), offsets, values, nulls))
            } else {
                let offsets = OffsetBuffer::<i64>::from_lengths(lengths);
                Arc::new(LargeListArray::new(item.clone(), offsets, values, nulls))
            }
        }
        DataType::FixedSizeList(item, size) => {
            let values = array(u, item.data_type(), rows * *size as usize)?;
            let list =
                FixedSizeListArray::try_new_with_length(item.clone(), *size, values, nulls, rows);
            Arc::new(list.expect("fixed-size list array"))
        }
        DataType::Boolean => {
            let values = Buffer::from(bytes(u, rows.div_ceil(8)));
            let data = ArrayData::builder(data_type.clone())
                .len(rows)
                .add_buffer(values)
                .nulls(nulls)
                .align_buffers(true)
                .build()
                .expect("boolean array");
            make_array(data)
        }
        primitive => {
            let width = primitive.primitive_width().expect("a fixed-width type");
            let values = Buffer::from(bytes(u, rows * width));
            let data = ArrayData::builder(primitive.clone())
                .len(rows)
                .add_buffer(values)
                .nulls(nulls)
                .align_buffers(true)
                .build()
                .expect("primitive array");
            make_array(data)
        }
    })
}

/// A column for a spec column whose canonical type is `target`: often that type, else any.
fn column_type(u: &mut Unstructured, target: DataType) -> Result<DataType> {
    if u.arbitrary::<bool>()? {
        Ok(target)
    } else {
        input_type(u)
    }
}

fn run(u: &mut Unstructured) -> Result<()> {
    let features: Vec<FeatureType> = (0..u.int_in_range(0..=4)?)
        .map(|_| feature_type(u))
        .collect::<Result<_>>()?;
    let int_key = u.arbitrary::<bool>()?;
    let spec = serde_json::json!({
        "name": "fuzz",
        "entity": {"name": "key", "type": if int_key { "int64" } else { "string" }},
        "features": features.iter().enumerate()
            .map(|(i, t)| serde_json::json!({"name": format!("f{i}"), "type": t.to_string()}))
            .collect::<Vec<_>>(),
    });
    let spec = FeatureSetSpec::from_json(spec.to_string().as_bytes()).expect("a valid spec");
    let canonical = spec.arrow_schema();

    let rows = u.int_in_range(0..=MAX_ROWS)?;
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for field in canonical.fields() {
        // Present (most of the time), possibly twice.
        for _ in 0..u.choose(&[1, 1, 1, 0, 2])?.to_owned() {
            let data_type = column_type(u, field.data_type().clone())?;
            columns.push(array(u, &data_type, rows)?);
            fields.push(Field::new(field.name(), data_type, true));
        }
    }
    if u.ratio(1, 8)? {
        let data_type = input_type(u)?;
        columns.push(array(u, &data_type, rows)?);
        fields.push(Field::new("unknown", data_type, true));
    }
    let order: Vec<usize> = {
        let mut order: Vec<usize> = (0..fields.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, u.int_in_range(0..=i)?);
        }
        order
    };
    let schema = Arc::new(Schema::new(
        order.iter().map(|&i| fields[i].clone()).collect::<Vec<_>>(),
    ));
    let columns = order.iter().map(|&i| columns[i].clone()).collect();
    let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(rows));
    let batch = RecordBatch::try_new_with_options(schema, columns, &options).expect("a batch");

    if let Ok(coerced) = coerce_batch(&spec, &batch) {
        assert_eq!(coerced.schema(), canonical);
        assert_eq!(coerced.num_rows(), rows);
        // Entity and event time are never null in what is stored.
        assert_eq!(coerced.column(0).null_count(), 0);
        assert_eq!(coerced.column(coerced.num_columns() - 1).null_count(), 0);
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
