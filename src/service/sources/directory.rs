//! A folder where a fax server or a scanner drops `.eml` files or bare
//! attachments. Each file is taken atomically (renamed into `.taking/`),
//! kept in the archive and recorded, then moved aside into `.done/`. A
//! crash between those steps leaves the file in `.taking/`, where the next
//! poll finds it again; recording is idempotent, so nothing is lost or
//! doubled.
//!
//! A taken file gets a random prefix in `.taking/` (`<16 hex>.<name>`): a
//! new file with the name of one left there by a crash must not replace it.
//! Two instances may share a folder: a file the other one took or finished
//! meanwhile (`NotFound`) is simply not ours.

use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{SourceCtx, SourceError};
use crate::store::MailboxKey;

const TAKING: &str = ".taking";
const DONE: &str = ".done";
/// The longest wait between two polls after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Files younger than this may still be being written.
const SETTLE_SECONDS: u64 = 2;

/// Runs until shutdown, looking at the folder every `interval`.
pub async fn run(name: &str, path: &Path, interval: Duration, ctx: SourceCtx) {
    let mut shutdown = ctx.shutdown.clone();
    let mut announced = false;
    let mut failures: u32 = 0;
    loop {
        let delay = match poll(name, path, &ctx).await {
            Ok(_) => {
                ctx.ok(name, "directory").await;
                if !announced {
                    let _ = ctx.ready.send(name.to_string());
                    announced = true;
                }
                failures = 0;
                interval
            }
            Err(e) => {
                ctx.failed(name, "directory", &e).await;
                // A full disk or a lost mount does not heal in a second:
                // back off (doubling, at most five minutes) instead of
                // reading every file again and again.
                failures = failures.saturating_add(1);
                interval
                    .saturating_mul(1 << failures.min(16))
                    .min(MAX_BACKOFF.max(interval))
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

/// Takes every settled file once; returns how many were recorded.
pub async fn poll(name: &str, path: &Path, ctx: &SourceCtx) -> Result<usize, SourceError> {
    let io = |what: &str, p: &Path, e: std::io::Error| {
        SourceError::Io(format!("{what} {}：{e}", p.display()))
    };
    let taking = path.join(TAKING);
    let done = path.join(DONE);
    for dir in [&taking, &done] {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| io("无法创建文件夹", dir, e))?;
    }
    // Files left in .taking/ by a crash come first.
    let mut files: Vec<PathBuf> = list_files(&taking, 0)
        .await
        .map_err(|e| io("无法读取文件夹", &taking, e))?;
    for file in list_files(path, SETTLE_SECONDS)
        .await
        .map_err(|e| io("无法读取文件夹", path, e))?
    {
        let Some(file_name) = file.file_name() else {
            continue;
        };
        let mut unique = format!("{:016x}.", rand::random::<u64>()).into_bytes();
        unique.extend_from_slice(file_name.as_encoded_bytes());
        let target = taking.join(
            // A random ASCII prefix before a name that came from an OsStr.
            std::ffi::OsString::from_vec(unique),
        );
        match tokio::fs::rename(&file, &target).await {
            Ok(()) => files.push(target),
            // Taken by another instance meanwhile: not ours.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("无法移动文件", &file, e)),
        }
    }
    let mut taken = 0;
    let mut recorded = Vec::new();
    for file in files {
        let raw = match tokio::fs::read(&file).await {
            Ok(raw) => raw,
            // Finished by another instance meanwhile.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io("无法读取文件", &file, e)),
        };
        let original = file
            .file_name()
            .map(|n| original_name(&n.to_string_lossy()).to_string());
        let id = crate::service::archive::Archive::id_of(&raw);
        let key = MailboxKey {
            source: name,
            mailbox: &id,
            uidvalidity: 0,
            uid: 0,
        };
        let accepted = ctx
            .intake
            .accept(&key, &raw, original.as_deref(), ctx.clock.now())
            .await?;
        // Moved aside under its content id: the name a sender chose never
        // decides a path, and two files of the same name cannot collide.
        let ext = original
            .as_deref()
            .and_then(crate::parse::sniff::extension)
            .unwrap_or_else(|| "bin".into());
        let aside = done.join(format!("{}.{ext}", accepted.id));
        recorded.push((file, aside));
        taken += 1;
    }
    // What was recorded reaches the disk before any file leaves the folder.
    if !recorded.is_empty() {
        ctx.intake.make_durable().await?;
    }
    for (file, aside) in recorded {
        match tokio::fs::rename(&file, &aside).await {
            Ok(()) => {}
            // Moved aside by another instance that took it too: recording
            // is idempotent, so this is the same message.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("无法移动文件", &file, e)),
        }
    }
    Ok(taken)
}

/// Regular, non-hidden files directly in `dir` at least `settle` seconds old.
async fn list_files(dir: &Path, settle: u64) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut entries = tokio::fs::read_dir(dir).await?;
    while let Some(entry) = entries.next_entry().await? {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let meta = match entry.metadata().await {
            Ok(meta) => meta,
            // Taken by another instance between listing and looking.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if !meta.is_file() {
            continue;
        }
        let age = meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .map_or(0, |d| d.as_secs());
        if age >= settle {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// The name a file had in the folder, from its name in `.taking/`.
fn original_name(taking_name: &str) -> &str {
    match taking_name.split_once('.') {
        Some((prefix, rest))
            if prefix.len() == 16 && prefix.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            rest
        }
        _ => taking_name,
    }
}

#[cfg(test)]
mod tests {
    use super::original_name;

    #[test]
    fn taking_prefix_is_removed() {
        assert_eq!(original_name("00ff00ff00ff00ff.传真.tif"), "传真.tif");
        assert_eq!(original_name("00ff00ff00ff00ff.a"), "a");
        assert_eq!(original_name("report.pdf"), "report.pdf");
    }
}
