//! The raw-message archive: every message is kept, byte for byte, as a
//! content-addressed file under `archive.dir` before anything else happens
//! to it (and before the mailbox is touched).
//!
//! Files are named after the SHA-256 of their content, never after anything
//! a sender chose. A file is written straight under its name (one create
//! and one write per message, the cost that bounds how fast a backlog is
//! taken); a file that a crash cut short is recognised by its content and
//! written again, whole, through a rename. Durability
//! against power loss is batched: [`Archive::sync`] flushes the whole
//! archive's filesystem once (`syncfs`), and sources call it (through
//! `Intake::make_durable`) before they change anything on the server — one
//! flush per batch instead of two fsyncs per message.

use std::fs::{self, File};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

/// A temporary file older than this is a crash's leftover.
pub const TEMPORARY_AGE: std::time::Duration = std::time::Duration::from_secs(600);

#[derive(Debug, Clone)]
pub struct Archive {
    dir: PathBuf,
}

/// A stored message: its content hash and its path relative to the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub id: String,
    pub rel_path: String,
}

impl Archive {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The content id of raw bytes (hex SHA-256).
    pub fn id_of(raw: &[u8]) -> String {
        hex::encode(Sha256::digest(raw))
    }

    /// Stores `raw` (durable after the next [`Archive::sync`]); storing the
    /// same bytes again is a no-op.
    ///
    /// The common case is one exclusive create and one write, written
    /// straight under the final name: a reader only learns a name from a
    /// ledger row, recorded after this returns. What a crash can leave is a
    /// short file under its final name; the next store of the same bytes
    /// finds a file whose content differs and replaces it through a
    /// temporary name and a rename.
    pub fn store(&self, raw: &[u8]) -> std::io::Result<Stored> {
        let id = Self::id_of(raw);
        // One level of 256 folders: two levels would cost a mkdir for
        // nearly every message of a fresh archive.
        let rel_path = format!("{}/{id}.eml", &id[..2]);
        let path = self.dir.join(&rel_path);
        let created = match create_new(&path) {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                fs::create_dir_all(path.parent().unwrap_or(&self.dir))?;
                create_new(&path)
            }
            other => other,
        };
        match created {
            Ok(mut file) => {
                if let Err(e) = file.write_all(raw) {
                    // Ours alone (created new) and not recorded yet: a
                    // short file must not stay behind (a full disk).
                    drop(file);
                    let _ = fs::remove_file(&path);
                    return Err(e);
                }
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                if !same_content(&path, raw)? {
                    self.replace(&path, &id, raw)?;
                }
            }
            Err(e) => return Err(e),
        }
        Ok(Stored { id, rel_path })
    }

    /// Rewrites a damaged file whole: a temporary name, then a rename.
    fn replace(&self, path: &Path, id: &str, raw: &[u8]) -> std::io::Result<()> {
        tracing::warn!(
            message = id,
            "archive file incomplete (interrupted write); writing it again"
        );
        let folder = path.parent().unwrap_or(&self.dir);
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp = folder.join(format!(".{id}.{}.{n}.tmp", std::process::id()));
        let written = File::create(&tmp)
            .and_then(|mut f| f.write_all(raw))
            .and_then(|()| fs::rename(&tmp, path));
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written
    }

    /// Removes temporary files a crash left behind (older than
    /// [`TEMPORARY_AGE`]: a younger one may be another instance's write in
    /// progress); returns how many.
    pub fn clean_temporaries(&self) -> std::io::Result<usize> {
        let Ok(folders) = fs::read_dir(&self.dir) else {
            return Ok(0);
        };
        let mut removed = 0;
        for folder in folders.flatten() {
            if !folder.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            for entry in fs::read_dir(folder.path())?.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                let old = entry
                    .metadata()
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|m| m.elapsed().ok())
                    .is_some_and(|age| age >= TEMPORARY_AGE);
                if name.starts_with('.') && name.ends_with(".tmp") && old {
                    fs::remove_file(entry.path())?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// Flushes everything written to the archive's filesystem to disk.
    pub fn sync(&self) -> std::io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let dir = File::open(&self.dir)?;
        rustix::fs::syncfs(&dir).map_err(std::io::Error::from)
    }

    /// Reads a stored message back.
    pub fn read(&self, rel_path: &str) -> std::io::Result<Vec<u8>> {
        // Paths come from our own ledger; still refuse anything that could
        // leave the archive.
        if rel_path.contains("..") || rel_path.starts_with('/') {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "bad archive path",
            ));
        }
        fs::read(self.dir.join(rel_path))
    }
}

fn create_new(path: &Path) -> std::io::Result<File> {
    File::options().write(true).create_new(true).open(path)
}

/// Whether the file at `path` holds exactly `raw`.
fn same_content(path: &Path, raw: &[u8]) -> std::io::Result<bool> {
    let mut file = File::open(path)?;
    if file.metadata()?.len() != raw.len() as u64 {
        return Ok(false);
    }
    let mut held = Vec::with_capacity(raw.len());
    file.read_to_end(&mut held)?;
    Ok(held == raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_is_content_addressed_and_idempotent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let archive = Archive::new(dir.path());
        let a = archive.store(b"Subject: x\r\n\r\nbody").expect("store");
        let b = archive
            .store(b"Subject: x\r\n\r\nbody")
            .expect("store again");
        assert_eq!(a, b);
        assert_eq!(
            archive.read(&a.rel_path).expect("read"),
            b"Subject: x\r\n\r\nbody"
        );
        assert!(archive.read("../etc/passwd").is_err());
    }

    #[test]
    fn a_file_cut_short_by_a_crash_is_written_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let archive = Archive::new(dir.path());
        let raw = b"Subject: x\r\n\r\na longer body".as_slice();
        let first = archive.store(raw).expect("store");
        let path = dir.path().join(&first.rel_path);
        std::fs::write(&path, &raw[..7]).expect("cut short");
        let again = archive.store(raw).expect("store again");
        assert_eq!(first, again);
        assert_eq!(archive.read(&again.rel_path).expect("read"), raw);
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().expect("folder"))
            .expect("list")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "no temporary files left behind");
    }

    #[test]
    fn temporaries_a_crash_left_are_cleaned_but_fresh_ones_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let archive = Archive::new(dir.path());
        let kept = archive.store(b"Subject: y\r\n\r\nz").expect("store");
        let folder = dir.path().join(&kept.rel_path[..2]);
        let old = folder.join(".abc.1.0.tmp");
        let fresh = folder.join(".abc.1.1.tmp");
        std::fs::write(&old, b"").expect("old");
        std::fs::write(&fresh, b"").expect("fresh");
        let long_ago = std::time::SystemTime::now() - 2 * TEMPORARY_AGE;
        std::fs::File::options()
            .write(true)
            .open(&old)
            .and_then(|f| f.set_modified(long_ago))
            .expect("age");
        assert_eq!(archive.clean_temporaries().expect("clean"), 1);
        assert!(!old.exists() && fresh.exists());
        assert!(dir.path().join(&kept.rel_path).exists(), "messages stay");
    }
}
