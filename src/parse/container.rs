//! `.zip` attachments opened in memory: member names decoded (GB18030 for
//! archives made on a zh-CN Windows), directories and symlinks skipped, and
//! every size limit enforced on the bytes actually decompressed, not on what
//! the archive declares.
//!
//! This module owns reading one archive level. It never writes to disk, does
//! not decide what a member is (the caller sniffs formats) and does not
//! recurse into nested archives: a `.zip` inside a `.zip` comes back as a
//! member, and the caller recurses with its own depth limit.

use std::io::{Cursor, Read};

use encoding_rs::GB18030;
use zip::ZipArchive;
use zip::result::ZipError;

use crate::parse::grid::ReadError;

/// One file inside an archive.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// Decoded base name (directories and `..` removed), for display only.
    pub name: String,
    pub bytes: Vec<u8>,
}

/// Limits for one archive.
#[derive(Debug, Clone, Copy)]
pub struct ZipLimits {
    /// Entries in the central directory (directories included).
    pub max_entries: usize,
    /// Decompressed bytes of one member.
    pub max_entry_bytes: u64,
    /// Decompressed bytes of all members together.
    pub max_total_bytes: u64,
    /// Decompressed-to-compressed ratio, checked once more than 1 MiB has
    /// been decompressed (small files legitimately compress very well).
    pub max_ratio: u64,
}

impl Default for ZipLimits {
    fn default() -> Self {
        Self {
            max_entries: 1000,
            max_entry_bytes: 50 * MIB,
            max_total_bytes: 200 * MIB,
            max_ratio: 200,
        }
    }
}

const MIB: u64 = 1024 * 1024;

/// Reads every file member of a zip archive into memory.
///
/// Password protection: if any file member is encrypted the whole archive is
/// reported as [`ReadError::Encrypted`]. Reading the other members instead
/// would quietly drop the protected one, which may be the very form; office
/// staff can ask for an unprotected copy, which they cannot do for a file
/// they were never told about.
pub fn read_zip(bytes: &[u8], limits: &ZipLimits) -> Result<Vec<Member>, ReadError> {
    let mut archive = ZipArchive::new(Cursor::new(bytes)).map_err(zip_error)?;
    if archive.len() > limits.max_entries {
        return Err(ReadError::TooLarge(format!(
            "压缩包条目数 {} 超过上限 {}",
            archive.len(),
            limits.max_entries
        )));
    }

    for i in 0..archive.len() {
        let entry = archive.by_index_raw(i).map_err(zip_error)?;
        if !entry.is_dir() && entry.encrypted() {
            return Err(ReadError::Encrypted);
        }
    }

    let mut members = Vec::new();
    let mut total_read: u64 = 0;
    let mut total_compressed: u64 = 0;
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(zip_error)?;
        if entry.is_dir() || entry.is_symlink() {
            continue;
        }
        let utf8_flag = entry.flags().as_u16() & 0x0800 != 0;
        let full_name = member_name(entry.name_raw(), utf8_flag);
        let name = base_name(&full_name).unwrap_or_else(|| format!("未命名{}", i + 1));
        // A lying header cannot claim more compressed data than the file has.
        let compressed = entry.compressed_size().min(bytes.len() as u64).max(1);
        total_compressed = total_compressed.saturating_add(compressed);

        let mut data = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        let mut limited = (&mut entry).take(limits.max_entry_bytes.saturating_add(1));
        loop {
            let n = match limited.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(ReadError::Damaged(format!(
                        "压缩包成员 {name} 无法解压：{e}"
                    )));
                }
            };
            data.extend_from_slice(&chunk[..n]);
            total_read += n as u64;
            let read = data.len() as u64;
            if read > limits.max_entry_bytes {
                return Err(ReadError::TooLarge(format!(
                    "压缩包成员 {name} 解压后超过单个文件上限 {}",
                    size_text(limits.max_entry_bytes)
                )));
            }
            if total_read > limits.max_total_bytes {
                return Err(ReadError::TooLarge(format!(
                    "压缩包解压后总大小超过上限 {}",
                    size_text(limits.max_total_bytes)
                )));
            }
            if (read > MIB && read / compressed > limits.max_ratio)
                || (total_read > MIB && total_read / total_compressed > limits.max_ratio)
            {
                return Err(ReadError::TooLarge(format!(
                    "压缩包成员 {name} 压缩比超过上限 {}:1（疑似压缩炸弹）",
                    limits.max_ratio
                )));
            }
        }
        members.push(Member { name, bytes: data });
    }
    Ok(members)
}

fn zip_error(e: ZipError) -> ReadError {
    match e {
        ZipError::UnsupportedArchive(what) => ReadError::Unsupported(format!("压缩包：{what}")),
        ZipError::InvalidPassword => ReadError::Encrypted,
        other => ReadError::Damaged(format!("压缩包：{other}")),
    }
}

/// A member name as text. With the UTF-8 flag (or the Info-ZIP Unicode path
/// field, which the zip crate folds into the flag) the name is UTF-8. Without
/// it the spec says CP437, but archives reaching us come from zh-CN Windows
/// ("send to compressed folder", WinRAR), which write the ANSI code page, GBK:
/// valid UTF-8 is still taken as UTF-8 (plain ASCII, and some tools forget the
/// flag), anything else is decoded as GB18030.
fn member_name(raw: &[u8], utf8_flag: bool) -> String {
    match std::str::from_utf8(raw) {
        Ok(s) => s.to_string(),
        Err(_) if utf8_flag => String::from_utf8_lossy(raw).into_owned(),
        Err(_) => GB18030.decode_without_bom_handling(raw).0.into_owned(),
    }
}

/// The last path component: `../../evil.txt`, `/abs/x`, `C:\x\y.txt` keep only
/// their base name. Nothing is written under it; it is shown to people.
fn base_name(name: &str) -> Option<String> {
    let cleaned: String = name.chars().filter(|c| !c.is_control()).collect();
    let last = cleaned
        .rsplit(['/', '\\'])
        .map(str::trim)
        .find(|s| !s.is_empty())?;
    let last = match last.as_bytes() {
        [d, b':', _, ..] if d.is_ascii_alphabetic() => &last[2..],
        _ => last,
    };
    (last != "." && last != "..").then(|| last.to_string())
}

fn size_text(bytes: u64) -> String {
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{bytes} 字节")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! fixture {
        ($name:literal) => {
            include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/mail/",
                $name
            ))
        };
    }

    fn read(bytes: &[u8]) -> Result<Vec<Member>, ReadError> {
        read_zip(bytes, &ZipLimits::default())
    }

    fn names(members: &[Member]) -> Vec<&str> {
        members.iter().map(|m| m.name.as_str()).collect()
    }

    #[test]
    fn gbk_names_without_utf8_flag_are_decoded_and_directories_skipped() {
        let members = read(fixture!("gbk_names.zip")).expect("readable");
        assert_eq!(names(&members), vec!["溪下乡登记表.xlsx", "说明.txt"]);
        assert!(members[0].bytes.starts_with(b"PK\x03\x04docx-stand-in"));
        assert_eq!(members[1].bytes, GB18030.encode("请查收").0.as_ref());
    }

    #[test]
    fn utf8_names_are_kept() {
        let members = read(fixture!("utf8_names.zip")).expect("readable");
        assert_eq!(
            names(&members),
            vec!["溪下乡分管政务信息领导及信息员登记表.xlsx", "readme.txt"]
        );
        assert_eq!(members[1].bytes, b"hello");
    }

    #[test]
    fn traversal_names_keep_only_the_base_name() {
        let members = read(fixture!("traversal.zip")).expect("readable");
        assert_eq!(
            names(&members),
            vec!["evil.txt", "path.txt", "win.txt", "dotdot.txt"]
        );
        assert_eq!(members[0].bytes, b"../../evil.txt");
    }

    #[test]
    fn encrypted_member_makes_the_archive_encrypted() {
        assert_eq!(read(fixture!("encrypted.zip")), Err(ReadError::Encrypted));
    }

    #[test]
    fn zip_bomb_is_stopped_by_the_ratio_check() {
        let start = std::time::Instant::now();
        let err = read(fixture!("bomb.zip")).expect_err("a bomb");
        assert_eq!(
            err,
            ReadError::TooLarge(
                "压缩包成员 zeros.xlsx 压缩比超过上限 200:1（疑似压缩炸弹）".into()
            )
        );
        assert!(start.elapsed() < std::time::Duration::from_secs(10));
        // Without the ratio check the per-member limit still holds.
        let limits = ZipLimits {
            max_ratio: u64::MAX,
            max_entry_bytes: 3 * MIB,
            ..ZipLimits::default()
        };
        assert_eq!(
            read_zip(fixture!("bomb.zip"), &limits),
            Err(ReadError::TooLarge(
                "压缩包成员 zeros.xlsx 解压后超过单个文件上限 3 MiB".into()
            ))
        );
        let limits = ZipLimits {
            max_ratio: u64::MAX,
            max_total_bytes: 2 * MIB,
            ..ZipLimits::default()
        };
        assert_eq!(
            read_zip(fixture!("bomb.zip"), &limits),
            Err(ReadError::TooLarge(
                "压缩包解压后总大小超过上限 2 MiB".into()
            ))
        );
    }

    #[test]
    fn too_many_entries_are_refused() {
        assert_eq!(
            read(fixture!("many_entries.zip")),
            Err(ReadError::TooLarge(
                "压缩包条目数 20000 超过上限 1000".into()
            ))
        );
        let limits = ZipLimits {
            max_entries: 20_000,
            ..ZipLimits::default()
        };
        assert_eq!(
            read_zip(fixture!("many_entries.zip"), &limits).map(|m| m.len()),
            Ok(20_000)
        );
    }

    #[test]
    fn garbage_and_truncated_archives_are_damaged() {
        assert!(matches!(
            read(b"not a zip at all"),
            Err(ReadError::Damaged(_))
        ));
        let good = fixture!("utf8_names.zip");
        assert!(matches!(
            read(&good[..good.len() / 2]),
            Err(ReadError::Damaged(_))
        ));
        // Flip bytes inside the first member's compressed data.
        let mut bad = good.to_vec();
        for b in &mut bad[80..100] {
            *b ^= 0x5a;
        }
        assert!(read(&bad).is_err());
    }

    #[test]
    fn zip_attachment_of_a_golden_case() {
        let raw = include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/golden/cases/c01_zip_gbk_names.eml"
        ));
        let m = crate::parse::message::parse(raw, &crate::parse::message::MessageLimits::default());
        let members = read(&m.parts[0].bytes).expect("readable");
        assert_eq!(names(&members), vec!["瓯北街道登记表.xlsx"]);
    }
}
