//! A PDF whose cross-reference table or trailer is damaged (a truncated
//! download, a mail gateway that rewrote line ends, a producer that wrote
//! wrong offsets) still holds its objects: viewers rebuild the table by
//! scanning for `N G obj` and open it. `lopdf` has no such recovery, and no
//! maintained Rust crate offers one, so it is done here: the objects'
//! offsets are found by a scan, and a fresh table with a trailer naming the
//! catalog is appended (an incremental update of the file's own bytes, so
//! nothing of the original is changed). Objects packed inside object
//! streams are not found this way; an encrypted file is not repaired (its
//! trailer's key material cannot be rebuilt).

/// Objects past this count mean a file we will not rebuild.
const MAX_OBJECTS: usize = 500_000;
/// The highest object number accepted in a rebuilt table.
const MAX_OBJECT_ID: u64 = 5_000_000;
/// How far into an object the catalog's `/Type /Catalog` is looked for.
const CATALOG_WINDOW: usize = 4096;

/// The file with a rebuilt cross-reference table and trailer appended;
/// None when no object or no catalog is found, or the file is encrypted.
pub fn rebuilt(bytes: &[u8]) -> Option<Vec<u8>> {
    if find(bytes, b"/Encrypt").is_some() {
        return None;
    }
    let objects = scan_objects(bytes)?;
    let root = objects
        .iter()
        .filter(|o| is_catalog(&bytes[o.offset..]))
        .max_by_key(|o| o.offset)?;
    let size = objects.iter().map(|o| o.id).max()? + 1;
    // The last definition of an object wins, as in an incremental update.
    let mut offsets = vec![None; usize::try_from(size).ok()?];
    for o in &objects {
        offsets[usize::try_from(o.id).ok()?] = Some((o.offset, o.generation));
    }
    let start = bytes.len() + 1;
    let mut out = Vec::with_capacity(bytes.len() + 64 + offsets.len() * 20);
    out.extend_from_slice(bytes);
    out.extend_from_slice(format!("\nxref\n0 {size}\n").as_bytes());
    for entry in &offsets {
        let line = match entry {
            Some((offset, generation)) => format!("{offset:010} {generation:05} n\r\n"),
            None => "0000000000 65535 f\r\n".to_string(),
        };
        out.extend_from_slice(line.as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {size} /Root {} {} R >>\nstartxref\n{start}\n%%EOF\n",
            root.id, root.generation
        )
        .as_bytes(),
    );
    Some(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Object {
    id: u64,
    generation: u64,
    offset: usize,
}

/// Every `N G obj` that starts a line or follows a delimiter.
fn scan_objects(bytes: &[u8]) -> Option<Vec<Object>> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = find(&bytes[from..], b"obj").map(|i| from + i) {
        from = at + 3;
        if bytes.get(at + 3).is_some_and(u8::is_ascii_alphanumeric) {
            continue;
        }
        if let Some(object) = numbers_before(bytes, at) {
            found.push(object);
            if found.len() > MAX_OBJECTS {
                return None;
            }
        }
    }
    (!found.is_empty()).then_some(found)
}

/// `N G ` right before `obj` at `at`, N at a line start or after a
/// delimiter.
fn numbers_before(bytes: &[u8], at: usize) -> Option<Object> {
    let skip_space = |mut i: usize| {
        while i > 0 && bytes[i - 1].is_ascii_whitespace() {
            i -= 1;
        }
        i
    };
    let digits = |end: usize| {
        let mut i = end;
        while i > 0 && bytes[i - 1].is_ascii_digit() && end - i < 10 {
            i -= 1;
        }
        (i < end).then_some(i)
    };
    let gen_end = skip_space(at);
    if gen_end == at {
        return None;
    }
    let gen_start = digits(gen_end)?;
    let id_end = skip_space(gen_start);
    if id_end == gen_start {
        return None;
    }
    let id_start = digits(id_end)?;
    if id_start > 0
        && !matches!(
            bytes[id_start - 1],
            b'\n' | b'\r' | b' ' | b'>' | b']' | b'\t'
        )
    {
        return None;
    }
    let number = |s: usize, e: usize| std::str::from_utf8(&bytes[s..e]).ok()?.parse::<u64>().ok();
    let id = number(id_start, id_end)?;
    let generation = number(gen_start, gen_end)?;
    (id > 0 && id <= MAX_OBJECT_ID && generation <= 65_535).then_some(Object {
        id,
        generation,
        offset: id_start,
    })
}

/// Whether the object starting here is the document catalog.
fn is_catalog(object: &[u8]) -> bool {
    let window = &object[..object.len().min(CATALOG_WINDOW)];
    let body = find(window, b"endobj").map_or(window, |end| &window[..end]);
    let mut from = 0;
    while let Some(at) = find(&body[from..], b"/Type").map(|i| from + i) {
        from = at + 5;
        let rest = &body[from..];
        let value = rest
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .map(|i| &rest[i..]);
        if value.is_some_and(|v| {
            v.starts_with(b"/Catalog") && !v.get(8).is_some_and(u8::is_ascii_alphanumeric)
        }) {
            return true;
        }
    }
    false
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_found_by_their_numbers_and_the_catalog_by_its_type() {
        let pdf = b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n\
                    2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\n% 3 0 objection\nxref\nbroken";
        let out = rebuilt(pdf).expect("rebuilt");
        let text = String::from_utf8_lossy(&out[pdf.len()..]);
        assert!(text.contains("xref\n0 3\n0000000000 65535 f\r\n0000000009 00000 n\r\n"));
        assert!(text.contains("/Root 1 0 R"), "{text}");
        assert!(text.ends_with(&format!("startxref\n{}\n%%EOF\n", pdf.len() + 1)));
    }

    #[test]
    fn no_catalog_no_objects_or_encryption_give_nothing() {
        assert!(rebuilt(b"%PDF-1.4\n1 0 obj<</Type/Pages>>endobj").is_none());
        assert!(rebuilt(b"%PDF-1.4 nothing here").is_none());
        assert!(rebuilt(b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj /Encrypt 5 0 R").is_none());
        assert!(!is_catalog(b"1 0 obj<</Type/CatalogX>>endobj"));
    }
}
