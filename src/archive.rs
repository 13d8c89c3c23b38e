//! The raw-message archive: every message is kept, byte for byte, as a
//! content-addressed file under `archive.dir` before anything else happens
//! to it (and before the mailbox is touched).
//!
//! Files are named after the SHA-256 of their content, never after anything
//! a sender chose, and are written to a temporary name and renamed, so a
//! crash of the process leaves either the whole file or none. Durability
//! against power loss is batched: [`Archive::sync`] flushes the whole
//! archive's filesystem once (`syncfs`), and sources call it (through
//! `Intake::make_durable`) before they change anything on the server — one
//! flush per batch instead of two fsyncs per message.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

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
    pub fn store(&self, raw: &[u8]) -> std::io::Result<Stored> {
        let id = Self::id_of(raw);
        // One level of 256 folders: two levels would cost a mkdir for
        // nearly every message of a fresh archive.
        let rel_path = format!("{}/{id}.eml", &id[..2]);
        let path = self.dir.join(&rel_path);
        if path.exists() {
            return Ok(Stored { id, rel_path });
        }
        let folder = path.parent().unwrap_or(&self.dir).to_path_buf();
        if !folder.is_dir() {
            fs::create_dir_all(&folder)?;
        }
        let tmp = folder.join(format!(".{id}.{}.tmp", std::process::id()));
        {
            let mut f = File::create(&tmp)?;
            f.write_all(raw)?;
        }
        fs::rename(&tmp, &path)?;
        Ok(Stored { id, rel_path })
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
}
