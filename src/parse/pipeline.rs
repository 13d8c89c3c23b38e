//! The intake pipeline: one raw message (or bare attachment) in, what would
//! be recorded out. `parse` prints it; the daemon runs exactly this code on
//! each fetched message.
//!
//! The flow: message (`crate::parse::message`) → every file leaf, through `.zip`
//! archives (`crate::parse::container`) → format by content (`crate::parse::sniff`) →
//! grid, read in a sandboxed child (`crate::parse::sandbox`, `crate::parse::readers`) →
//! forms (`crate::parse::form`) → normalised values and problems
//! (`crate::parse::normalize`) → unit (`crate::parse::matching`). Nothing here writes
//! anywhere.

use std::borrow::Cow;

use sha2::{Digest, Sha256};

use crate::parse::container::{self, ZipLimits};
use crate::parse::form::{self, RawForm};
use crate::parse::grid::{Cell, Extracted, Grid, Meta, ReadError, ReadLimits};
use crate::parse::matching::{Context, Matcher};
use crate::parse::message::{self, Automation, Envelope, MessageKind, MessageLimits};
use crate::parse::normalize;
use crate::parse::office::OfficeContacts;
use crate::parse::problems::{Code, Problem};
use crate::parse::quote;
use crate::parse::registration::{Field, Registration};
use crate::parse::report::{Attachment, Outcome, ParseReport, SenderUnit};
use crate::parse::roster::Roster;
use crate::parse::sandbox::{self, Isolation};
use crate::parse::sniff::{self, Format};
use crate::parse::trust::{self, Verdict};

/// Every limit the pipeline applies, with defaults in config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    pub read: ReadLimits,
    pub child: sandbox::ChildLimits,
    /// The child that reads a scan by OCR (images and PDFs when OCR is on).
    pub ocr: sandbox::ChildLimits,
    pub attachment: AttachmentLimits,
    pub message: MessageLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            read: ReadLimits::default(),
            child: sandbox::ChildLimits::default(),
            ocr: sandbox::ChildLimits {
                memory_mb: 2048,
                cpu_seconds: 60,
                timeout_seconds: 90,
                ..sandbox::ChildLimits::default()
            },
            attachment: AttachmentLimits::default(),
            message: MessageLimits::default(),
        }
    }
}

/// Limits on attachments and containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AttachmentLimits {
    /// Bytes of one attachment.
    pub max_bytes: usize,
    /// Attachments read from one message, archives' members included.
    pub max_count: usize,
    /// `.zip` inside `.zip` inside … (and attached `.eml` files).
    pub max_depth: usize,
    /// Entries of one `.zip` attachment.
    pub max_zip_entries: usize,
    /// Expansion ratio of a `.zip` attachment, checked once 1 MiB was read.
    pub max_zip_ratio: u64,
}

impl Default for AttachmentLimits {
    fn default() -> Self {
        Self {
            max_bytes: 30 * 1024 * 1024,
            max_count: 100,
            max_depth: 3,
            max_zip_entries: 1000,
            max_zip_ratio: 200,
        }
    }
}

/// The configured pipeline: roster, required fields, isolation, limits.
#[derive(Debug)]
pub struct Pipeline {
    roster: Option<Roster>,
    matcher: Option<Matcher>,
    required: Vec<Field>,
    isolation: Isolation,
    limits: Limits,
    /// Authserv-ids whose `Authentication-Results` are believed (see
    /// `parse::trust`); empty: the topmost header.
    trusted_authserv: Vec<String>,
    /// OCR of scans, when its models are installed.
    ocr: Option<sandbox::OcrSetup>,
    /// The office's own addresses and numbers: never a unit's values.
    office: OfficeContacts,
}

/// The contract's default required fields.
pub const DEFAULT_REQUIRED: [Field; 6] = [
    Field::UnitName,
    Field::LeaderName,
    Field::LeaderMobile,
    Field::OfficerName,
    Field::OfficerMobile,
    Field::OfficerEmail,
];

/// A form found in one source, before checking.
struct Found {
    source: String,
    filename: Option<String>,
    form: RawForm,
    /// Read by OCR from a scan: a person confirms it.
    ocr: bool,
}

/// What one message's walk collects.
#[derive(Default)]
struct Walk {
    attachments: Vec<Attachment>,
    found: Vec<Found>,
    problems: Vec<Problem>,
    scanned: bool,
    /// The receiving server found the sender forged: why.
    unverified_sender: Option<String>,
}

impl Pipeline {
    pub fn new(
        roster: Option<Roster>,
        required: Vec<Field>,
        isolation: Isolation,
        limits: Limits,
    ) -> Self {
        let matcher = roster.as_ref().map(Matcher::new);
        Self {
            roster,
            matcher,
            required,
            isolation,
            limits,
            trusted_authserv: Vec::new(),
            ocr: None,
            office: OfficeContacts::default(),
        }
    }

    /// The office's own addresses and phone/fax numbers: a value that is
    /// one of them is dropped from every form (it came from a quoted notice
    /// or the office's example, not from the unit).
    pub fn with_office_contacts(mut self, office: OfficeContacts) -> Self {
        self.office = office;
        self
    }

    /// Reads scans by OCR with the models in `models` (none: scans are
    /// recorded, not read).
    pub fn with_ocr(mut self, models: Option<std::path::PathBuf>) -> Self {
        self.ocr = models.map(|models| sandbox::OcrSetup {
            models,
            limits: self.limits.ocr,
        });
        self
    }

    /// Believes only the `Authentication-Results` of these authserv-ids
    /// (the receiving server's, e.g. 163's).
    pub fn with_trusted_authserv(mut self, ids: Vec<String>) -> Self {
        self.trusted_authserv = ids;
        self
    }

    /// The fields a registration must carry to count as complete.
    pub fn required(&self) -> &[Field] {
        &self.required
    }

    /// Where attachments are read (the workers and what they did).
    pub fn isolation(&self) -> &Isolation {
        &self.isolation
    }

    /// Parses one input: an RFC 5322 message or a bare attachment.
    pub fn parse(&self, input: &str, bytes: &[u8]) -> ParseReport {
        let name = std::path::Path::new(input)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        let is_message = sniff::sniff(bytes, name.as_deref()) == Format::Message
            || name
                .as_deref()
                .and_then(sniff::extension)
                .is_some_and(|e| e == "eml");
        if is_message {
            self.parse_message(input, bytes)
        } else {
            let mut walk = Walk::default();
            self.file(&mut walk, name, None, bytes, 0);
            self.finish(
                input,
                None,
                MessageKind::Submission,
                Automation::default(),
                walk,
            )
        }
    }

    fn parse_message(&self, input: &str, raw: &[u8]) -> ParseReport {
        let parsed = message::parse(raw, &self.limits.message);
        let mut walk = Walk::default();
        if let Verdict::Failed(why) = trust::verdict(
            &parsed.auth_results,
            &parsed.received_spf,
            &self.trusted_authserv,
        ) {
            walk.unverified_sender = Some(why);
        }
        // A limit that cut the message's walk short: say so, as an unread part.
        for warning in &parsed.warnings {
            walk.problems.push(Problem::new(
                None,
                Code::UnreadableAttachment,
                warning.clone(),
            ));
        }
        // A bounce carries our mail, or a unit's, back: its files are listed
        // with what they hold, and nothing of it is credited.
        let bounce = parsed.kind == MessageKind::Bounce;
        if parsed.kind == MessageKind::Submission || bounce {
            for part in &parsed.parts {
                self.file(
                    &mut walk,
                    part.filename.clone(),
                    Some(part.content_type.clone()),
                    &part.bytes,
                    0,
                );
            }
        }
        if bounce {
            walk.found.clear();
        } else if parsed.kind == MessageKind::Submission {
            let subject = parsed.envelope.subject.as_deref().unwrap_or("");
            self.bodies(&mut walk, &parsed.bodies, quote::subject_forwards(subject));
        }
        self.finish(
            input,
            Some(parsed.envelope),
            parsed.kind,
            parsed.automation,
            walk,
        )
    }

    /// Forms typed into message bodies. A body that repeats an attached
    /// form (or quotes a forwarded one) adds nothing.
    fn bodies(&self, walk: &mut Walk, bodies: &[message::Body], forwarded: bool) {
        for body in bodies {
            let mut forms = Vec::new();
            if let Some(text) = body.text.as_deref() {
                let (mut own, quoted) = quote::split(text);
                if let Some(quoted) = quoted
                    && self.reads_quote(&quoted, forwarded)
                {
                    own.push_str(&quoted.text);
                }
                forms = self.forms_of(&self.read_body(walk, Format::BodyText, &own));
            }
            if forms.is_empty()
                && let Some(html) = body.html.as_deref()
            {
                let format = if forwarded {
                    Format::BodyHtmlForward
                } else {
                    Format::BodyHtml
                };
                forms = self.forms_of(&self.read_body(walk, format, html));
            }
            for form in forms {
                let duplicate = walk.found.iter().any(|f| same_people(&f.form, &form));
                if !duplicate {
                    walk.found.push(Found {
                        source: "body".into(),
                        filename: None,
                        form,
                        ocr: false,
                    });
                }
            }
        }
    }

    /// Reads a body's text to grids the way a file is read: in a worker,
    /// under the same time, memory and cell limits. A body that cannot be
    /// read (a limit) is a problem of the message and gives no form.
    fn read_body(&self, walk: &mut Walk, format: Format, text: &str) -> Extracted {
        match sandbox::read(
            &self.isolation,
            format,
            text.as_bytes(),
            &self.limits.read,
            None,
        ) {
            Ok(read) => read,
            Err(err) => {
                walk.problems.push(Problem::new(
                    None,
                    Code::UnreadableAttachment,
                    format!("邮件正文无法读取：{err}"),
                ));
                Extracted::default()
            }
        }
    }

    fn forms_of(&self, extracted: &Extracted) -> Vec<RawForm> {
        forms_of(extracted, &self.limits.read)
    }

    /// Whether the text below a quote marker is read: a forward is (a
    /// secretary passing on the officer's mail), a reply's quote never is,
    /// nor anything the office itself sent.
    fn reads_quote(&self, quoted: &quote::Quoted, forwarded: bool) -> bool {
        let forward = match quoted.kind {
            quote::QuoteKind::Forward => true,
            quote::QuoteKind::Original => forwarded,
            quote::QuoteKind::Reply => false,
        };
        forward
            && !quoted
                .from
                .as_deref()
                .is_some_and(|from| self.office.is_office(from))
    }

    /// Reads one file leaf (recursing into archives and attached messages).
    fn file(
        &self,
        walk: &mut Walk,
        filename: Option<String>,
        content_type: Option<String>,
        bytes: &[u8],
        depth: usize,
    ) {
        let limits = &self.limits.attachment;
        let shown = filename.clone().unwrap_or_else(|| "（未命名附件）".into());
        let format = sniff::sniff(bytes, filename.as_deref());
        let mut att = Attachment {
            filename: filename.clone(),
            content_type: content_type.unwrap_or_else(|| guess_content_type(filename.as_deref())),
            size: bytes.len(),
            sha256: hex::encode(Sha256::digest(bytes)),
            format: format.contract_name(),
            outcome: Outcome::NoForm,
            detail: None,
            meta: Meta::new(),
        };
        if walk.attachments.len() >= limits.max_count {
            if walk.attachments.len() == limits.max_count {
                walk.problems.push(Problem::new(
                    None,
                    Code::UnreadableAttachment,
                    format!("附件数量超过上限 {} 个，其余附件未读取", limits.max_count),
                ));
            }
            att.outcome = Outcome::Error;
            att.detail = Some(format!("附件数量超过上限 {} 个，未读取", limits.max_count));
            walk.attachments.push(att);
            return;
        }
        if bytes.len() > limits.max_bytes {
            let err = ReadError::TooLarge(format!(
                "附件 {} 字节，超过上限 {} 字节",
                bytes.len(),
                limits.max_bytes
            ));
            return self.unreadable(walk, att, &shown, &err);
        }
        match format {
            Format::Zip | Format::Message if depth >= limits.max_depth => {
                let err =
                    ReadError::TooLarge(format!("压缩包或邮件嵌套超过 {} 层", limits.max_depth));
                self.unreadable(walk, att, &shown, &err);
            }
            Format::Zip => self.zip(walk, att, &shown, bytes, depth),
            Format::Message => {
                let index = walk.attachments.len();
                walk.attachments.push(att);
                let inner = message::parse(bytes, &self.limits.message);
                for warning in &inner.warnings {
                    walk.problems.push(Problem::new(
                        None,
                        Code::UnreadableAttachment,
                        warning.clone(),
                    ));
                }
                let before = walk.found.len();
                if inner.kind == MessageKind::Submission {
                    for part in &inner.parts {
                        self.file(
                            walk,
                            part.filename.clone(),
                            Some(part.content_type.clone()),
                            &part.bytes,
                            depth + 1,
                        );
                    }
                    let subject = inner.envelope.subject.as_deref().unwrap_or("");
                    self.bodies(walk, &inner.bodies, quote::subject_forwards(subject));
                }
                if walk.found.len() > before {
                    walk.attachments[index].outcome = Outcome::Parsed;
                }
            }
            Format::Other => {
                let err = ReadError::Unsupported("无法识别的文件类型".into());
                self.unreadable(walk, att, &shown, &err);
            }
            _ => match sandbox::read(
                &self.isolation,
                format,
                bytes,
                &self.limits.read,
                self.ocr.as_ref(),
            ) {
                Ok(extracted) => self.extracted(walk, att, filename, extracted),
                Err(err) => self.unreadable(walk, att, &shown, &err),
            },
        }
    }

    fn zip(&self, walk: &mut Walk, mut att: Attachment, shown: &str, bytes: &[u8], depth: usize) {
        let zl = ZipLimits {
            max_entries: self
                .limits
                .read
                .max_zip_entries
                .min(self.limits.attachment.max_zip_entries),
            max_entry_bytes: self.limits.read.max_part_bytes,
            max_total_bytes: self.limits.read.max_total_bytes,
            max_ratio: self.limits.attachment.max_zip_ratio,
        };
        match container::read_zip(bytes, &zl) {
            Ok(members) => {
                let index = walk.attachments.len();
                att.meta.insert("entries".into(), members.len().into());
                walk.attachments.push(att);
                let before = walk.found.len();
                for m in members {
                    self.file(walk, Some(m.name), None, &m.bytes, depth + 1);
                }
                if walk.found.len() > before {
                    walk.attachments[index].outcome = Outcome::Parsed;
                }
            }
            Err(err) => self.unreadable(walk, att, shown, &err),
        }
    }

    fn unreadable(&self, walk: &mut Walk, mut att: Attachment, shown: &str, err: &ReadError) {
        att.outcome = match err {
            ReadError::Unsupported(_) => Outcome::Unsupported,
            _ => Outcome::Error,
        };
        att.detail = Some(err.to_string());
        walk.problems.push(Problem::new(
            None,
            Code::UnreadableAttachment,
            format!("附件“{shown}”无法读取：{err}"),
        ));
        walk.attachments.push(att);
    }

    fn extracted(
        &self,
        walk: &mut Walk,
        mut att: Attachment,
        filename: Option<String>,
        extracted: Extracted,
    ) {
        att.meta = extracted.meta.clone();
        let shown = filename.clone().unwrap_or_else(|| "（未命名附件）".into());
        let forms = self.forms_of(&extracted);
        if extracted.scanned {
            att.outcome = Outcome::Scanned;
            walk.scanned = true;
            let text = if forms.is_empty() {
                format!("附件“{shown}”是扫描件或图片，无法自动读取，请人工录入")
            } else {
                format!("附件“{shown}”是扫描件，已用文字识别预填，请人工核对")
            };
            walk.problems
                .push(Problem::new(None, Code::ScannedDocument, text));
            for form in forms {
                walk.found.push(Found {
                    source: shown.clone(),
                    filename: filename.clone(),
                    form,
                    ocr: true,
                });
            }
            walk.attachments.push(att);
            return;
        }
        if !forms.is_empty() {
            att.outcome = Outcome::Parsed;
        }
        for form in forms {
            walk.found.push(Found {
                source: shown.clone(),
                filename: filename.clone(),
                form,
                ocr: false,
            });
        }
        walk.attachments.push(att);
    }

    /// Checks, matches and assembles the report.
    fn finish(
        &self,
        input: &str,
        envelope: Option<Envelope>,
        kind: MessageKind,
        automation: Automation,
        mut walk: Walk,
    ) -> ParseReport {
        let sender = match (
            &self.roster,
            envelope.as_ref().and_then(|e| e.from.as_deref()),
        ) {
            (Some(r), Some(from)) => r.by_email(from),
            _ => None,
        };
        let mut registrations = Vec::new();
        let mut problems = std::mem::take(&mut walk.problems);
        // A forged sender credits nothing by itself: every registration
        // waits for a person, who sees why.
        if let Some(why) = &walk.unverified_sender {
            problems.insert(0, Problem::new(None, Code::SenderUnverified, why.clone()));
        }
        let mut found_forms = walk.found;
        if !self.office.is_empty() {
            for found in &mut found_forms {
                found.form.values.retain(|_, v| !self.office.is_office(v));
            }
            // A form that held only the office's own details (its example
            // row, a quoted notice) is nobody's registration.
            found_forms.retain(|f| f.form.has_person());
        }
        for found in dedupe(found_forms) {
            let (values, mut reg_problems) = normalize::check(&found.form.values, &self.required);
            let unit_name = values.get(&Field::UnitName).and_then(|v| match v {
                crate::parse::registration::Value::Text(s) => Some(s.clone()),
                crate::parse::registration::Value::Bool(_) => None,
            });
            let unit_match = self.matcher.as_ref().and_then(|m| {
                let ctx = Context {
                    sender,
                    subject: envelope.as_ref().and_then(|e| e.subject.as_deref()),
                    filename: found.filename.as_deref(),
                    title: found.form.title_unit.as_deref(),
                    ocr: found.ocr,
                };
                let outcome = m.decide(unit_name.as_deref(), ctx);
                reg_problems.extend(outcome.problem);
                outcome.unit_match
            });
            problems.extend(reg_problems);
            registrations.push(Registration {
                source: found.source,
                ocr: found.ocr,
                values,
                unit_match: unit_match.filter(|_| walk.unverified_sender.is_none()),
            });
        }
        if registrations.is_empty() {
            let why = match kind {
                MessageKind::Bounce => "这是一封退信，其中没有登记表",
                MessageKind::AutoReply => "这是一封自动回复邮件，其中没有登记表",
                MessageKind::Submission if walk.scanned => {
                    "邮件中只有扫描件或图片，未能自动读取到登记表"
                }
                MessageKind::Submission => "邮件正文和附件中均未找到登记表",
            };
            problems.push(Problem::new(None, Code::NoRegistrationFound, why));
        }
        let review_codes = [
            Code::MissingField,
            Code::UnknownUnit,
            Code::UnitConflict,
            Code::NoRegistrationFound,
            Code::SenderUnverified,
            Code::UnverifiedReplacement,
        ];
        // A registration read by OCR is a reading, not what the unit
        // wrote: a person confirms it.
        let needs_review = registrations.is_empty()
            || registrations.iter().any(|r| r.ocr)
            || (self.roster.is_some() && registrations.iter().any(|r| r.unit_match.is_none()))
            || problems.iter().any(|p| review_codes.contains(&p.code));
        ParseReport {
            input: input.to_string(),
            message: envelope,
            kind,
            automation,
            sender_unit: sender.map(|u| SenderUnit {
                unit_id: u.id.clone(),
                unit_name: u.name.clone(),
            }),
            attachments: walk.attachments,
            registrations,
            needs_review,
            problems,
        }
    }
}

/// The forms of a read file: forms carrying people, with the unit fields
/// of unit-only fragments (a `填报单位：X` line above a table) filled in.
/// The grids with free person sentences rewritten (`parse::sentence`): a
/// grid of lines (a body, a column of cells) gets them in place; in a
/// table, the cells that hold one are taken out into a grid of their own.
fn with_sentences<'a>(grids: &'a [Grid], limits: &ReadLimits) -> Vec<Cow<'a, Grid>> {
    let mut out = Vec::with_capacity(grids.len());
    for grid in grids {
        let mut order: Vec<&Cell> = grid.cells.iter().collect();
        order.sort_by_key(|c| (c.row, c.col));
        let texts: Vec<&str> = order.iter().map(|c| c.text.as_str()).collect();
        let Some(rewritten) = crate::parse::sentence::expand_cells(&texts) else {
            out.push(Cow::Borrowed(grid));
            continue;
        };
        let lines_only = order.windows(2).all(|w| w[0].row != w[1].row);
        let mut moved = String::new();
        let mut kept = Grid::new(grid.name.clone());
        for (cell, new) in order.iter().zip(&rewritten) {
            match new {
                Some(text) => moved.push_str(text),
                None if lines_only => {
                    moved.push_str(&cell.text);
                    moved.push('\n');
                }
                None => kept.cells.push((*cell).clone()),
            }
        }
        if !kept.cells.is_empty() {
            out.push(Cow::Owned(kept));
        }
        out.push(Cow::Owned(crate::parse::readers::text::lines_grid(
            &grid.name, &moved, limits,
        )));
    }
    out
}

fn forms_of(extracted: &Extracted, limits: &ReadLimits) -> Vec<RawForm> {
    let grids = with_sentences(&extracted.grids, limits);
    let all: Vec<RawForm> = grids.iter().flat_map(|g| form::extract(g)).collect();
    let (mut people, unit_only): (Vec<RawForm>, Vec<RawForm>) =
        all.into_iter().partition(RawForm::has_person);
    for p in &mut people {
        for u in &unit_only {
            p.fill_unit_from(u);
        }
    }
    // A nested table read both inside its cell and on its own gives a
    // second, smaller copy of the same values.
    let mut kept: Vec<RawForm> = Vec::new();
    for p in people {
        if kept.iter().any(|k| is_subset(&p, k)) {
            continue;
        }
        kept.retain(|k| !is_subset(k, &p));
        kept.push(p);
    }
    kept
}

fn is_subset(a: &RawForm, b: &RawForm) -> bool {
    a.values.iter().all(|(f, v)| b.values.get(f) == Some(v))
}

fn same_people(a: &RawForm, b: &RawForm) -> bool {
    let key = |f: &RawForm| {
        (
            f.values
                .get(&Field::LeaderName)
                .map(|s| normalize::squeeze_cjk(s)),
            f.values
                .get(&Field::OfficerName)
                .map(|s| normalize::squeeze_cjk(s)),
        )
    };
    let (ka, kb) = (key(a), key(b));
    ka == kb && (ka.0.is_some() || ka.1.is_some())
}

/// The same form sent twice in one message (as .xls and as .pdf, say) is
/// one registration.
fn dedupe(found: Vec<Found>) -> Vec<Found> {
    let mut kept: Vec<Found> = Vec::new();
    for f in found {
        let unit = |x: &Found| {
            x.form
                .values
                .get(&Field::UnitName)
                .map(|s| crate::parse::matching::canonical(s))
        };
        if kept
            .iter()
            .any(|k| same_people(&k.form, &f.form) && unit(k) == unit(&f))
        {
            continue;
        }
        kept.push(f);
    }
    kept
}

fn guess_content_type(name: Option<&str>) -> String {
    let ext = name.and_then(sniff::extension).unwrap_or_default();
    match ext.as_str() {
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "xls" | "et" => "application/vnd.ms-excel",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "doc" | "wps" => "application/msword",
        "rtf" => "application/rtf",
        "ods" => "application/vnd.oasis.opendocument.spreadsheet",
        "pdf" => "application/pdf",
        "tif" | "tiff" => "image/tiff",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "zip" => "application/zip",
        "txt" => "text/plain",
        "eml" => "message/rfc822",
        _ => "application/octet-stream",
    }
    .to_string()
}
