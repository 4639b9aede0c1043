//! Per-feature value buffers of the online index, and the copy in (from Arrow arrays) and out
//! (into Arrow arrays) of single rows.

use std::sync::Arc;

use arrow::array::{
    make_array, Array, ArrayData, ArrayRef, AsArray, BinaryBuilder, BooleanArray, StringArray,
};
use arrow::buffer::{MutableBuffer, NullBuffer};
use arrow::datatypes::{DataType, Float32Type, Float64Type};
use featherstore_core::FeatureType;

use crate::Result;

/// Byte width of a fixed-width feature value; `None` for bool and variable-length types.
fn fixed_width(t: FeatureType) -> Option<usize> {
    match t {
        FeatureType::Int32 | FeatureType::Float32 | FeatureType::Date => Some(4),
        FeatureType::Int64 | FeatureType::Float64 | FeatureType::Timestamp => Some(8),
        FeatureType::Float32Vector(n) => Some(4 * n),
        FeatureType::Float64Vector(n) => Some(8 * n),
        FeatureType::Bool | FeatureType::String | FeatureType::Binary => None,
    }
}

/// The stored values of one feature, indexed by slot.
pub(super) enum ValueColumn {
    /// Primitive and vector values as raw little-endian bytes, `width` per slot.
    Fixed {
        width: usize,
        bytes: Vec<u8>,
        valid: Vec<bool>,
    },
    Bool(Vec<Option<bool>>),
    /// Strings (already validated UTF-8) and binaries.
    Bytes(Vec<Option<Box<[u8]>>>),
}

/// Read access to one column of an ingested (canonical) batch.
pub(super) enum Source<'a> {
    Fixed {
        bytes: &'a [u8],
        nulls: Option<&'a NullBuffer>,
    },
    Bool(&'a BooleanArray),
    Bytes {
        offsets: &'a [i32],
        data: &'a [u8],
        nulls: Option<&'a NullBuffer>,
    },
}

impl<'a> Source<'a> {
    /// `array` has its feature's canonical Arrow type (the batch was coerced).
    pub(super) fn new(array: &'a dyn Array) -> Self {
        let primitive = |data: &'a dyn Array| -> &'a [u8] {
            match data.data_type() {
                DataType::Float32 => data
                    .as_primitive::<Float32Type>()
                    .values()
                    .inner()
                    .as_slice(),
                DataType::Float64 => data
                    .as_primitive::<Float64Type>()
                    .values()
                    .inner()
                    .as_slice(),
                DataType::Int32 | DataType::Date32 => data
                    .as_primitive::<arrow::datatypes::Int32Type>()
                    .values()
                    .inner()
                    .as_slice(),
                _ => data
                    .as_primitive::<arrow::datatypes::Int64Type>()
                    .values()
                    .inner()
                    .as_slice(),
            }
        };
        match array.data_type() {
            DataType::Boolean => Source::Bool(array.as_boolean()),
            DataType::Utf8 => {
                let a = array.as_string::<i32>();
                Source::Bytes {
                    offsets: a.value_offsets(),
                    data: a.value_data(),
                    nulls: a.nulls(),
                }
            }
            DataType::Binary => {
                let a = array.as_binary::<i32>();
                Source::Bytes {
                    offsets: a.value_offsets(),
                    data: a.value_data(),
                    nulls: a.nulls(),
                }
            }
            DataType::FixedSizeList(item, _) => {
                let list = array.as_fixed_size_list();
                let item_width = item.data_type().primitive_width().unwrap_or(4);
                let start = list.value_offset(0).max(0) as usize * item_width;
                Source::Fixed {
                    bytes: &primitive(list.values().as_ref())[start..],
                    nulls: list.nulls(),
                }
            }
            DataType::Timestamp(_, _) => Source::Fixed {
                bytes: array
                    .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
                    .values()
                    .inner()
                    .as_slice(),
                nulls: array.nulls(),
            },
            _ => Source::Fixed {
                bytes: primitive(array),
                nulls: array.nulls(),
            },
        }
    }
}

impl ValueColumn {
    pub(super) fn new(t: FeatureType) -> Self {
        match (t, fixed_width(t)) {
            (_, Some(width)) => ValueColumn::Fixed {
                width,
                bytes: Vec::new(),
                valid: Vec::new(),
            },
            (FeatureType::Bool, None) => ValueColumn::Bool(Vec::new()),
            _ => ValueColumn::Bytes(Vec::new()),
        }
    }

    /// Appends a slot holding row `row` of `source`.
    pub(super) fn push(&mut self, source: &Source, row: usize) {
        let slot = match self {
            ValueColumn::Fixed {
                width,
                bytes,
                valid,
            } => {
                bytes.resize(bytes.len() + *width, 0);
                valid.push(false);
                valid.len() - 1
            }
            ValueColumn::Bool(values) => {
                values.push(None);
                values.len() - 1
            }
            ValueColumn::Bytes(values) => {
                values.push(None);
                values.len() - 1
            }
        };
        self.set(slot, source, row);
    }

    pub(super) fn set(&mut self, slot: usize, source: &Source, row: usize) {
        match (self, source) {
            (
                ValueColumn::Fixed {
                    width,
                    bytes,
                    valid,
                },
                Source::Fixed {
                    bytes: from, nulls, ..
                },
            ) => {
                let w = *width;
                bytes[slot * w..(slot + 1) * w].copy_from_slice(&from[row * w..(row + 1) * w]);
                valid[slot] = nulls.is_none_or(|n| n.is_valid(row));
            }
            (ValueColumn::Bool(values), Source::Bool(from)) => {
                values[slot] = from.is_valid(row).then(|| from.value(row));
            }
            (ValueColumn::Bytes(values), source @ Source::Bytes { .. }) => {
                let new = bytes_of(source, row);
                // Reuse the allocation when the length is unchanged (frequent for ids, codes).
                match (&mut values[slot], new) {
                    (Some(old), Some(new)) if old.len() == new.len() => old.copy_from_slice(new),
                    (old, new) => *old = new.map(Box::from),
                }
            }
            _ => unreachable!("batch columns are coerced to the spec's types"),
        }
    }

    pub(super) fn memory_bytes(&self) -> usize {
        match self {
            ValueColumn::Fixed { bytes, valid, .. } => bytes.capacity() + valid.capacity(),
            ValueColumn::Bool(values) => values.capacity() * size_of::<Option<bool>>(),
            ValueColumn::Bytes(values) => {
                values.capacity() * size_of::<Option<Box<[u8]>>>()
                    + values.iter().flatten().map(|v| v.len()).sum::<usize>()
            }
        }
    }
}

fn bytes_of<'a>(source: &Source<'a>, row: usize) -> Option<&'a [u8]> {
    let Source::Bytes {
        offsets,
        data,
        nulls,
    } = source
    else {
        return None;
    };
    if nulls.is_some_and(|n| n.is_null(row)) {
        return None;
    }
    Some(&data[offsets[row] as usize..offsets[row + 1] as usize])
}

/// The output of one feature for a lookup, filled row by row.
pub(super) enum Gather {
    Fixed {
        width: usize,
        /// Arrow-aligned, so the bytes become a Float32/Int64/... buffer without a copy.
        bytes: MutableBuffer,
        valid: Vec<bool>,
    },
    Bool(Vec<Option<bool>>),
    Bytes(BinaryBuilder),
}

impl Gather {
    pub(super) fn new(t: FeatureType, rows: usize) -> Self {
        match (t, fixed_width(t)) {
            (_, Some(width)) => Gather::Fixed {
                width,
                bytes: MutableBuffer::with_capacity(rows * width),
                valid: Vec::with_capacity(rows),
            },
            (FeatureType::Bool, None) => Gather::Bool(Vec::with_capacity(rows)),
            _ => Gather::Bytes(BinaryBuilder::with_capacity(rows, rows * 16)),
        }
    }

    /// Appends the value at `slot` of `column`, or a null.
    pub(super) fn push(&mut self, value: Option<(&ValueColumn, usize)>) {
        match (self, value) {
            (
                Gather::Fixed {
                    width,
                    bytes,
                    valid,
                },
                Some((
                    ValueColumn::Fixed {
                        bytes: from,
                        valid: from_valid,
                        ..
                    },
                    slot,
                )),
            ) => {
                bytes.extend_from_slice(&from[slot * *width..(slot + 1) * *width]);
                valid.push(from_valid[slot]);
            }
            (
                Gather::Fixed {
                    width,
                    bytes,
                    valid,
                },
                None,
            ) => {
                bytes.resize(bytes.len() + *width, 0);
                valid.push(false);
            }
            (Gather::Bool(values), Some((ValueColumn::Bool(from), slot))) => {
                values.push(from[slot])
            }
            (Gather::Bool(values), None) => values.push(None),
            (Gather::Bytes(builder), Some((ValueColumn::Bytes(from), slot))) => {
                builder.append_option(from[slot].as_deref())
            }
            (Gather::Bytes(builder), None) => builder.append_null(),
            _ => unreachable!("gathers are made for their column's type"),
        }
    }

    pub(super) fn finish(self, t: FeatureType) -> Result<ArrayRef> {
        Ok(match self {
            Gather::Fixed { bytes, valid, .. } => {
                let rows = valid.len();
                let nulls = NullBuffer::from(valid);
                let data_type = t.arrow_type();
                let data = match &data_type {
                    DataType::FixedSizeList(item, n) => {
                        let child = ArrayData::builder(item.data_type().clone())
                            .len(rows * *n as usize)
                            .add_buffer(bytes.into())
                            .build()?;
                        ArrayData::builder(data_type)
                            .len(rows)
                            .add_child_data(child)
                            .nulls(Some(nulls))
                            .build()?
                    }
                    _ => ArrayData::builder(data_type)
                        .len(rows)
                        .add_buffer(bytes.into())
                        .nulls(Some(nulls))
                        .build()?,
                };
                make_array(data)
            }
            Gather::Bool(values) => Arc::new(BooleanArray::from(values)),
            Gather::Bytes(mut builder) => {
                let binary = builder.finish();
                if t == FeatureType::String {
                    Arc::new(StringArray::try_from_binary(binary)?)
                } else {
                    Arc::new(binary)
                }
            }
        })
    }
}
