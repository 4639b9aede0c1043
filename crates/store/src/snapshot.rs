//! Durable snapshots of the online values, so that a restart loads each set's latest values
//! instead of recomputing them from every stored row.
//!
//! One file per set, `{dir}/{set}.snapshot`, replaced atomically (written whole and fsynced
//! under a temporary name, then renamed):
//!
//! ```text
//! "FSONLINE"                 8 bytes, magic
//! format version             u32 LE (1)
//! header length              u32 LE
//! header                     JSON: {"spec": <the set's spec>, "covered_seq": <i64 or null>}
//! values                     Arrow IPC stream in the spec's canonical schema, one row per entity
//! checksum                   u32 LE, CRC-32 of every byte before it
//! ```
//!
//! `covered_seq` is an ingest sequence (see [`OfflineStore::max_seq`]) such that every stored
//! row up to it is reflected in the values; rows after it may be too. A start applies the
//! snapshot, then the latest value of each entity among the rows stored after `covered_seq`
//! ([`OfflineStore::latest_after`]): since the online rules keep the newest event time and
//! give ties to the later ingest, the result is the stored latest whatever the snapshot holds
//! beyond `covered_seq`. A snapshot of another spec (the set was updated, or deleted and
//! created again) or that fails its checksum is not used: the set is rebuilt from the
//! offline store, and the reason logged.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Cursor, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use featherstore_core::FeatureSetSpec;
use serde::{Deserialize, Serialize};

use crate::durable::{
    create_dir_durably, list_dir, remove_quietly, rename_durably, tmp_path, ShortWrites,
};
use crate::online::{OnlineSet, OnlineStore};
use crate::{Error, Result};

const MAGIC: &[u8; 8] = b"FSONLINE";
const FORMAT: u32 = 1;
const SUFFIX: &str = ".snapshot";

#[derive(Serialize, Deserialize)]
struct Header {
    spec: FeatureSetSpec,
    covered_seq: Option<i64>,
}

/// A set's online values as loaded from its snapshot.
pub(crate) struct Loaded {
    pub(crate) index: Box<dyn OnlineSet>,
    /// Stored rows up to this ingest sequence are in `index`; `None`: the set had none.
    pub(crate) covered_seq: Option<i64>,
}

/// Why a snapshot was not used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unusable {
    #[error("there is none")]
    Missing,
    #[error("it is of another definition of the set (version {0:?})")]
    OtherSpec(Option<u64>),
    #[error("it is unreadable: {0}")]
    Corrupt(String),
    #[error("the online store already holds values for the set")]
    NotEmpty,
    #[error(transparent)]
    Store(#[from] Error),
}

/// The directory of the snapshots.
pub(crate) struct Snapshots {
    dir: PathBuf,
}

/// Bytes written, counted into a CRC-32 as they go.
struct Checksummed<W> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Write for Checksummed<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(bytes)?;
        self.crc.update(&bytes[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl Snapshots {
    pub(crate) fn new(dir: PathBuf) -> Self {
        Snapshots { dir }
    }

    fn path(&self, set: &str) -> PathBuf {
        self.dir.join(format!("{set}{SUFFIX}"))
    }

    /// Writes the snapshot of `index`, covering the stored rows up to `covered_seq`. `false`
    /// (and nothing written) when the online backend keeps no snapshots.
    pub(crate) fn write(&self, index: &dyn OnlineSet, covered_seq: Option<i64>) -> Result<bool> {
        create_dir_durably(&self.dir)?;
        let spec = index.spec();
        let path = self.path(&spec.name);
        let tmp = tmp_path(&path);
        let written = write_file(&tmp, index, covered_seq);
        match written {
            Ok(true) => {
                rename_durably(&tmp, &path)?;
                Ok(true)
            }
            other => {
                remove_quietly(&tmp);
                other
            }
        }
    }

    /// Loads the snapshot of `spec`'s set into a set opened from `online`.
    pub(crate) fn load(
        &self,
        spec: &Arc<FeatureSetSpec>,
        online: &dyn OnlineStore,
    ) -> std::result::Result<Loaded, Unusable> {
        let path = self.path(&spec.name);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Unusable::Missing),
            Err(e) => {
                return Err(Unusable::Corrupt(format!(
                    "reading {}: {e}",
                    path.display()
                )))
            }
        };
        let (header, values) = parse(&bytes).map_err(Unusable::Corrupt)?;
        if header.spec != **spec {
            return Err(Unusable::OtherSpec(header.spec.version));
        }
        let index = online.open_set(spec.clone())?;
        if index.entities() > 0 {
            return Err(Unusable::NotEmpty);
        }
        let reader = StreamReader::try_new(Cursor::new(values), None)
            .map_err(|e| Unusable::Corrupt(format!("its values: {e}")))?;
        if reader.schema() != spec.arrow_schema() {
            return Err(Unusable::Corrupt(
                "its values are not in the set's schema".into(),
            ));
        }
        for batch in reader {
            let batch = batch.map_err(|e| Unusable::Corrupt(format!("its values: {e}")))?;
            index.apply(&index.prepare(&batch)?)?;
        }
        Ok(Loaded {
            index,
            covered_seq: header.covered_seq,
        })
    }

    /// Removes a set's snapshot (the set is deleted).
    pub(crate) fn remove(&self, set: &str) {
        remove_quietly(&self.path(set));
    }

    /// Removes the snapshots of sets that no longer exist, and files a crash left half
    /// written.
    pub(crate) fn remove_others<T>(&self, sets: &BTreeMap<String, T>) -> Result<()> {
        for entry in list_dir(&self.dir)? {
            let name = entry.file_name();
            let live = name
                .to_str()
                .and_then(|name| name.strip_suffix(SUFFIX))
                .is_some_and(|set| sets.contains_key(set));
            if !live {
                remove_quietly(&entry.path());
            }
        }
        Ok(())
    }
}

fn write_file(path: &Path, index: &dyn OnlineSet, covered_seq: Option<i64>) -> Result<bool> {
    let io = |e: std::io::Error| Error::io(format!("writing {}", path.display()))(e);
    let file = File::create(path).map_err(io)?;
    let mut out = Checksummed {
        inner: BufWriter::with_capacity(1 << 20, ShortWrites(file)),
        crc: crc32fast::Hasher::new(),
    };
    let header = serde_json::to_vec(&Header {
        spec: index.spec().as_ref().clone(),
        covered_seq,
    })
    .map_err(|e| Error::Corrupt(format!("a spec does not serialise: {e}")))?;
    let header_len =
        u32::try_from(header.len()).map_err(|_| Error::Corrupt("a spec of over 4 GiB".into()))?;
    out.write_all(MAGIC).map_err(io)?;
    out.write_all(&FORMAT.to_le_bytes()).map_err(io)?;
    out.write_all(&header_len.to_le_bytes()).map_err(io)?;
    out.write_all(&header).map_err(io)?;
    let schema = index.spec().arrow_schema();
    let mut values = StreamWriter::try_new(&mut out, &schema)?;
    if !index.export(&mut |batch| Ok(values.write(&batch)?))? {
        return Ok(false);
    }
    values.finish()?;
    drop(values);
    let crc = out.crc.clone().finalize();
    let mut file = out
        .inner
        .into_inner()
        .map_err(|e| io(e.into_error()))?
        .into_inner();
    file.write_all(&crc.to_le_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(true)
}

/// The header and the values' bytes of a snapshot file, checked.
fn parse(bytes: &[u8]) -> std::result::Result<(Header, &[u8]), String> {
    let fixed = MAGIC.len() + 8;
    if bytes.len() < fixed + 4 || &bytes[..MAGIC.len()] != MAGIC {
        return Err("not a snapshot file".into());
    }
    let (body, trailer) = bytes.split_at(bytes.len() - 4);
    let mut stored = [0u8; 4];
    stored.copy_from_slice(trailer);
    if crc32fast::hash(body) != u32::from_le_bytes(stored) {
        return Err("checksum mismatch".into());
    }
    let mut word = [0u8; 4];
    let mut rest = &body[MAGIC.len()..];
    rest.read_exact(&mut word).map_err(|e| e.to_string())?;
    let format = u32::from_le_bytes(word);
    if format != FORMAT {
        return Err(format!("format {format}; this server reads {FORMAT}"));
    }
    rest.read_exact(&mut word).map_err(|e| e.to_string())?;
    let header_len = u32::from_le_bytes(word) as usize;
    if header_len > rest.len() {
        return Err("truncated header".into());
    }
    let (header, values) = rest.split_at(header_len);
    let header: Header = serde_json::from_slice(header).map_err(|e| format!("its header: {e}"))?;
    Ok((header, values))
}
