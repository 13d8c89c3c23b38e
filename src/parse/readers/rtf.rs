//! Reader for Rich Text Format (`{\rtf1 …}`), which Chinese offices often
//! send as a "Word document": WPS, Word and OA systems save RTF under a
//! `.doc` name. It owns everything between the attachment bytes and
//! [`Extracted`]: tokenizing, destinations, text decoding (code pages, font
//! charsets, `\uN` escapes), table reconstruction with row and column spans,
//! and the `\info` metadata. It does not interpret the form
//! (`crate::parse::form`), and ignores character formatting, pictures, objects,
//! headers, footers, footnotes, shapes and text boxes.
//!
//! Written by hand because no maintained Rust crate turns RTF tables into
//! cells with spans: the crates that exist produce plain text or styled runs
//! and drop the `\trowd`/`\cellx` row definitions that carry the layout.
//!
//! How it reads:
//! - A tokenizer yields groups, control words (`\word-123 `), control
//!   symbols (`\'hh`, `\~`, `\*` …) and text bytes; `\binN` data is skipped.
//! - Each group has a state (destination, font, `\uc`, paragraph table
//!   properties) restored at its end. Unwanted destinations (`{\*\…}`,
//!   font/colour/style tables, pictures, headers, field instructions …) are
//!   skipped; `\info` gives `author`, `created`, `modified`, and
//!   `{\*\generator …}` gives `application`.
//! - Text bytes and `\'hh` runs are decoded together (double-byte
//!   characters are two `\'hh`) with the current font's charset, falling
//!   back to `\ansicpg`; a run that is not sensible as a single-byte code
//!   page but decodes cleanly with a CJK font or code page of the document
//!   is decoded that way (GBK bytes under a `\fcharset0` font), then as
//!   UTF-8 if valid (raw UTF-8 written by web generators).
//! - Tables: `\trowd … \cellxN` defines a row (cell right edges in twips,
//!   merge flags before each `\cellx`); `\intbl`/`\itapN` paragraphs belong
//!   to a table; `\cell`/`\row` (`\nestcell`/`\nestrow` with
//!   `{\*\nesttableprops …}` for nested tables) end cells and rows. The
//!   grids are built by `super::word_table`: the column grid is the union
//!   of every row's boundaries (snapped within 15 twips); `\clmrg` widens
//!   the cell before it, `\clvmrg` lengthens the cell above. Nested tables
//!   are flattened into their host cell and also emitted as `table N.M`.
//!
//! A file whose groups are left open at the end (a truncated file) is
//! [`ReadError::Damaged`], except that a missing final `}` after a complete
//! group or paragraph is tolerated (some generators drop it). Everything is
//! bounded: group depth, cells (`max_cells`), cells per row definition,
//! `\bin` lengths; no input panics.

use std::collections::HashMap;
use std::rc::Rc;

use encoding_rs::Encoding;

use super::word_table::{CellDef, RowDef, TableBuilder};
#[cfg(test)]
use crate::parse::grid::Grid;
use crate::parse::grid::{Extracted, Meta, ReadError, ReadLimits, clean_text};

/// Groups nested deeper than this are hostile (Word stays below 20).
const MAX_GROUP_DEPTH: usize = 200;
/// Table nesting depths above this are clamped.
const MAX_TABLE_DEPTH: usize = 16;
/// Cells kept per row definition (Word allows 63 columns).
const MAX_DEF_CELLS: usize = 1024;

/// Reads an RTF document into grids: one per table (`table N`, nested ones
/// `table N.M`), plus a `text` grid of the paragraphs outside tables.
pub fn read(bytes: &[u8], limits: &ReadLimits) -> Result<Extracted, ReadError> {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let body = bytes.get(start..).unwrap_or_default();
    if !body.starts_with(b"{\\rtf") {
        return Err(ReadError::Damaged(
            "RTF 文件无效：不以 {\\rtf 开头".to_string(),
        ));
    }
    let mut parser = Parser::new(body, limits);
    parser.run()?;
    parser.finish()
}

// ---------------------------------------------------------------------------
// Tokenizer

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    Open,
    Close,
    /// A control word and its parameter.
    Word(&'a [u8], Option<i32>),
    /// A control symbol other than `\'hh`.
    Symbol(u8),
    /// `\'hh`.
    Hex(u8),
    /// A text byte (CR and LF are dropped: they are not text in RTF).
    Text(u8),
}

struct Lexer<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn next_token(&mut self) -> Option<Token<'a>> {
        loop {
            let b = self.peek()?;
            self.pos += 1;
            match b {
                b'{' => return Some(Token::Open),
                b'}' => return Some(Token::Close),
                b'\r' | b'\n' => continue,
                b'\\' => {
                    if let Some(t) = self.control() {
                        return Some(t);
                    }
                }
                _ => return Some(Token::Text(b)),
            }
        }
    }

    /// After a backslash. `None` for a lone backslash at the end or a
    /// malformed `\'`.
    fn control(&mut self) -> Option<Token<'a>> {
        let b = self.peek()?;
        if b.is_ascii_alphabetic() {
            let start = self.pos;
            while self.peek().is_some_and(|c| c.is_ascii_alphabetic()) {
                self.pos += 1;
            }
            let name = self.bytes.get(start..self.pos).unwrap_or_default();
            let param = self.param();
            if self.peek() == Some(b' ') {
                self.pos += 1;
            }
            if name == b"bin" {
                // Binary data follows: skip it whole.
                let n = usize::try_from(param.unwrap_or(0).max(0)).unwrap_or(0);
                self.pos = self.pos.saturating_add(n).min(self.bytes.len());
                return Some(Token::Word(name, Some(0)));
            }
            return Some(Token::Word(name, param));
        }
        self.pos += 1;
        match b {
            b'\'' => {
                let hi = self.peek().and_then(hex_val);
                let lo = self.bytes.get(self.pos + 1).copied().and_then(hex_val);
                match (hi, lo) {
                    (Some(h), Some(l)) => {
                        self.pos += 2;
                        Some(Token::Hex(h << 4 | l))
                    }
                    _ => None,
                }
            }
            // `\` before a line break is a paragraph mark.
            b'\r' | b'\n' => Some(Token::Word(b"par", None)),
            _ => Some(Token::Symbol(b)),
        }
    }

    /// An optional signed decimal parameter, saturated to `i32`.
    fn param(&mut self) -> Option<i32> {
        let neg = self.peek() == Some(b'-')
            && self
                .bytes
                .get(self.pos + 1)
                .is_some_and(|c| c.is_ascii_digit());
        if neg {
            self.pos += 1;
        }
        let mut value: i64 = 0;
        let mut any = false;
        while let Some(d) = self.peek().filter(u8::is_ascii_digit) {
            self.pos += 1;
            any = true;
            value = (value * 10 + i64::from(d - b'0')).min(i64::from(i32::MAX));
        }
        if !any {
            return None;
        }
        let value = if neg { -value } else { value };
        Some(i32::try_from(value).unwrap_or(i32::MAX))
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Encodings

/// The encoding of a Windows code page number (`\ansicpgN`, `\cpgN`).
fn codepage_encoding(cp: i32) -> Option<&'static Encoding> {
    use encoding_rs::*;
    Some(match cp {
        936 | 54936 | 20936 => GB18030,
        950 => BIG5,
        932 => SHIFT_JIS,
        949 => EUC_KR,
        874 => WINDOWS_874,
        1250 => WINDOWS_1250,
        1251 => WINDOWS_1251,
        1252 | 437 | 850 => WINDOWS_1252,
        1253 => WINDOWS_1253,
        1254 => WINDOWS_1254,
        1255 => WINDOWS_1255,
        1256 => WINDOWS_1256,
        1257 => WINDOWS_1257,
        1258 => WINDOWS_1258,
        10000 => MACINTOSH,
        65001 => UTF_8,
        _ => return None,
    })
}

/// The encoding of a font charset (`\fcharsetN`); `None` for "default" and
/// unknown charsets, which fall back to the document code page.
fn charset_encoding(cs: i32) -> Option<&'static Encoding> {
    use encoding_rs::*;
    Some(match cs {
        0 | 2 => WINDOWS_1252,
        77 => MACINTOSH,
        128 => SHIFT_JIS,
        129 => EUC_KR,
        134 => GB18030,
        136 => BIG5,
        161 => WINDOWS_1253,
        162 => WINDOWS_1254,
        163 => WINDOWS_1258,
        177 => WINDOWS_1255,
        178 => WINDOWS_1256,
        186 => WINDOWS_1257,
        204 => WINDOWS_1251,
        222 => WINDOWS_874,
        238 => WINDOWS_1250,
        _ => return None,
    })
}

fn is_cjk(enc: &'static Encoding) -> bool {
    use encoding_rs::*;
    [GB18030, GBK, BIG5, SHIFT_JIS, EUC_KR].contains(&enc)
}

// ---------------------------------------------------------------------------
// Parser state

/// Where the text of a group goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dest {
    /// Document text.
    Body,
    /// Ignored, with everything inside.
    Skip,
    FontTable,
    /// `\info`: text ignored, its sub-destinations read.
    Info,
    Author,
    Created,
    Modified,
    Generator,
    /// `{\*\nesttableprops …}`: row definitions, no text.
    TableProps,
}

/// Group-scoped state, restored when a group ends.
#[derive(Debug, Clone, Copy)]
struct State {
    dest: Dest,
    /// `\*` seen: the next control word must be understood or the group is
    /// skipped.
    star: bool,
    font: Option<i32>,
    /// Associated font (`\afN`, used for `\dbch` text).
    assoc_font: Option<i32>,
    /// Fallback characters after `\uN` (`\ucN`).
    uc: usize,
    intbl: bool,
    itap: usize,
}

impl State {
    fn depth(&self) -> usize {
        self.itap.max(usize::from(self.intbl)).min(MAX_TABLE_DEPTH)
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Font {
    charset: Option<i32>,
    codepage: Option<i32>,
}

/// `\creatim`/`\revtim` fields.
#[derive(Debug, Clone, Copy, Default)]
struct Stamp {
    yr: i32,
    mo: i32,
    dy: i32,
    hr: i32,
    min: i32,
    sec: i32,
}

impl Stamp {
    fn rfc3339(&self) -> Option<String> {
        let date = chrono::NaiveDate::from_ymd_opt(
            self.yr,
            u32::try_from(self.mo).ok()?,
            u32::try_from(self.dy).ok()?,
        )?;
        let t = date.and_hms_opt(
            u32::try_from(self.hr).ok()?,
            u32::try_from(self.min).ok()?,
            u32::try_from(self.sec).ok()?,
        )?;
        (self.yr >= 1900).then(|| t.format("%Y-%m-%dT%H:%M:%S").to_string())
    }
}

struct Parser<'a, 'l> {
    lex: Lexer<'a>,
    st: State,
    stack: Vec<State>,
    doc_encoding: &'static Encoding,
    default_font: Option<i32>,
    fonts: HashMap<i32, Font>,
    /// The font being defined in the font table.
    font_def: Option<i32>,
    /// The lowest-numbered font with a CJK charset or code page.
    cjk_font: Option<(i32, &'static Encoding)>,
    /// Text bytes and `\'hh` waiting to be decoded together.
    pending: Vec<u8>,
    /// Fallback characters still to skip after `\uN`.
    uc_skip: usize,
    high_surrogate: Option<u16>,
    /// Text of the current paragraph.
    para: String,
    /// Text of the current `\author`/`\generator` group.
    info_text: String,
    stamp: Stamp,
    meta: Meta,
    /// Row definitions by table depth (index 0 = depth 1).
    defs: Vec<Rc<RowDef>>,
    /// Depth whose row definition `\cellx` & co. currently change.
    def_depth: usize,
    pending_cell: CellDef,
    doc: TableBuilder<'l>,
    /// The root group was opened / closed.
    started: bool,
    closed: bool,
    /// The last token was a `}` or `\par` (for a tolerated missing final
    /// brace).
    clean_end: bool,
}

impl<'a, 'l> Parser<'a, 'l> {
    fn new(bytes: &'a [u8], limits: &'l ReadLimits) -> Self {
        Self {
            lex: Lexer { bytes, pos: 0 },
            st: State {
                dest: Dest::Body,
                star: false,
                font: None,
                assoc_font: None,
                uc: 1,
                intbl: false,
                itap: 0,
            },
            stack: Vec::new(),
            doc_encoding: encoding_rs::WINDOWS_1252,
            default_font: None,
            fonts: HashMap::new(),
            font_def: None,
            cjk_font: None,
            pending: Vec::new(),
            uc_skip: 0,
            high_surrogate: None,
            para: String::new(),
            info_text: String::new(),
            stamp: Stamp::default(),
            meta: Meta::new(),
            defs: Vec::new(),
            def_depth: 1,
            pending_cell: CellDef::default(),
            doc: TableBuilder::new(limits, "RTF 文件"),
            started: false,
            closed: false,
            clean_end: false,
        }
    }

    fn run(&mut self) -> Result<(), ReadError> {
        while let Some(tok) = self.lex.next_token() {
            if !matches!(tok, Token::Text(_) | Token::Hex(_)) {
                self.flush();
            }
            if !matches!(tok, Token::Text(b' ' | b'\t' | 0)) {
                self.clean_end = false;
            }
            match tok {
                Token::Open => self.open()?,
                Token::Close => {
                    self.close()?;
                    self.clean_end = true;
                    if self.closed {
                        break;
                    }
                }
                // Fallback characters of a `\uN`: any character, `\'hh`,
                // control word or symbol counts as one.
                _ if self.uc_skip > 0 => self.uc_skip -= 1,
                Token::Text(b) => self.text_byte(b),
                Token::Hex(b) => self.hex_byte(b),
                Token::Symbol(s) => self.symbol(s),
                Token::Word(name, param) => {
                    self.word(name, param)?;
                    self.clean_end = name == b"par";
                }
            }
            if !self.started {
                return Err(ReadError::Damaged("RTF 文件无效：缺少起始分组".into()));
            }
        }
        self.flush();
        Ok(())
    }

    fn open(&mut self) -> Result<(), ReadError> {
        if self.stack.len() >= MAX_GROUP_DEPTH {
            return Err(ReadError::Damaged(format!(
                "RTF 文件分组嵌套超过 {MAX_GROUP_DEPTH} 层"
            )));
        }
        self.started = true;
        self.uc_skip = 0;
        self.stack.push(self.st);
        self.st.star = false;
        Ok(())
    }

    fn close(&mut self) -> Result<(), ReadError> {
        self.uc_skip = 0;
        let Some(outer) = self.stack.pop() else {
            return Ok(());
        };
        let inner = std::mem::replace(&mut self.st, outer);
        if inner.dest != outer.dest {
            let value = match inner.dest {
                Dest::Author | Dest::Generator => clean_text(&std::mem::take(&mut self.info_text)),
                _ => String::new(),
            };
            match inner.dest {
                Dest::Author if !value.is_empty() => {
                    self.meta.insert("author".into(), value.into());
                }
                Dest::Generator => {
                    let value = value.trim_end_matches(';').trim();
                    if !value.is_empty() {
                        self.meta.insert("application".into(), value.into());
                    }
                }
                Dest::Created | Dest::Modified => {
                    let key = if inner.dest == Dest::Created {
                        "created"
                    } else {
                        "modified"
                    };
                    if let Some(v) = self.stamp.rfc3339() {
                        self.meta.insert(key.into(), v.into());
                    }
                }
                Dest::FontTable => self.font_def = None,
                _ => {}
            }
        }
        if self.stack.is_empty() {
            self.closed = true;
        }
        Ok(())
    }

    fn takes_text(&self) -> bool {
        matches!(self.st.dest, Dest::Body | Dest::Author | Dest::Generator)
    }

    fn text_byte(&mut self, b: u8) {
        if self.takes_text() {
            if b == b'\t' {
                self.flush();
                self.emit(" ");
            } else {
                self.pending.push(b);
            }
        }
    }

    fn hex_byte(&mut self, b: u8) {
        if self.takes_text() {
            self.pending.push(b);
        }
    }

    fn emit(&mut self, s: &str) {
        match self.st.dest {
            Dest::Body => self.para.push_str(s),
            Dest::Author | Dest::Generator => self.info_text.push_str(s),
            _ => {}
        }
    }

    /// Decodes the pending bytes into the current destination.
    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let bytes = std::mem::take(&mut self.pending);
        let text = self.decode(&bytes);
        self.emit(&text);
    }

    fn font_encoding(&self, font: Option<i32>) -> Option<&'static Encoding> {
        let f = self.fonts.get(&font?)?;
        f.codepage
            .and_then(codepage_encoding)
            .or_else(|| f.charset.and_then(charset_encoding))
    }

    fn decode(&self, bytes: &[u8]) -> String {
        let primary = self
            .font_encoding(self.st.font)
            .unwrap_or(self.doc_encoding);
        if !is_cjk(primary) && bytes.iter().any(|&b| b >= 0x80) {
            // GBK bytes under a Western font: take a CJK reading of the
            // document when it decodes without errors.
            let candidates = [
                self.font_encoding(self.st.assoc_font),
                Some(self.doc_encoding),
                self.cjk_font.map(|(_, e)| e),
            ];
            for enc in candidates.into_iter().flatten().filter(|e| is_cjk(e)) {
                let (text, had_errors) = enc.decode_without_bom_handling(bytes);
                if !had_errors {
                    return text.into_owned();
                }
            }
            // Raw UTF-8 written by web generators.
            if let Ok(text) = std::str::from_utf8(bytes) {
                return text.to_string();
            }
        }
        primary.decode_without_bom_handling(bytes).0.into_owned()
    }

    fn unicode(&mut self, n: i32) {
        let unit = if n < 0 { n.saturating_add(65_536) } else { n };
        let unit = u16::try_from(unit).unwrap_or(0xFFFD);
        self.uc_skip = self.st.uc;
        match unit {
            0xD800..=0xDBFF => {
                self.high_surrogate = Some(unit);
                return;
            }
            0xDC00..=0xDFFF => {
                if let Some(high) = self.high_surrogate.take() {
                    let c =
                        0x10000 + ((u32::from(high) - 0xD800) << 10) + (u32::from(unit) - 0xDC00);
                    let ch = char::from_u32(c).unwrap_or('\u{FFFD}');
                    self.emit(ch.encode_utf8(&mut [0; 4]));
                }
                return;
            }
            _ => {}
        }
        self.high_surrogate = None;
        let ch = char::from_u32(u32::from(unit)).unwrap_or('\u{FFFD}');
        self.emit(ch.encode_utf8(&mut [0; 4]));
    }

    fn symbol(&mut self, s: u8) {
        match s {
            b'*' => self.st.star = true,
            _ if self.st.dest == Dest::Skip => {}
            b'~' => self.emit("\u{a0}"),
            b'_' => self.emit("-"),
            b'\\' | b'{' | b'}' if self.takes_text() => self.pending.push(s),
            b'\t' => self.emit(" "),
            _ => {}
        }
    }

    fn word(&mut self, name: &[u8], param: Option<i32>) -> Result<(), ReadError> {
        if self.st.dest == Dest::Skip {
            return Ok(());
        }
        if std::mem::take(&mut self.st.star) {
            match name {
                b"generator" => self.st.dest = Dest::Generator,
                b"nesttableprops" => self.st.dest = Dest::TableProps,
                // The Unicode twin of a `\upr` group: read it.
                b"ud" => {}
                _ => {
                    self.st.dest = Dest::Skip;
                    return Ok(());
                }
            }
            return Ok(());
        }
        if is_skipped_destination(name) {
            self.st.dest = Dest::Skip;
            return Ok(());
        }
        let p = param.unwrap_or(0);
        match self.st.dest {
            Dest::FontTable => {
                match name {
                    b"f" => {
                        self.font_def = Some(p);
                        self.fonts.entry(p).or_default();
                    }
                    b"fcharset" => {
                        if let Some(f) = self.font_def.and_then(|k| self.fonts.get_mut(&k)) {
                            f.charset = Some(p);
                        }
                    }
                    b"cpg" => {
                        if let Some(f) = self.font_def.and_then(|k| self.fonts.get_mut(&k)) {
                            f.codepage = Some(p);
                        }
                    }
                    _ => return Ok(()),
                }
                if let Some(k) = self.font_def
                    && let Some(e) = self.font_encoding(Some(k)).filter(|e| is_cjk(e))
                    && self.cjk_font.is_none_or(|(old, _)| k < old)
                {
                    self.cjk_font = Some((k, e));
                }
                return Ok(());
            }
            Dest::Info => {
                match name {
                    b"author" => self.st.dest = Dest::Author,
                    b"creatim" => self.start_stamp(Dest::Created),
                    b"revtim" => self.start_stamp(Dest::Modified),
                    _ => {}
                }
                return Ok(());
            }
            Dest::Created | Dest::Modified => {
                match name {
                    b"yr" => self.stamp.yr = p,
                    b"mo" => self.stamp.mo = p,
                    b"dy" => self.stamp.dy = p,
                    b"hr" => self.stamp.hr = p,
                    b"min" => self.stamp.min = p,
                    b"sec" => self.stamp.sec = p,
                    _ => {}
                }
                return Ok(());
            }
            _ => {}
        }
        let structure = matches!(self.st.dest, Dest::Body | Dest::TableProps);
        match name {
            _ if !structure && !is_character_word(name) => {}
            // Document
            b"ansicpg" => {
                if let Some(e) = codepage_encoding(p) {
                    self.doc_encoding = e;
                }
            }
            b"mac" => self.doc_encoding = encoding_rs::MACINTOSH,
            b"deff" => {
                self.default_font = Some(p);
                self.st.font = Some(p);
            }
            b"fonttbl" => {
                self.st.dest = Dest::FontTable;
                self.font_def = None;
            }
            b"info" => self.st.dest = Dest::Info,
            // Characters
            b"f" => self.st.font = Some(p),
            b"af" => self.st.assoc_font = Some(p),
            b"plain" => {
                self.st.font = self.default_font;
                self.st.assoc_font = None;
            }
            b"uc" => self.st.uc = usize::try_from(p.clamp(0, 16)).unwrap_or(1),
            b"u" => self.unicode(p),
            b"tab" | b"emspace" | b"enspace" | b"qmspace" => self.emit(" "),
            b"line" | b"page" | b"column" => self.emit("\n"),
            b"emdash" => self.emit("\u{2014}"),
            b"endash" => self.emit("\u{2013}"),
            b"bullet" => self.emit("\u{2022}"),
            b"lquote" => self.emit("\u{2018}"),
            b"rquote" => self.emit("\u{2019}"),
            b"ldblquote" => self.emit("\u{201C}"),
            b"rdblquote" => self.emit("\u{201D}"),
            // Paragraphs
            b"pard" => {
                self.st.intbl = false;
                self.st.itap = 0;
            }
            b"intbl" => self.st.intbl = true,
            b"itap" => self.st.itap = usize::try_from(p.clamp(0, 64)).unwrap_or(0),
            b"par" | b"sect" if self.st.dest == Dest::Body => {
                let text = std::mem::take(&mut self.para);
                self.doc.paragraph(text, self.st.depth())?;
            }
            b"cell" | b"nestcell" => {
                let min = if name == b"cell" { 1 } else { 2 };
                let text = std::mem::take(&mut self.para);
                self.doc.cell(text, self.st.depth().max(min))?;
            }
            b"row" | b"nestrow" => {
                let depth = self.st.depth().max(if name == b"row" { 1 } else { 2 });
                let text = std::mem::take(&mut self.para);
                let def = self.defs.get(depth.saturating_sub(1)).cloned();
                self.doc.row(text, depth, def)?;
            }
            // Row definitions
            b"trowd" => {
                let depth = if self.st.dest == Dest::TableProps {
                    self.st.depth().max(2)
                } else {
                    1
                };
                self.def_depth = depth;
                if self.defs.len() < depth {
                    self.defs.resize_with(depth, Default::default);
                }
                if let Some(d) = self.defs.get_mut(depth.saturating_sub(1)) {
                    *d = Rc::default();
                }
                self.pending_cell = CellDef::default();
            }
            b"trleft" => {
                if let Some(d) = self.defs.get_mut(self.def_depth.saturating_sub(1)) {
                    Rc::make_mut(d).left = p;
                }
            }
            b"clmgf" => self.pending_cell.h_first = true,
            b"clmrg" => self.pending_cell.h_cont = true,
            b"clvmgf" => self.pending_cell.v_first = true,
            b"clvmrg" => self.pending_cell.v_cont = true,
            b"cellx" => {
                let mut cell = std::mem::take(&mut self.pending_cell);
                cell.right = p;
                if let Some(d) = self.defs.get_mut(self.def_depth.saturating_sub(1))
                    && d.cells.len() < MAX_DEF_CELLS
                {
                    Rc::make_mut(d).cells.push(cell);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn start_stamp(&mut self, dest: Dest) {
        self.st.dest = dest;
        self.stamp = Stamp::default();
    }

    fn finish(mut self) -> Result<Extracted, ReadError> {
        let open = self.stack.len();
        if open > 1 || (open == 1 && !self.clean_end) {
            return Err(ReadError::Damaged(format!(
                "RTF 文件不完整（可能被截断）：{open} 个分组未结束"
            )));
        }
        if !self.started {
            return Err(ReadError::Damaged("RTF 文件无效：没有内容".into()));
        }
        let text = std::mem::take(&mut self.para);
        if !text.trim().is_empty() {
            self.doc.paragraph(text, self.st.depth())?;
        }
        let (grids, tables) = self.doc.finish()?;
        let mut meta = self.meta;
        meta.insert("tables".into(), serde_json::Value::from(tables));
        Ok(Extracted {
            grids,
            meta,
            scanned: false,
        })
    }
}

/// Control words that matter inside `\author` and `\generator` text.
fn is_character_word(name: &[u8]) -> bool {
    matches!(
        name,
        b"f" | b"af" | b"plain" | b"uc" | b"u" | b"tab" | b"line" | b"emdash" | b"endash"
    ) || name.ends_with(b"quote")
}

/// Destinations whose content is not document text.
fn is_skipped_destination(name: &[u8]) -> bool {
    matches!(
        name,
        b"colortbl"
            | b"stylesheet"
            | b"listtable"
            | b"listoverridetable"
            | b"revtbl"
            | b"rsidtbl"
            | b"xmlnstbl"
            | b"filetbl"
            | b"pgdsctbl"
            | b"themedata"
            | b"colorschememapping"
            | b"latentstyles"
            | b"datastore"
            | b"pict"
            | b"shppict"
            | b"nonshppict"
            | b"shpinst"
            | b"shprslt"
            | b"object"
            | b"objdata"
            | b"header"
            | b"headerl"
            | b"headerr"
            | b"headerf"
            | b"footer"
            | b"footerl"
            | b"footerr"
            | b"footerf"
            | b"footnote"
            | b"ftnsep"
            | b"ftnsepc"
            | b"ftncn"
            | b"aftnsep"
            | b"aftnsepc"
            | b"aftncn"
            | b"annotation"
            | b"atnid"
            | b"atnauthor"
            | b"fldinst"
            | b"listtext"
            | b"pntext"
            | b"pntxta"
            | b"pntxtb"
            | b"nonesttables"
            | b"bkmkstart"
            | b"bkmkend"
            | b"xe"
            | b"tc"
            | b"txe"
            | b"rxe"
            | b"template"
            | b"userprops"
            | b"docvar"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/rtf/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn read_str(s: &str) -> Result<Extracted, ReadError> {
        read(s.as_bytes(), &ReadLimits::default())
    }

    fn read_fixture(name: &str) -> Extracted {
        read(&fixture(name), &ReadLimits::default()).unwrap_or_else(|e| panic!("{name}: {e:?}"))
    }

    fn grid<'a>(ex: &'a Extracted, name: &str) -> &'a Grid {
        ex.grids
            .iter()
            .find(|g| g.name == name)
            .unwrap_or_else(|| panic!("no grid {name}: {:#?}", ex.grids))
    }

    /// The cell whose top-left corner is (row, col), as (rowspan, colspan, text).
    fn at(g: &Grid, row: u32, col: u32) -> (u32, u32, &str) {
        let c = g
            .cells
            .iter()
            .find(|c| c.row == row && c.col == col)
            .unwrap_or_else(|| panic!("{}: no cell at ({row},{col}): {:#?}", g.name, g.cells));
        (c.rowspan, c.colspan, c.text.as_str())
    }

    fn texts(g: &Grid) -> Vec<&str> {
        g.cells.iter().map(|c| c.text.as_str()).collect()
    }

    #[test]
    fn libreoffice_form_cells_and_spans() {
        let ex = read_fixture("form.rtf");
        assert!(!ex.scanned);
        let names: Vec<&str> = ex.grids.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["table 1", "text"]);
        let t = grid(&ex, "table 1");
        assert_eq!(at(t, 0, 0), (1, 1, "单 位"));
        assert_eq!(at(t, 0, 1), (1, 2, "永嘉县教育局"));
        assert_eq!(at(t, 0, 3), (1, 1, "地 址"));
        assert_eq!(at(t, 0, 4), (1, 2, "永嘉县上塘镇县前路36号"));
        assert_eq!(at(t, 1, 1), (1, 2, "0577-67231234"));
        assert_eq!(at(t, 2, 0), (1, 1, "分管领导姓名"));
        assert_eq!(at(t, 2, 5), (1, 1, "办公室、信息、督查"));
        // 联系方式 is merged over the three contact rows, twice.
        assert_eq!(at(t, 3, 0), (3, 1, "联系方式"));
        assert_eq!(at(t, 3, 1), (1, 1, "办 电"));
        assert_eq!(at(t, 3, 2), (1, 1, "67231240"));
        assert_eq!(at(t, 3, 4), (1, 2, "13957712345"));
        assert_eq!(at(t, 4, 3), (1, 1, "机关网"));
        assert_eq!(at(t, 5, 1), (1, 1, "E-mail"));
        assert_eq!(at(t, 5, 2), (1, 4, "chenjh@yj.gov.cn"));
        assert!(
            !t.cells
                .iter()
                .any(|c| c.col == 0 && (c.row == 4 || c.row == 5))
        );
        assert_eq!(at(t, 6, 0), (1, 1, "信息员姓名"));
        assert_eq!(at(t, 6, 1), (1, 1, "林晓燕"));
        assert_eq!(at(t, 7, 5), (1, 1, "中共党员"));
        assert_eq!(at(t, 8, 0), (3, 1, "联系方式"));
        assert_eq!(at(t, 10, 1), (1, 1, "QQ号码"));
        assert_eq!(at(t, 10, 2), (1, 1, "123456789"));
        assert_eq!(at(t, 10, 4), (1, 2, "linxy@163.com"));
        assert_eq!(at(t, 11, 0), (1, 6, "信息员个人简历"));
        assert_eq!(
            at(t, 12, 0),
            (
                1,
                6,
                "2003.09～2007.07 浙江师范大学中文系学习；2007.08～至今 在永嘉县教育局办公室工作。"
            )
        );
        // Two paragraphs in one cell are joined by a line break.
        assert_eq!(at(t, 13, 1), (1, 5, "（盖章）\n2007年5月16日"));
        assert_eq!(t.cells.len(), 54);
        let text = grid(&ex, "text");
        assert_eq!(
            texts(text),
            [
                "永嘉县分管政务信息领导及信息员登记表",
                "填表日期：2007年5月16日"
            ]
        );
        assert_eq!(at(text, 1, 0), (1, 1, "填表日期：2007年5月16日"));
    }

    #[test]
    fn libreoffice_form_meta() {
        let ex = read_fixture("form.rtf");
        assert_eq!(ex.meta.get("author"), Some(&"教育局办公室".into()));
        assert_eq!(ex.meta.get("created"), Some(&"2007-05-15T08:30:00".into()));
        assert_eq!(ex.meta.get("modified"), Some(&"2007-05-16T09:05:00".into()));
        assert_eq!(ex.meta.get("tables"), Some(&1.into()));
        let app = ex.meta.get("application").and_then(|v| v.as_str());
        assert!(
            app.is_some_and(|a| a.starts_with("LibreOffice/")),
            "{app:?}"
        );
    }

    #[test]
    fn gbk_hex_bytes_and_merges() {
        let ex = read_fixture("gbk.rtf");
        assert_eq!(ex.meta.get("author"), Some(&"张微".into()));
        assert_eq!(ex.meta.get("created"), Some(&"2007-05-16T09:12:00".into()));
        assert_eq!(ex.meta.get("modified"), Some(&"2007-05-17T14:03:30".into()));
        assert_eq!(ex.meta.get("application"), None);
        let t = grid(&ex, "table 1");
        // Boundaries 0/1500/3000/4500/6000 → four columns.
        assert_eq!(at(t, 0, 0), (1, 1, "单 位"));
        // \clmgf + \clmrg: one cell over two columns.
        assert_eq!(at(t, 0, 1), (1, 2, "永嘉县教育局"));
        assert_eq!(at(t, 0, 3), (1, 1, "地址：县前路36号"));
        // \clvmgf + \clvmrg: one cell over two rows.
        assert_eq!(at(t, 1, 0), (2, 1, "联系方式"));
        assert_eq!(at(t, 1, 2), (1, 2, "67231240"));
        assert_eq!(at(t, 2, 1), (1, 1, "手 机"));
        assert_eq!(at(t, 2, 2), (1, 2, "13957712345\n（仅工作日）"));
        assert_eq!(t.cells.len(), 8);
        // A lone cp1252 byte under the GB2312 font's document stays é.
        assert_eq!(
            texts(grid(&ex, "text")),
            ["分管政务信息领导及信息员登记表", "联系人：张微 café"]
        );
    }

    #[test]
    fn unicode_escapes_fields_and_specials() {
        let ex = read_fixture("unicode.rtf");
        assert_eq!(
            ex.meta.get("application"),
            Some(&"Microsoft Word 11.0.0000".into())
        );
        assert_eq!(ex.meta.get("tables"), Some(&0.into()));
        assert_eq!(
            texts(grid(&ex, "text")),
            [
                "单位：永嘉县教育局",
                "单位",
                "网址：永嘉政府网",
                "分管工作 x\ny z\u{2014}"
            ]
        );
    }

    #[test]
    fn codepage_and_charset_decoding() {
        // \ansicpg936, GBK under a Western font.
        let ex = read_str(r"{\rtf1\ansi\ansicpg936 \'b5\'a5\'ce\'bb\par}").unwrap();
        assert_eq!(texts(grid(&ex, "text")), ["单位"]);
        // No code page, but a GB2312 font in use.
        let ex =
            read_str(r"{\rtf1\ansi{\fonttbl{\f0\fcharset0 Arial;}{\f1\fcharset134 SimSun;}}\f0 \'b5\'a5\par}")
                .unwrap();
        assert_eq!(texts(grid(&ex, "text")), ["单"]);
        // Big5 font.
        let ex = read_str(r"{\rtf1{\fonttbl{\f2\fcharset136 MingLiU;}}\f2 \'b3\'e6\'a6\'ec\par}")
            .unwrap();
        assert_eq!(texts(grid(&ex, "text")), ["單位"]);
        // Shift_JIS with an ASCII trail byte.
        let ex = read_str(r"{\rtf1{\fonttbl{\f1\fcharset128 MS Gothic;}}\f1 \'83e\'83X\'83g\par}")
            .unwrap();
        assert_eq!(texts(grid(&ex, "text")), ["テスト"]);
        // Plain cp1252.
        let ex = read_str(r"{\rtf1\ansi caf\'e9 \'93x\'94\par}").unwrap();
        assert_eq!(texts(grid(&ex, "text")), ["café “x”"]);
        // Raw UTF-8 bytes (not RTF, but web generators write them).
        let ex = read_str("{\\rtf1\\ansi 单位 café\\par}").unwrap();
        assert_eq!(texts(grid(&ex, "text")), ["单位 café"]);
        // \u with negative values, \uc0, \uc2 with a plain-char fallback,
        // a surrogate pair, and escaped braces.
        let ex = read_str(
            r"{\rtf1 \u-3? \uc0\u21333\u20301 {\uc2\u21333 xy}z {\uc1\u-10179?\u-8704?} \{a\}\\\par}",
        )
        .unwrap();
        assert_eq!(
            texts(grid(&ex, "text")),
            ["\u{fffd} 单位单z \u{1F600} {a}\\"]
        );
    }

    #[test]
    fn destinations_are_skipped() {
        let ex = read_str(concat!(
            r"{\rtf1{\fonttbl{\f0 Arial;}}{\colortbl;\red0;}{\stylesheet{\s0 Normal;}}",
            r"{\*\userprops x}{\header H}{\footer F}{\*\bkmkstart b}{\pict 0a0b\bin4 }}}}}",
            r"{\listtext 1.\tab}A{\footnote N}{\*\unknown U}",
            r"{\field{\*\fldinst PAGE}{\fldrslt 7}}\par}"
        ))
        .unwrap();
        assert_eq!(texts(grid(&ex, "text")), ["A7"]);
    }

    #[test]
    fn nested_table_is_flattened_and_emitted() {
        // Word's layout: inner cells at \itap2 ending in \nestcell, the inner
        // row definition in {\*\nesttableprops … \nestrow}, outer row
        // properties repeated after the cells.
        let rtf = concat!(
            r"{\rtf1\ansi",
            r"\trowd\cellx2000\cellx6000",
            r"\pard\intbl\u22806?\cell\pard\intbl before\par",
            r"\pard\intbl\itap2 A\nestcell B\nestcell",
            r"{\*\nesttableprops\trowd\cellx3000\cellx5000\nestrow}{\nonesttables\par}",
            r"\pard\intbl\itap2 C\nestcell D\nestcell",
            r"{\*\nesttableprops\trowd\cellx3000\cellx5000\nestrow}{\nonesttables\par}",
            r"\pard\intbl\itap1 after\cell",
            r"{\trowd\cellx2000\cellx6000\row}",
            r"\pard tail\par}"
        );
        let ex = read_str(rtf).unwrap();
        let names: Vec<&str> = ex.grids.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["table 1", "table 1.1", "text"]);
        let t = grid(&ex, "table 1");
        assert_eq!(at(t, 0, 0), (1, 1, "外"));
        assert_eq!(at(t, 0, 1), (1, 1, "before\nA\nB\nC\nD\nafter"));
        let inner = grid(&ex, "table 1.1");
        assert_eq!(at(inner, 0, 0), (1, 1, "A"));
        assert_eq!(at(inner, 0, 1), (1, 1, "B"));
        assert_eq!(at(inner, 1, 1), (1, 1, "D"));
        assert_eq!(ex.meta.get("tables"), Some(&1.into()));
        assert_eq!(texts(grid(&ex, "text")), ["tail"]);
    }

    #[test]
    fn tables_separated_by_a_paragraph_are_two_grids() {
        let row = r"\trowd\cellx1000\cellx2000\pard\intbl a\cell b\cell\row ";
        let rtf = format!(r"{{\rtf1 {row}{row}\pard between\par {row}}}");
        let ex = read_str(&rtf).unwrap();
        let names: Vec<&str> = ex.grids.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["table 1", "table 2", "text"]);
        assert_eq!(grid(&ex, "table 1").cells.len(), 4);
        assert_eq!(ex.meta.get("tables"), Some(&2.into()));
        // A row with more cells than its definition is laid out by index.
        let ex = read_str(r"{\rtf1\trowd\cellx1000\pard\intbl a\cell b\cell c\cell\row}").unwrap();
        assert_eq!(at(grid(&ex, "table 1"), 0, 2), (1, 1, "c"));
    }

    #[test]
    fn limits_are_enforced() {
        let few = ReadLimits {
            max_cells: 10,
            ..ReadLimits::default()
        };
        match read(&fixture("form.rtf"), &few) {
            Err(ReadError::TooLarge(m)) => assert!(m.contains("10"), "{m}"),
            other => panic!("{other:?}"),
        }
        let deep = format!("{{\\rtf1 {}x{}}}", "{".repeat(300), "}".repeat(300));
        assert!(matches!(read_str(&deep), Err(ReadError::Damaged(_))));
        let ok = format!("{{\\rtf1 {}x{}}}", "{".repeat(150), "}".repeat(150));
        assert_eq!(texts(grid(&read_str(&ok).unwrap(), "text")), ["x"]);
        // A huge \bin length is clamped to the input.
        let ex = read_str(r"{\rtf1 a\par{\pict\bin2147483647 xyz").unwrap_err();
        assert!(matches!(ex, ReadError::Damaged(_)));
        // Many cellx in one row definition are capped.
        let wide = format!(
            r"{{\rtf1\trowd{}\pard\intbl a\cell\row}}",
            r"\cellx100".repeat(5000)
        );
        assert_eq!(grid(&read_str(&wide).unwrap(), "table 1").cells.len(), 1);
    }

    #[test]
    fn truncated_and_garbage_input_is_damaged() {
        let limits = ReadLimits::default();
        for bad in [
            &fixture("truncated.rtf")[..],
            b"",
            b"   ",
            b"{\\rtf",
            b"{\\rtf1\\ansi {\\fonttbl{\\f0 Arial;}",
            b"hello {\\rtf1}",
            b"\\rtf1 x}",
            &[0xFF; 64],
        ] {
            assert!(
                matches!(read(bad, &limits), Err(ReadError::Damaged(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // A missing final brace after a complete paragraph is tolerated.
        let ex = read_str(r"{\rtf1\ansi hello\par").unwrap();
        assert_eq!(texts(grid(&ex, "text")), ["hello"]);
        // Trailing data after the document is ignored.
        let ex = read_str("{\\rtf1 x}\0\0garbage{").unwrap();
        assert_eq!(texts(grid(&ex, "text")), ["x"]);
        // Stray control words, braces, bad hex and a lone backslash.
        let ex = read_str("{\\rtf1 \\'zz\\'4\\cell\\row\\nestrow\\clvmrg\\cellx-5 a}\\").unwrap();
        assert!(ex.grids.iter().any(|g| g.name == "table 1"));
    }

    #[test]
    fn sniffed_and_dispatched() {
        let bytes = fixture("form.rtf");
        let format = crate::parse::sniff::sniff(&bytes, Some("登记表.doc"));
        assert_eq!(format, crate::parse::sniff::Format::Rtf);
        assert_eq!(format.contract_name(), "doc");
        assert_eq!(crate::parse::sniff::Format::from_arg("rtf"), Some(format));
        let ex = crate::parse::readers::read(format, &bytes, &ReadLimits::default()).unwrap();
        assert_eq!(ex.meta.get("tables"), Some(&1.into()));
    }

    /// xorshift64*: deterministic, no dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    #[test]
    fn mutated_files_never_panic() {
        let limits = ReadLimits::default();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        const SPECIAL: &[u8] = b"{}\\'*-0123456789 abcx";
        for name in ["form.rtf", "gbk.rtf", "unicode.rtf"] {
            let original = fixture(name);
            for _ in 0..150 {
                let mut bytes = original.clone();
                match rng.below(4) {
                    0 => bytes.truncate(rng.below(bytes.len())),
                    1 => {
                        for _ in 0..1 + rng.below(8) {
                            let i = rng.below(bytes.len());
                            if let Some(b) = bytes.get_mut(i) {
                                *b ^= 1 << rng.below(8);
                            }
                        }
                    }
                    2 => {
                        for _ in 0..1 + rng.below(8) {
                            let i = rng.below(bytes.len());
                            let c = SPECIAL[rng.below(SPECIAL.len())];
                            if let Some(b) = bytes.get_mut(i) {
                                *b = c;
                            }
                        }
                    }
                    _ => {
                        // duplicate or drop a slice
                        let i = rng.below(bytes.len());
                        let j = (i + rng.below(200)).min(bytes.len());
                        if rng.below(2) == 0 {
                            let piece = bytes[i..j].to_vec();
                            bytes.splice(i..i, piece);
                        } else {
                            bytes.drain(i..j);
                        }
                    }
                }
                let _ = read(&bytes, &limits);
            }
        }
    }
}
