//! Opening a compound file (OLE2/CFB: Word 97 `.doc`, BIFF8 `.xls`, an
//! encrypted OOXML package) the way Office does: `cfb` first, and when it
//! refuses a FAT that lists more sectors than the file holds, once more
//! over a copy whose FAT entries past the end of the file are marked free.
//!
//! Some writers fill the unused tail of the last FAT sector with
//! end-of-chain marks instead of free ones (Apache POI's `47950_*.doc`, a
//! valid Word 97 file Word opens). `cfb` strips trailing free, zero and
//! FAT/DIFAT marks past the end but not end-of-chain ones, and it has no
//! option for them; the repair is a few bytes of the header's own FAT
//! sectors, written here rather than by forking the crate. Only entries
//! for sectors that do not exist are touched, so no stream of the file
//! changes: a chain that really runs past the end still fails in `cfb`.

use std::borrow::Cow;
use std::io::Cursor;

/// A compound file over borrowed or (once repaired) owned bytes.
pub type Compound<'a> = cfb::CompoundFile<Cursor<Cow<'a, [u8]>>>;

const HEADER_LEN: usize = 512;
/// FAT sector numbers the header itself lists (MS-CFB 2.2).
const HEADER_DIFAT_ENTRIES: usize = 109;
const HEADER_DIFAT_OFFSET: usize = 76;
const FREE: u32 = 0xFFFF_FFFF;
const END_OF_CHAIN: u32 = 0xFFFF_FFFE;

/// Opens `bytes` as a compound file, repairing an over-long FAT (see the
/// module text). A panic inside `cfb` on hostile input is an error too.
pub fn open(bytes: &[u8]) -> std::io::Result<Compound<'_>> {
    let first = open_caught(Cow::Borrowed(bytes));
    if first.is_ok() {
        return first;
    }
    match repaired(bytes) {
        Some(fixed) => open_caught(Cow::Owned(fixed)).or(first),
        None => first,
    }
}

fn open_caught(bytes: Cow<'_, [u8]>) -> std::io::Result<Compound<'_>> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        cfb::CompoundFile::open(Cursor::new(bytes))
    }))
    .unwrap_or_else(|_| {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "compound file structure makes the reader fail",
        ))
    })
}

/// A copy of `bytes` whose end-of-chain FAT entries for sectors past the
/// end of the file are free; None when there is nothing to repair (or the
/// header is not one to trust with it).
fn repaired(bytes: &[u8]) -> Option<Vec<u8>> {
    let u16_at = |at: usize| Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
    let sector_len = match u16_at(30)? {
        9 => 512usize,
        12 => 4096,
        _ => return None,
    };
    let fat_sectors = usize::try_from(u32_at(44)?).ok()?;
    if fat_sectors == 0 || fat_sectors > HEADER_DIFAT_ENTRIES {
        return None;
    }
    // The header takes a whole sector in version 4 files.
    let first_sector = HEADER_LEN.max(if sector_len == 4096 { 4096 } else { 0 });
    let file_sectors = bytes.len().saturating_sub(first_sector) / sector_len;
    let per_sector = sector_len / 4;
    let mut fixed = bytes.to_vec();
    let mut changed = false;
    for i in 0..fat_sectors {
        let sector = usize::try_from(u32_at(HEADER_DIFAT_OFFSET + 4 * i)?).ok()?;
        if sector >= file_sectors {
            return None;
        }
        let start = first_sector + sector * sector_len;
        for k in 0..per_sector {
            let entry = i * per_sector + k;
            let at = start + 4 * k;
            if entry >= file_sectors && u32_at(at)? == END_OF_CHAIN {
                fixed[at..at + 4].copy_from_slice(&FREE.to_le_bytes());
                changed = true;
            }
        }
    }
    changed.then_some(fixed)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// A small valid compound file with one stream.
    fn sample() -> Vec<u8> {
        let mut cf =
            cfb::CompoundFile::create_with_version(cfb::Version::V3, Cursor::new(Vec::new()))
                .expect("create");
        cf.create_stream("WordDocument")
            .expect("stream")
            .write_all(&[7u8; 5000])
            .expect("write");
        cf.flush().expect("flush");
        cf.into_inner().into_inner()
    }

    /// The byte offset of FAT entry `entry` (the first FAT sector only).
    fn fat_entry_at(bytes: &[u8], entry: usize) -> usize {
        let sector = u32::from_le_bytes(bytes[76..80].try_into().expect("4 bytes")) as usize;
        HEADER_LEN + sector * 512 + 4 * entry
    }

    #[test]
    fn end_of_chain_marks_past_the_end_are_repaired() {
        let mut bytes = sample();
        let sectors = (bytes.len() - HEADER_LEN) / 512;
        for entry in sectors..128 {
            let at = fat_entry_at(&bytes, entry);
            bytes[at..at + 4].copy_from_slice(&END_OF_CHAIN.to_le_bytes());
        }
        assert!(cfb::CompoundFile::open(Cursor::new(&bytes[..])).is_err());
        let mut cf = open(&bytes).expect("opened after repair");
        let mut stream = cf.open_stream("WordDocument").expect("stream");
        let mut read = Vec::new();
        std::io::Read::read_to_end(&mut stream, &mut read).expect("read");
        assert_eq!(read, vec![7u8; 5000]);
    }

    #[test]
    fn a_chain_that_runs_past_the_end_still_fails() {
        let mut bytes = sample();
        let sectors = (bytes.len() - HEADER_LEN) / 512;
        let at = fat_entry_at(&bytes, sectors);
        bytes[at..at + 4].copy_from_slice(&3u32.to_le_bytes());
        assert!(open(&bytes).is_err());
    }

    #[test]
    fn a_good_file_is_not_copied_and_junk_is_refused() {
        let bytes = sample();
        assert!(repaired(&bytes).is_none());
        assert!(matches!(
            open(&bytes).map(|c| c.into_inner().into_inner()),
            Ok(Cow::Borrowed(_))
        ));
        assert!(open(b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1 short").is_err());
    }
}
