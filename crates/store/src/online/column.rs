//! The value buffers of the online index (a record of fixed-width values per slot, a column
//! per bool, string or binary feature), and the copy in (from Arrow arrays) and out (into
//! Arrow arrays) of single rows.

use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::Arc;

use arrow::array::{
    make_array, Array, ArrayData, ArrayRef, AsArray, BinaryBuilder, BooleanArray,
    BooleanBufferBuilder, GenericByteArray, PrimitiveArray, StringArray,
};
use arrow::buffer::{Buffer, MutableBuffer, NullBuffer, ScalarBuffer};
use arrow::datatypes::{
    ArrowPrimitiveType, ByteArrayType, DataType, Date32Type, Float32Type, Float64Type, Int32Type,
    Int64Type, TimestampMicrosecondType,
};
use featherstore_core::{FeatureSpec, FeatureType};

use crate::{Error, Result};

/// Makes room for `additional` more items, growing by a quarter rather than doubling: the
/// index lives as long as the process, and a doubled buffer would leave up to half of it
/// unused for good. Still amortised O(1) per item.
pub(super) fn grow<T>(items: &mut Vec<T>, additional: usize) {
    if items.capacity() - items.len() < additional {
        items.reserve_exact(additional.max(items.len() / 4).max(64));
    }
}

/// One bit per slot.
#[derive(Default)]
pub(super) struct Bits {
    words: Vec<u64>,
    len: usize,
}

impl Bits {
    fn push(&mut self, bit: bool) {
        if self.len.is_multiple_of(64) {
            grow(&mut self.words, 1);
            self.words.push(0);
        }
        self.len += 1;
        self.set(self.len - 1, bit);
    }

    fn set(&mut self, i: usize, bit: bool) {
        let mask = 1u64 << (i % 64);
        if bit {
            self.words[i / 64] |= mask;
        } else {
            self.words[i / 64] &= !mask;
        }
    }

    pub(super) fn get(&self, i: usize) -> bool {
        self.words[i / 64] & (1u64 << (i % 64)) != 0
    }

    fn memory_bytes(&self) -> usize {
        self.words.capacity() * size_of::<u64>()
    }
}

/// Where a feature's values live in a shard.
#[derive(Clone, Copy, Debug)]
pub(super) enum Place {
    /// In each slot's record ([`Records`]): `width` bytes at `offset`, present when validity
    /// bit `bit` of the record is set.
    Record {
        offset: usize,
        width: usize,
        bit: usize,
    },
    /// In the shard's value column `index` (bools, strings and binaries).
    Column(usize),
}

/// How a set's values are laid out in a shard: every fixed-width feature packed into one
/// record per slot, then a validity bit per fixed-width feature; the others in a column each.
#[derive(Debug)]
pub(super) struct Layout {
    /// By feature index.
    pub(super) places: Vec<Place>,
    /// The feature type of each value column.
    pub(super) column_types: Vec<FeatureType>,
    /// Bytes of values per record, validity bits included.
    stride: usize,
    /// 8-byte words per record ([`Records`]): its header, then its values.
    words: usize,
    /// Where a record's validity bits start.
    valid_at: usize,
}

impl Layout {
    pub(super) fn new(features: &[FeatureSpec]) -> Self {
        let mut places = Vec::with_capacity(features.len());
        let mut column_types = Vec::new();
        let mut offset = 0;
        let mut bits = 0;
        for feature in features {
            let t = feature.feature_type;
            places.push(match t.fixed_width() {
                Some(width) => {
                    let place = Place::Record {
                        offset,
                        width,
                        bit: bits,
                    };
                    offset += width;
                    bits += 1;
                    place
                }
                None => {
                    column_types.push(t);
                    Place::Column(column_types.len() - 1)
                }
            });
        }
        let stride = offset + bits.div_ceil(8);
        Layout {
            places,
            column_types,
            stride,
            words: (HEADER_BYTES + stride).div_ceil(8),
            valid_at: offset,
        }
    }

    /// Bytes of a record's image ([`Records::read`]).
    pub(super) fn image_bytes(&self) -> usize {
        self.words * 8
    }
}

/// Bytes of a record before its values: a 4-byte version, then the 8-byte event time.
const HEADER_BYTES: usize = 12;

/// The event time and fixed-width values of a shard, one record of [`Layout::words`] 8-byte
/// words per slot, holding a version, the event time, then [`Layout::stride`] bytes of values
/// and validity bits. A lookup reads an entity's numbers from one or two cache lines; a
/// column per feature cost a cache miss per feature per entity, most of a lookup's time.
///
/// The words are atomics, so that an ingest rewrites the records of known entities in place
/// while lookups read the shard: a seqlock per record, whose version is odd while a write is
/// under way, and a read that saw it odd or changed reads again. Behind a lock, lookups
/// waited for every ingest that the scheduler took off the CPU in the middle of a shard, for
/// milliseconds: storage threads run at a lower priority than the readers.
#[derive(Default)]
pub(super) struct Records {
    words: Vec<AtomicU64>,
}

/// The 8-byte word `i` of a record's image.
fn word_of(image: &[u8], i: usize) -> u64 {
    let mut le = [0u8; 8];
    let bytes = image.get(i * 8..).unwrap_or_default();
    let n = bytes.len().min(8);
    le[..n].copy_from_slice(&bytes[..n]);
    u64::from_le_bytes(le)
}

impl Records {
    /// Appends an all-null record, with no event time yet.
    pub(super) fn push(&mut self, layout: &Layout) {
        grow(&mut self.words, layout.words);
        self.words
            .extend((0..layout.words).map(|_| AtomicU64::new(0)));
    }

    fn words(&self, layout: &Layout, slot: usize) -> &[AtomicU64] {
        &self.words[slot * layout.words..(slot + 1) * layout.words]
    }

    /// Loads the first and last words of record `slot` and answers their sum, meaningless:
    /// for a reader that touches many records before reading them, so that their cache
    /// misses overlap instead of each read waiting for its own.
    pub(super) fn touch(&self, layout: &Layout, slot: usize) -> u64 {
        let words = self.words(layout, slot);
        let first = words.first().map_or(0, |w| w.load(Ordering::Relaxed));
        let last = words.last().map_or(0, |w| w.load(Ordering::Relaxed));
        first.wrapping_add(last)
    }

    /// The event time of `slot`, as last written. For the shard's writer: a reader gets it
    /// from [`read`](Self::read), consistent with the values.
    pub(super) fn timestamp(&self, layout: &Layout, slot: usize) -> i64 {
        let words = self.words(layout, slot);
        // Bytes 4..12: the high half of word 0, then the low half of word 1.
        let low = words[0].load(Ordering::Relaxed) >> 32;
        let high = words[1].load(Ordering::Relaxed) << 32;
        (low | high) as i64
    }

    /// Rewrites record `slot` from `image` (from [`stage`]). The writers of a shard take
    /// turns.
    pub(super) fn write(&self, layout: &Layout, slot: usize, image: &mut [u8]) {
        let words = self.words(layout, slot);
        let version = words[0].load(Ordering::Relaxed) as u32;
        image[..4].copy_from_slice(&version.wrapping_add(1).to_le_bytes());
        words[0].store(word_of(image, 0), Ordering::Relaxed);
        // The odd version is visible before any other new word.
        fence(Ordering::Release);
        for (i, word) in words.iter().enumerate().skip(1) {
            word.store(word_of(image, i), Ordering::Relaxed);
        }
        image[..4].copy_from_slice(&version.wrapping_add(2).to_le_bytes());
        words[0].store(word_of(image, 0), Ordering::Release);
    }

    /// Copies record `slot` into `image` and returns its event time and values
    /// ([`Layout::stride`] bytes), both from one complete write.
    pub(super) fn read<'i>(
        &self,
        layout: &Layout,
        slot: usize,
        image: &'i mut Vec<u8>,
    ) -> (i64, &'i [u8]) {
        let words = self.words(layout, slot);
        let mut attempts = 0u32;
        loop {
            let version = words[0].load(Ordering::Acquire) as u32;
            if version.is_multiple_of(2) {
                image.clear();
                for word in words {
                    image.extend_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
                }
                // The words are read before the version is checked again.
                fence(Ordering::Acquire);
                if words[0].load(Ordering::Relaxed) as u32 == version {
                    let mut time = [0u8; 8];
                    time.copy_from_slice(&image[4..HEADER_BYTES]);
                    let values = &image[HEADER_BYTES..HEADER_BYTES + layout.stride];
                    return (i64::from_le_bytes(time), values);
                }
            }
            // A write of one record takes nanoseconds; only a writer taken off the CPU in
            // the middle of it makes a reader wait longer, and then it gives the CPU back.
            attempts += 1;
            if attempts < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }

    pub(super) fn memory_bytes(&self) -> usize {
        self.words.capacity() * size_of::<AtomicU64>()
    }
}

/// The image of a record ([`Records::write`]) for row `row` of a batch (`sources`, by
/// feature) at event time `timestamp`: every fixed-width feature's value and validity.
pub(super) fn stage(
    layout: &Layout,
    sources: &[Source<'_>],
    row: usize,
    timestamp: i64,
    image: &mut Vec<u8>,
) {
    image.clear();
    image.resize(HEADER_BYTES + layout.stride, 0);
    image[4..HEADER_BYTES].copy_from_slice(&timestamp.to_le_bytes());
    let record = &mut image[HEADER_BYTES..];
    for (&place, source) in layout.places.iter().zip(sources) {
        let (
            Place::Record { offset, width, bit },
            Source::Fixed {
                bytes: from, nulls, ..
            },
        ) = (place, source)
        else {
            continue;
        };
        if nulls.is_some_and(|n| n.is_null(row)) {
            continue;
        }
        let to = &mut record[offset..offset + width];
        let from = &from.as_slice()[row * width..(row + 1) * width];
        // A constant length lets the copy compile to one move: a memcpy call per value was
        // half of the index's share of ingest (16 floats a row).
        match width {
            4 => to[..4].copy_from_slice(&from[..4]),
            8 => to[..8].copy_from_slice(&from[..8]),
            _ => to.copy_from_slice(from),
        }
        record[layout.valid_at + bit / 8] |= 1u8 << (bit % 8);
    }
}

/// The value at `place` of `record`, if present.
pub(super) fn record_value<'r>(
    layout: &Layout,
    record: &'r [u8],
    place: Place,
) -> Option<&'r [u8]> {
    let Place::Record { offset, width, bit } = place else {
        return None;
    };
    let present = record[layout.valid_at + bit / 8] & (1u8 << (bit % 8)) != 0;
    present.then(|| &record[offset..offset + width])
}

/// The stored values of one bool, string or binary feature, indexed by slot.
pub(super) enum ValueColumn {
    Bool {
        values: Bits,
        valid: Bits,
    },
    /// Strings (already validated UTF-8) and binaries.
    Bytes(Vec<Option<Box<[u8]>>>),
}

/// Read access to one column of an ingested (canonical) batch, checked by [`Source::new`] so
/// that reading any of its rows cannot fail.
pub(super) enum Source<'a> {
    /// Exactly `rows * width` bytes of values.
    Fixed {
        bytes: Buffer,
        nulls: Option<&'a NullBuffer>,
    },
    Bool(&'a BooleanArray),
    /// `offsets` has `rows + 1` non-decreasing entries within `data`.
    Bytes {
        offsets: &'a [i32],
        data: &'a [u8],
        nulls: Option<&'a NullBuffer>,
    },
}

fn mismatch(feature: &FeatureSpec, actual: &DataType) -> Error {
    Error::Corrupt(format!(
        "the online index was handed feature {:?} as {actual}; expected {}",
        feature.name,
        feature.feature_type.arrow_type()
    ))
}

/// The first `values * width` bytes of the values of a fixed-width array, whatever its type.
fn raw_values(array: &dyn Array, values: usize, width: usize) -> Option<Buffer> {
    let data = array.to_data();
    let buffer = data.buffers().first()?;
    let start = data.offset().checked_mul(width)?;
    let len = values.checked_mul(width)?;
    (data.len() >= values && start.checked_add(len)? <= buffer.len())
        .then(|| buffer.slice_with_length(start, len))
}

/// Offsets and data of a Utf8 or Binary column, checked to be in bounds.
pub(super) fn checked_bytes<'a>(
    offsets: &'a [i32],
    data: &'a [u8],
    rows: usize,
) -> Option<(&'a [i32], &'a [u8])> {
    let in_bounds = offsets.len() == rows + 1
        && offsets.first().is_some_and(|&first| first >= 0)
        && offsets.windows(2).all(|w| w[0] <= w[1])
        && offsets
            .last()
            .is_some_and(|&last| last as usize <= data.len());
    in_bounds.then_some((offsets, data))
}

/// A Utf8 or Binary column as a [`Source::Bytes`], its offsets checked to be in bounds.
fn bytes_source<T: ByteArrayType<Offset = i32>>(
    array: &GenericByteArray<T>,
    rows: usize,
) -> Option<Source<'_>> {
    let (offsets, data) = checked_bytes(array.value_offsets(), array.value_data(), rows)?;
    Some(Source::Bytes {
        offsets,
        data,
        nulls: array.nulls(),
    })
}

impl<'a> Source<'a> {
    /// Checks that `array` has `feature`'s canonical Arrow type and `rows` readable rows.
    pub(super) fn new(feature: &FeatureSpec, array: &'a dyn Array, rows: usize) -> Result<Self> {
        let t = feature.feature_type;
        if array.data_type() != &t.arrow_type() || array.len() != rows {
            return Err(mismatch(feature, array.data_type()));
        }
        let bad = || mismatch(feature, array.data_type());
        Ok(match t {
            FeatureType::Bool => Source::Bool(array.as_boolean_opt().ok_or_else(bad)?),
            FeatureType::String => {
                bytes_source(array.as_string_opt::<i32>().ok_or_else(bad)?, rows).ok_or_else(bad)?
            }
            FeatureType::Binary => {
                bytes_source(array.as_binary_opt::<i32>().ok_or_else(bad)?, rows).ok_or_else(bad)?
            }
            FeatureType::Int32
            | FeatureType::Int64
            | FeatureType::Float32
            | FeatureType::Float64
            | FeatureType::Date
            | FeatureType::Timestamp => Source::Fixed {
                bytes: raw_values(array, rows, t.fixed_width().ok_or_else(bad)?).ok_or_else(bad)?,
                nulls: array.nulls(),
            },
            FeatureType::Float32Vector(n) | FeatureType::Float64Vector(n) => {
                let list = array.as_fixed_size_list_opt().ok_or_else(bad)?;
                let item_width = t.fixed_width().ok_or_else(bad)? / n;
                let values = list.values().as_ref();
                let first = list.value_offset(0).max(0) as usize;
                let bytes = raw_values(values, first + rows * n, item_width)
                    .ok_or_else(bad)?
                    .slice(first * item_width);
                Source::Fixed {
                    bytes,
                    nulls: list.nulls(),
                }
            }
        })
    }
}

impl ValueColumn {
    /// The column of a bool, string or binary feature (fixed-width ones live in records).
    pub(super) fn new(t: FeatureType) -> Self {
        match t {
            FeatureType::Bool => ValueColumn::Bool {
                values: Bits::default(),
                valid: Bits::default(),
            },
            _ => ValueColumn::Bytes(Vec::new()),
        }
    }

    /// Appends a slot without a value, for [`set`](Self::set) to fill.
    pub(super) fn push_empty(&mut self) {
        match self {
            ValueColumn::Bool { values, valid } => {
                values.push(false);
                valid.push(false);
            }
            ValueColumn::Bytes(values) => {
                grow(values, 1);
                values.push(None);
            }
        }
    }

    pub(super) fn set(&mut self, slot: usize, source: &Source<'_>, row: usize) {
        match (self, source) {
            (ValueColumn::Bool { values, valid }, Source::Bool(from)) => {
                let is_valid = from.is_valid(row);
                valid.set(slot, is_valid);
                values.set(slot, is_valid && from.value(row));
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
            ValueColumn::Bool { values, valid } => values.memory_bytes() + valid.memory_bytes(),
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
        /// Values so far.
        rows: usize,
        /// Validity, kept from the first null on: an answer with every value (the usual one)
        /// allocates none.
        nulls: Option<BooleanBufferBuilder>,
    },
    Bool(Vec<Option<bool>>),
    Bytes(BinaryBuilder),
}

impl Gather {
    pub(super) fn new(t: FeatureType, rows: usize) -> Self {
        match (t, t.fixed_width()) {
            (_, Some(width)) => Gather::Fixed {
                width,
                bytes: MutableBuffer::with_capacity(rows * width),
                rows: 0,
                nulls: None,
            },
            (FeatureType::Bool, None) => Gather::Bool(Vec::with_capacity(rows)),
            _ => Gather::Bytes(BinaryBuilder::with_capacity(rows, rows * 16)),
        }
    }

    /// Appends a null.
    pub(super) fn push_null(&mut self) {
        match self {
            Gather::Fixed {
                width,
                bytes,
                rows,
                nulls,
            } => {
                bytes.resize(bytes.len() + *width, 0);
                nulls
                    .get_or_insert_with(|| {
                        let mut valid = BooleanBufferBuilder::new(*rows + 1);
                        valid.append_n(*rows, true);
                        valid
                    })
                    .append(false);
                *rows += 1;
            }
            Gather::Bool(values) => values.push(None),
            Gather::Bytes(builder) => builder.append_null(),
        }
    }

    /// Appends a fixed-width value: its `width` little-endian bytes.
    pub(super) fn push_fixed(&mut self, value: &[u8]) {
        let Gather::Fixed {
            bytes, rows, nulls, ..
        } = self
        else {
            unreachable!("fixed-width values are gathered for fixed-width features")
        };
        // A constant length lets the copy compile to one move instead of a memcpy call per
        // value.
        match value.len() {
            4 => bytes.extend_from_slice(&value[..4]),
            8 => bytes.extend_from_slice(&value[..8]),
            _ => bytes.extend_from_slice(value),
        }
        if let Some(nulls) = nulls {
            nulls.append(true);
        }
        *rows += 1;
    }

    /// Appends the value of a shard's feature at `place` for `slot`, whose fixed-width values
    /// are `record`.
    pub(super) fn push_stored(
        &mut self,
        layout: &Layout,
        record: &[u8],
        columns: &[ValueColumn],
        place: Place,
        slot: usize,
    ) {
        match (self, place) {
            (gather, Place::Record { .. }) => match record_value(layout, record, place) {
                Some(value) => gather.push_fixed(value),
                None => gather.push_null(),
            },
            (Gather::Bool(values), Place::Column(i)) => match &columns[i] {
                ValueColumn::Bool {
                    values: from,
                    valid,
                } => values.push(valid.get(slot).then(|| from.get(slot))),
                ValueColumn::Bytes(_) => unreachable!("a bool feature has a bool column"),
            },
            (Gather::Bytes(builder), Place::Column(i)) => match &columns[i] {
                ValueColumn::Bytes(from) => builder.append_option(from[slot].as_deref()),
                ValueColumn::Bool { .. } => unreachable!("a byte feature has a byte column"),
            },
            (Gather::Fixed { .. }, Place::Column(_)) => {
                unreachable!("fixed-width features live in records")
            }
        }
    }

    pub(super) fn finish(self, t: FeatureType) -> Result<ArrayRef> {
        Ok(match self {
            Gather::Fixed {
                bytes, rows, nulls, ..
            } => {
                let nulls = nulls.map(|mut valid| NullBuffer::new(valid.finish()));
                let values: Buffer = bytes.into();
                // Scalars are built as their typed array directly: on a read of a few
                // entities, going through `ArrayData` (a builder, a validation, a conversion)
                // was a measurable part of each feature's cost.
                match t {
                    FeatureType::Int32 => primitive::<Int32Type>(values, nulls, t)?,
                    FeatureType::Int64 => primitive::<Int64Type>(values, nulls, t)?,
                    FeatureType::Float32 => primitive::<Float32Type>(values, nulls, t)?,
                    FeatureType::Float64 => primitive::<Float64Type>(values, nulls, t)?,
                    FeatureType::Date => primitive::<Date32Type>(values, nulls, t)?,
                    FeatureType::Timestamp => {
                        primitive::<TimestampMicrosecondType>(values, nulls, t)?
                    }
                    _ => {
                        let data_type = t.arrow_type();
                        let DataType::FixedSizeList(item, n) = &data_type else {
                            return Err(Error::Corrupt(format!("{t} is not fixed-width")));
                        };
                        let child = ArrayData::builder(item.data_type().clone())
                            .len(rows * *n as usize)
                            .add_buffer(values)
                            .build()?;
                        make_array(
                            ArrayData::builder(data_type)
                                .len(rows)
                                .add_child_data(child)
                                .nulls(nulls)
                                .build()?,
                        )
                    }
                }
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

/// A gathered fixed-width feature as its typed array (of `t`'s Arrow type).
fn primitive<T: ArrowPrimitiveType>(
    values: Buffer,
    nulls: Option<NullBuffer>,
    t: FeatureType,
) -> Result<ArrayRef> {
    let width = size_of::<T::Native>();
    if !values.len().is_multiple_of(width) {
        return Err(Error::Corrupt(format!(
            "{} bytes gathered for {t} values of {width} bytes",
            values.len()
        )));
    }
    let len = values.len() / width;
    let values = ScalarBuffer::<T::Native>::new(values, 0, len);
    Ok(Arc::new(
        PrimitiveArray::<T>::try_new(values, nulls)?.with_data_type(t.arrow_type()),
    ))
}

/// The compact row encoding of a remote backend (Redis): per feature, a tag byte (0: null)
/// then the value: fixed-width values as their little-endian bytes, bools in the tag (1:
/// false, 2: true), strings and binaries as a u32 length and the bytes. No Arrow framing, so
/// one row of a few features is tens of bytes.
impl Source<'_> {
    /// Appends row `row` of this column, of type `t`, to `out`.
    pub(super) fn encode(&self, t: FeatureType, row: usize, out: &mut Vec<u8>) {
        match self {
            Source::Fixed { bytes, nulls } => match t.fixed_width() {
                Some(w) if nulls.is_none_or(|n| n.is_valid(row)) => {
                    out.push(1);
                    out.extend_from_slice(&bytes.as_slice()[row * w..(row + 1) * w]);
                }
                _ => out.push(0),
            },
            Source::Bool(values) => {
                out.push(match values.is_valid(row).then(|| values.value(row)) {
                    None => 0,
                    Some(false) => 1,
                    Some(true) => 2,
                })
            }
            source @ Source::Bytes { .. } => match bytes_of(source, row) {
                None => out.push(0),
                Some(value) => {
                    out.push(1);
                    // An Arrow array with i32 offsets: every value is under 2 GiB.
                    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
                    out.extend_from_slice(value);
                }
            },
        }
    }
}

/// Splits `n` bytes off the front of `input`.
fn take<'a>(input: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (head, rest) = (input.len() >= n).then(|| input.split_at(n))?;
    *input = rest;
    Some(head)
}

impl Gather {
    /// Appends the next value of an encoded row (see [`Source::encode`]) of type `t`,
    /// consuming it from `input`; `None` when the bytes are not a value of that type (the
    /// stored row is corrupt), leaving this gather unchanged.
    pub(super) fn push_encoded(&mut self, t: FeatureType, input: &mut &[u8]) -> Option<()> {
        let tag = *take(input, 1)?.first()?;
        match (self, tag) {
            (gather, 0) => gather.push_null(),
            (gather @ Gather::Fixed { .. }, 1) => {
                let Gather::Fixed { width, .. } = gather else {
                    return None;
                };
                let value = take(input, *width)?;
                gather.push_fixed(value);
            }
            (Gather::Bool(values), 1 | 2) => values.push(Some(tag == 2)),
            (Gather::Bytes(builder), 1) => {
                let len = u32::from_le_bytes(take(input, 4)?.try_into().ok()?) as usize;
                let value = take(input, len)?;
                if t == FeatureType::String && std::str::from_utf8(value).is_err() {
                    return None;
                }
                builder.append_value(value);
            }
            _ => return None,
        }
        Some(())
    }

    /// Skips the next value of an encoded row of type `t` (a feature not asked for).
    pub(super) fn skip_encoded(t: FeatureType, input: &mut &[u8]) -> Option<()> {
        let tag = *take(input, 1)?.first()?;
        match (t.fixed_width(), t, tag) {
            (_, _, 0) => {}
            (Some(width), _, 1) => {
                take(input, width)?;
            }
            (None, FeatureType::Bool, 1 | 2) => {}
            (None, FeatureType::String | FeatureType::Binary, 1) => {
                let len = u32::from_le_bytes(take(input, 4)?.try_into().ok()?) as usize;
                take(input, len)?;
            }
            _ => return None,
        }
        Some(())
    }
}
