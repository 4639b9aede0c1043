//! Crash-safe file system steps: a file or a rename is only durable once the file and the
//! directory holding its name are fsynced.

use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Suffix of files being written; any left at open are debris of a crash.
pub(crate) const TMP_SUFFIX: &str = ".tmp";

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
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
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

/// Largest write handed to the kernel at once by [`ShortWrites`].
const WRITE_CHUNK: usize = 256 * 1024;

/// A writer that hands the kernel at most [`WRITE_CHUNK`] bytes per `write`. A kernel built
/// without preemption (`PREEMPT_NONE`, common on servers and VMs) gives up a core only when a
/// thread leaves the kernel, and copying one 4 MB Arrow body or Parquet column chunk into the
/// page cache keeps it there for milliseconds: an online read woken meanwhile waited up to
/// 12 ms for the core behind the log writer or the flush (`perf sched`). A quarter megabyte
/// takes about a tenth of a millisecond.
pub(crate) struct ShortWrites<W>(pub(crate) W);

impl<W: std::io::Write> std::io::Write for ShortWrites<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(&buf[..buf.len().min(WRITE_CHUNK)])
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl<W> ShortWrites<W> {
    pub(crate) fn into_inner(self) -> W {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// Records the size of every write it is handed.
    #[derive(Default)]
    struct Recorder {
        bytes: Vec<u8>,
        writes: Vec<usize>,
    }

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.bytes.extend_from_slice(buf);
            self.writes.push(buf.len());
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn short_writes_hand_over_every_byte_a_quarter_megabyte_at_a_time() {
        let body: Vec<u8> = (0..WRITE_CHUNK * 4 + 17).map(|i| i as u8).collect();
        let mut writer = ShortWrites(Recorder::default());
        writer.write_all(&body).unwrap();
        let recorder = writer.into_inner();
        assert_eq!(recorder.bytes, body);
        assert_eq!(
            recorder.writes,
            [WRITE_CHUNK, WRITE_CHUNK, WRITE_CHUNK, WRITE_CHUNK, 17]
        );
    }
}
