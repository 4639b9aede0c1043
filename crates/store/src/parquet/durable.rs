//! Crash-safe file system steps: a file or a rename is only durable once the file and the
//! directory holding its name are fsynced.

use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Suffix of files being written; any left at open are debris of a crash.
pub(super) const TMP_SUFFIX: &str = ".tmp";

pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(TMP_SUFFIX);
    PathBuf::from(name)
}

/// Makes the entries of `dir` (files created, renamed or removed in it) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io(format!("syncing directory {}", dir.display())))
}

/// Replaces `path` with `bytes` all at once: a crash leaves either the old or the new content.
pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    let written = File::create(&tmp)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .map_err(Error::io(format!("writing {}", tmp.display())));
    if let Err(e) = written {
        remove_quietly(&tmp);
        return Err(e);
    }
    rename_durably(&tmp, path)
}

/// Renames a fully synced file into place and makes the new name durable.
pub(crate) fn rename_durably(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).map_err(Error::io(format!(
        "renaming {} to {}",
        from.display(),
        to.display()
    )))?;
    sync_dir(parent(to))
}

pub(crate) fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

/// Creates `dir` if missing and makes its name durable in its parent.
pub(crate) fn create_dir_durably(dir: &Path) -> Result<()> {
    match fs::create_dir(dir) {
        Ok(()) => sync_dir(parent(dir)),
        Err(e) if e.kind() == ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(Error::io(format!("creating {}", dir.display()))(e)),
    }
}

/// Removes a file that is no longer referenced. Failure only leaves garbage that the next
/// open deletes, so it is logged, not returned.
pub(crate) fn remove_quietly(path: &Path) {
    if let Err(e) = fs::remove_file(path) {
        if e.kind() != ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "could not remove unreferenced file");
        }
    }
}

/// The entries of `dir`, sorted by name; none when it does not exist.
pub(crate) fn list_dir(dir: &Path) -> Result<Vec<fs::DirEntry>> {
    let context = || format!("listing {}", dir.display());
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(context())(e)),
    };
    let mut entries = entries
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(Error::io(context()))?;
    entries.sort_by_key(|e| e.file_name());
    Ok(entries)
}
