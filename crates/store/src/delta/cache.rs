//! Local copies of data files, for DuckDB to read: bounded in bytes, least recently used
//! evicted first. Delta data files are never modified once written (each has a unique name),
//! so a copy never goes stale; a file a running query reads is pinned and never evicted under
//! it.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::{Error, Result};

/// The directory the cache owns (and empties at open) inside the configured one.
const OWN_DIR: &str = "featherstore-delta-files";

struct Entry {
    bytes: u64,
    /// Larger is more recent.
    last_used: u64,
    /// Queries reading the copy now.
    pins: usize,
}

pub(super) struct FileCache {
    dir: PathBuf,
    max_bytes: u64,
    state: Mutex<State>,
    clock: AtomicU64,
}

#[derive(Default)]
struct State {
    entries: HashMap<PathBuf, Entry>,
    bytes: u64,
}

/// Files pinned for one query: unpinned on drop.
pub(super) struct Pinned {
    cache: Arc<FileCache>,
    paths: Vec<PathBuf>,
}

impl Drop for Pinned {
    fn drop(&mut self) {
        let mut state = self.cache.state.lock();
        for path in &self.paths {
            if let Some(entry) = state.entries.get_mut(path) {
                entry.pins = entry.pins.saturating_sub(1);
            }
        }
        drop(state);
        self.cache.evict();
    }
}

impl FileCache {
    /// Opens the cache in a directory of its own inside `dir`, emptying what an earlier run
    /// left there: the copies are cheap to fetch again and their table may be gone.
    pub(super) fn open(dir: &Path, max_bytes: u64) -> Result<Arc<Self>> {
        let dir = &dir.join(OWN_DIR);
        if dir.exists() {
            fs::remove_dir_all(dir).map_err(Error::io(format!("emptying {}", dir.display())))?;
        }
        fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
        let dir = dir
            .canonicalize()
            .map_err(Error::io(format!("resolving {}", dir.display())))?;
        if dir.to_str().is_none() {
            // File names are handed to DuckDB inside SQL text.
            return Err(featherstore_core::Error::invalid(format!(
                "the delta cache directory {} is not valid UTF-8",
                dir.display()
            ))
            .into());
        }
        Ok(Arc::new(FileCache {
            dir,
            max_bytes,
            state: Mutex::new(State::default()),
            clock: AtomicU64::new(0),
        }))
    }

    /// Where the copy of `file` (a path relative to the set's table) lives.
    pub(super) fn local_path(&self, set: &str, file: &str) -> PathBuf {
        self.dir.join(set).join(file)
    }

    /// Pins the copies at `paths` that exist; returns the pin and the paths still missing.
    pub(super) fn pin_present(self: &Arc<Self>, paths: &[PathBuf]) -> (Pinned, Vec<PathBuf>) {
        let mut state = self.state.lock();
        let mut pinned = Vec::with_capacity(paths.len());
        let mut missing = Vec::new();
        for path in paths {
            let now = self.clock.fetch_add(1, Ordering::Relaxed);
            match state.entries.get_mut(path) {
                Some(entry) => {
                    entry.pins += 1;
                    entry.last_used = now;
                    pinned.push(path.clone());
                }
                None => missing.push(path.clone()),
            }
        }
        drop(state);
        (
            Pinned {
                cache: Arc::clone(self),
                paths: pinned,
            },
            missing,
        )
    }

    /// Stores a fetched file at `path` (atomically: a reader never sees half a file) and adds
    /// it, pinned, to `pinned`.
    pub(super) fn insert(&self, path: &Path, contents: &[u8], pinned: &mut Pinned) -> Result<()> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .map_err(Error::io(format!("creating {}", parent.display())))?;
        }
        // Two queries may fetch the same file at once: each writes its own staging file.
        let mut staging = path.as_os_str().to_owned();
        staging.push(format!(
            ".part{}",
            self.clock.fetch_add(1, Ordering::Relaxed)
        ));
        let staging = PathBuf::from(staging);
        fs::write(&staging, contents)
            .map_err(Error::io(format!("writing {}", staging.display())))?;
        fs::rename(&staging, path).map_err(Error::io(format!("writing {}", path.display())))?;
        let now = self.clock.fetch_add(1, Ordering::Relaxed);
        let mut state = self.state.lock();
        let bytes = contents.len() as u64;
        match state.entries.get_mut(path) {
            // Another query fetched it meanwhile: same immutable contents.
            Some(entry) => {
                entry.pins += 1;
                entry.last_used = now;
            }
            None => {
                state.entries.insert(
                    path.to_path_buf(),
                    Entry {
                        bytes,
                        last_used: now,
                        pins: 1,
                    },
                );
                state.bytes += bytes;
            }
        }
        pinned.paths.push(path.to_path_buf());
        Ok(())
    }

    /// Removes the least recently used unpinned copies while the cache is over its bound.
    /// Pinned copies stay: a query reading more than the bound holds more while it runs.
    fn evict(&self) {
        let mut state = self.state.lock();
        if state.bytes <= self.max_bytes {
            return;
        }
        let mut candidates: Vec<(u64, PathBuf, u64)> = state
            .entries
            .iter()
            .filter(|(_, e)| e.pins == 0)
            .map(|(path, e)| (e.last_used, path.clone(), e.bytes))
            .collect();
        candidates.sort_unstable_by_key(|(last_used, _, _)| *last_used);
        for (_, path, bytes) in candidates {
            if state.bytes <= self.max_bytes {
                break;
            }
            if let Err(e) = fs::remove_file(&path) {
                tracing::warn!(file = %path.display(), error = %e, "could not evict a cached data file");
                continue;
            }
            state.entries.remove(&path);
            state.bytes -= bytes;
        }
    }

    /// Bytes and files held now.
    pub(super) fn usage(&self) -> (u64, u64) {
        let state = self.state.lock();
        (state.bytes, state.entries.len() as u64)
    }
}
