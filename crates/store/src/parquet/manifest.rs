//! `_manifest.json`, the single source of truth of a set's flushed data: which Parquet files are
//! live, and up to which ingest sequence their rows reach. Files it does not list are garbage;
//! log rows it covers are already in Parquet.

use std::collections::HashSet;
use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::durable::write_atomic;
use crate::{Error, Result};

pub(super) const MANIFEST_FILE: &str = "_manifest.json";
/// Bumped when the manifest changes incompatibly; an unknown format is refused, not guessed.
/// Format 2: every row written since carries its ingest time; a set of format 1 (or without a
/// manifest) was written before ingest times, and is upgraded at open (`legacy_ingested_at`).
pub(super) const FORMAT: u32 = 2;
/// Written by versions before ingest times; read, and upgraded to [`FORMAT`] at open.
pub(super) const FORMAT_BEFORE_INGEST_TIMES: u32 = 1;
pub(super) const DATE_DIR_PREFIX: &str = "date=";
pub(super) const PART_PREFIX: &str = "part-";
const PART_SUFFIX: &str = ".parquet";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Manifest {
    pub(super) format: u32,
    /// Every row with a `_seq` up to this one is in `files`; -1 when no row is.
    pub(super) flushed_seq: i64,
    /// Number of the next data file: names are never reused while the set exists, so a
    /// file retired by compaction can be deleted late without hitting a newer one.
    pub(super) next_file: u64,
    pub(super) files: Vec<FileEntry>,
    /// When the set holds rows stored without an ingest time (by a version before ingest
    /// times), the time they read as ingested at: when this version first opened the set
    /// (UTC microseconds). Recorded once; `None` for a set created with ingest times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) legacy_ingested_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileEntry {
    /// Relative to the set's directory, `date=YYYY-MM-DD/part-00000001.parquet`.
    pub(super) path: String,
    pub(super) rows: u64,
    /// Written before ingest times: the file has no `_ingested_at` column, and its rows read
    /// as ingested at the manifest's `legacy_ingested_at`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) without_ingest_times: bool,
}

impl Default for Manifest {
    fn default() -> Self {
        Manifest {
            format: FORMAT,
            flushed_seq: -1,
            next_file: 0,
            files: Vec::new(),
            legacy_ingested_at: None,
        }
    }
}

/// Where data file `number` of UTC date `date` lives, relative to the set's directory.
pub(super) fn data_file_path(date: &str, number: u64) -> String {
    format!("{DATE_DIR_PREFIX}{date}/{PART_PREFIX}{number:08}{PART_SUFFIX}")
}

/// The date and number of a data file path, if it has the shape of [`data_file_path`]. Only
/// such paths are accepted from a manifest, so a damaged one cannot point outside the set.
fn parse_data_file_path(path: &str) -> Option<(&str, u64)> {
    let (dir, file) = path.split_once('/')?;
    let date = dir.strip_prefix(DATE_DIR_PREFIX)?;
    let number = file.strip_prefix(PART_PREFIX)?.strip_suffix(PART_SUFFIX)?;
    // Dates are YYYY-MM-DD; chrono writes years past 9999 with a sign.
    let date_ok = !date.is_empty()
        && date
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'-' || b == b'+');
    let number_ok = !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit());
    if !(date_ok && number_ok) {
        return None;
    }
    Some((date, number.parse().ok()?))
}

impl Manifest {
    /// The manifest of the set in `set_dir`; empty when none was written yet.
    pub(super) fn load(set_dir: &Path) -> Result<Manifest> {
        let path = set_dir.join(MANIFEST_FILE);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Manifest::default()),
            Err(e) => return Err(Error::io(format!("reading {}", path.display()))(e)),
        };
        let corrupt = |why: String| Error::Corrupt(format!("{}: {why}", path.display()));
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if manifest.format != FORMAT && manifest.format != FORMAT_BEFORE_INGEST_TIMES {
            return Err(corrupt(format!(
                "unsupported manifest format {} (this version reads {FORMAT})",
                manifest.format
            )));
        }
        if manifest.flushed_seq < -1 {
            return Err(corrupt(format!(
                "negative flushed_seq {}",
                manifest.flushed_seq
            )));
        }
        if manifest.legacy_ingested_at.is_none()
            && manifest.files.iter().any(|f| f.without_ingest_times)
        {
            return Err(corrupt(
                "files without ingest times but no legacy_ingested_at".into(),
            ));
        }
        let mut seen = HashSet::new();
        for entry in &manifest.files {
            let number = parse_data_file_path(&entry.path)
                .map(|(_, number)| number)
                .ok_or_else(|| corrupt(format!("invalid data file path {:?}", entry.path)))?;
            if number >= manifest.next_file || !seen.insert(number) {
                return Err(corrupt(format!(
                    "data file {:?} is listed twice or beyond next_file",
                    entry.path
                )));
            }
        }
        Ok(manifest)
    }

    pub(super) fn store(&self, set_dir: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).expect("manifests serialize");
        write_atomic(&set_dir.join(MANIFEST_FILE), &json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_file_paths_round_trip_and_reject_escapes() {
        let path = data_file_path("2026-01-02", 7);
        assert_eq!(path, "date=2026-01-02/part-00000007.parquet");
        assert_eq!(parse_data_file_path(&path), Some(("2026-01-02", 7)));
        for bad in [
            "date=../part-1.parquet",
            "date=2026-01-01/../part-1.parquet",
            "/etc/passwd",
            "date=2026-01-01/part-.parquet",
            "date=2026-01-01/part-1.parquet/x",
        ] {
            assert_eq!(parse_data_file_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn load_rejects_damage_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Manifest::load(dir.path()).unwrap(), Manifest::default());
        let manifest = Manifest {
            flushed_seq: 9,
            next_file: 2,
            files: vec![FileEntry {
                path: data_file_path("2026-01-01", 1),
                rows: 10,
                without_ingest_times: false,
            }],
            ..Manifest::default()
        };
        manifest.store(dir.path()).unwrap();
        assert_eq!(Manifest::load(dir.path()).unwrap(), manifest);

        fs::write(dir.path().join(MANIFEST_FILE), b"{\"format\": 1, \"flu").unwrap();
        let err = Manifest::load(dir.path()).unwrap_err();
        assert!(matches!(err, Error::Corrupt(_)), "{err}");
        assert!(err.to_string().contains(MANIFEST_FILE), "{err}");

        let escaping = r#"{"format": 1, "flushed_seq": 1, "next_file": 5,
            "files": [{"path": "../../x", "rows": 1}]}"#;
        fs::write(dir.path().join(MANIFEST_FILE), escaping).unwrap();
        assert!(matches!(Manifest::load(dir.path()), Err(Error::Corrupt(_))));
    }
}
