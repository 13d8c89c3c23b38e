//! One raw e-mail (RFC 5322) turned into what the intake pipeline needs: the
//! envelope (sender, subject, date, ids), whether it is a submission, a bounce
//! or an auto-reply, its bodies decoded to UTF-8, and every leaf part that is a
//! file, including those of forwarded (`message/rfc822`) messages.
//!
//! MIME structure, transfer decoding and address/date parsing are left to
//! `mail-parser`. This module owns what mail-parser gets wrong for the mail we
//! receive: raw 8-bit GBK header bytes (old Foxmail, Outlook Express), RFC 2231
//! continuations split inside a character, RFC 2047 words inside quoted
//! parameters, GB2312 labels on GBK text, bodies with a missing or wrong
//! charset, and the limits that keep a hostile message cheap. It does not read
//! attachments (`crate::parse::readers`, `crate::parse::container`), decide which unit sent
//! the message, nor touch the disk.

use std::borrow::Cow;
use std::collections::BTreeMap;

use encoding_rs::{Encoding, GB18030, UTF_8, WINDOWS_1252};
use mail_parser::{Address, Encoding as TransferEncoding, Header, HeaderName, HeaderValue};
use mail_parser::{Message, MessageParser, MessagePart, PartType};

/// Who sent the message and what it is about, decoded for display.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Envelope {
    /// With angle brackets, e.g. `<abc@x>`.
    pub message_id: Option<String>,
    /// Address only, lower-cased.
    pub from: Option<String>,
    /// Display name, decoded.
    pub from_name: Option<String>,
    /// Decoded.
    pub subject: Option<String>,
    /// RFC 3339 with the header's own offset, e.g. `2007-05-16T09:12:00+08:00`.
    pub date: Option<String>,
    /// The ids of `In-Reply-To`, each in angle brackets, space-separated.
    pub in_reply_to: Option<String>,
    /// Raw (unfolded, trimmed) `Auto-Submitted` value.
    pub auto_submitted: Option<String>,
    /// Raw (unfolded, trimmed) `List-Id` value.
    pub list_id: Option<String>,
}

/// What a message is, as far as intake is concerned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub enum MessageKind {
    /// Anything that is not recognisably automatic: read it for forms.
    #[default]
    Submission,
    /// A delivery failure report (退信).
    Bounce,
    /// An out-of-office reply (自动回复) or a read receipt.
    AutoReply,
}

impl MessageKind {
    /// The name used in the parse JSON (`kind`) and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Submission => "submission",
            MessageKind::Bounce => "bounce",
            MessageKind::AutoReply => "auto_reply",
        }
    }
}

/// What makes a message automatic (RFC 3834), read once from its headers
/// when it is parsed: whoever decides about a receipt reads these flags
/// instead of the raw message.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Automation {
    /// `Auto-Submitted` with any value but `no`.
    pub auto_submitted: bool,
    /// A mailing list (`List-Id`).
    pub list: bool,
    /// `Precedence: bulk`, `junk` or `list`.
    pub bulk: bool,
    /// The sender is a robot: `noreply`, `mailer-daemon`, `postmaster`,
    /// `bounce` … in the local part.
    pub robot_sender: bool,
    /// The message carries our own outbox header: one of our mails.
    pub ours: bool,
    /// The Message-IDs it replies to (`In-Reply-To`, then `References`),
    /// in angle brackets.
    pub replies_to: Vec<String>,
    /// For a bounce: the references to our mails found in it (the
    /// returned original or the report), in the order they appear.
    pub returned: Vec<Returned>,
}

impl Automation {
    /// Mail that must never get an automatic reply, whatever its kind: a
    /// list, bulk mail, an auto-submitted mail, a robot, our own mail.
    pub fn never_answered(&self) -> bool {
        self.auto_submitted || self.list || self.bulk || self.robot_sender || self.ours
    }
}

/// A reference to one of our mails found in a bounce.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Returned {
    /// Our `X-Xxdc-Outbox` header: the outbox row id.
    Outbox(String),
    /// One of our Message-IDs (`<xxdc-…@…>`).
    MessageId(String),
}

/// The header our mails carry with their outbox row id.
pub const OUTBOX_HEADER: &str = "X-Xxdc-Outbox";

/// A leaf part that is a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    /// Decoded base name (directories stripped); `None` if the part has no name.
    pub filename: Option<String>,
    /// Lower-case `type/subtype`.
    pub content_type: String,
    /// Transfer-decoded content, in the part's own charset for text files.
    pub bytes: Vec<u8>,
}

/// The readable body of one message, decoded to UTF-8. Several text (or HTML)
/// leaves of the same message are joined with a line break.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Body {
    pub text: Option<String>,
    pub html: Option<String>,
}

/// Everything intake needs from one message.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedMessage {
    pub envelope: Envelope,
    pub kind: MessageKind,
    pub automation: Automation,
    /// `Authentication-Results` values, topmost first (see `parse::trust`).
    pub auth_results: Vec<String>,
    /// `Received-SPF` values, topmost first.
    pub received_spf: Vec<String>,
    /// Every file leaf, including those inside forwarded messages, in order.
    pub parts: Vec<Part>,
    /// The top message's body first, then each forwarded message's body.
    pub bodies: Vec<Body>,
    /// Chinese, for office staff: e.g. a limit that cut the walk short.
    pub warnings: Vec<String>,
}

/// Limits on the MIME walk (`[limits.message]` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MessageLimits {
    /// Multipart or forwarded-message levels entered below the top message.
    pub max_depth: usize,
    /// Leaf parts (bodies and files) visited.
    pub max_parts: usize,
    /// Decoded bytes of all leaves together.
    pub max_bytes: usize,
}

impl Default for MessageLimits {
    fn default() -> Self {
        Self {
            max_depth: 8,
            max_parts: 200,
            max_bytes: 50 * 1024 * 1024,
        }
    }
}

/// mail-parser keeps nested messages as a recursive tree and both its
/// `into_owned` (for base64-encoded `message/rfc822`) and the tree's drop
/// recurse once per level: a few hundred levels overflow a 2 MiB thread stack
/// in a debug build. Messages that mention nested messages more often than
/// this are therefore never handed to it whole; no real submission comes close.
const MAX_NESTED_MESSAGE_MARKERS: usize = 100;

/// Our own walk recurses once per level too; whatever the caller sets, it
/// never goes deeper than this.
const HARD_MAX_DEPTH: usize = 64;

/// Parses one raw message. Never fails: mail is parsed leniently, and input
/// that is not a message at all gives an empty envelope and no parts.
pub fn parse(raw: &[u8], limits: &MessageLimits) -> ParsedMessage {
    let parser = MessageParser::default();
    let warnings = Vec::new();
    let headers_only = nested_message_estimate(raw, 0) > MAX_NESTED_MESSAGE_MARKERS;
    let parsed = if headers_only {
        parser.parse_headers(raw)
    } else {
        parser.parse(raw)
    };
    let Some(msg) = parsed else {
        return ParsedMessage {
            envelope: Envelope::default(),
            kind: MessageKind::Submission,
            automation: Automation::default(),
            auth_results: Vec::new(),
            received_spf: Vec::new(),
            parts: Vec::new(),
            bodies: vec![Body::default()],
            warnings,
        };
    };

    let envelope = envelope_of(&msg, &parser);
    let kind = classify(&msg, &envelope);
    let automation = automation_of(&msg, &envelope, kind);
    let all_values = |name: &str| -> Vec<String> {
        root_headers(&msg)
            .iter()
            .filter(|h| h.name.as_str().eq_ignore_ascii_case(name))
            .map(|h| header_text(msg.raw_message.as_ref(), h))
            .collect()
    };
    let auth_results = all_values("authentication-results");
    let received_spf = all_values("received-spf");
    let mut walker = Walker {
        limits: *limits,
        max_depth: limits.max_depth.min(HARD_MAX_DEPTH),
        kind,
        parts: Vec::new(),
        bodies: Vec::new(),
        warnings,
        leaves: 0,
        bytes: 0,
        stopped: false,
        returned: false,
        hint: text_charset(&msg),
    };
    if headers_only {
        walker.bodies.push(Body::default());
        walker.walk_top_parts(&parser, raw, &msg);
    } else {
        walker.walk_message(&msg, 0);
    }
    dismantle(msg);
    ParsedMessage {
        envelope,
        kind,
        automation,
        auth_results,
        received_spf,
        parts: walker.parts,
        bodies: walker.bodies,
        warnings: walker.warnings,
    }
}

/// Heuristic: do these bytes start like an RFC 5322 message (an `.eml`) rather
/// than a bare attachment? The first line must be a header field with a name
/// mail clients put first, or any `X-` field followed by another header line.
pub fn looks_like_message(bytes: &[u8]) -> bool {
    const FIRST_FIELDS: &[&str] = &[
        "received",
        "from",
        "return-path",
        "mime-version",
        "date",
        "message-id",
        "subject",
        "delivered-to",
        "to",
        "sender",
        "reply-to",
        "envelope-to",
        "x-original-to",
        "received-spf",
        "authentication-results",
        "dkim-signature",
        "arc-seal",
        "content-type",
        "thread-topic",
        "in-reply-to",
        "references",
    ];
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let head = &bytes[..bytes.len().min(4096)];
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let mut first = lines.next().unwrap_or_default();
    // An mbox export starts with its "From sender date" separator line.
    if first.starts_with(b"From ") {
        first = lines.next().unwrap_or_default();
    }
    let Some(name) = field_name(first) else {
        return false;
    };
    let name = name.to_ascii_lowercase();
    if FIRST_FIELDS.contains(&name.as_str()) {
        return true;
    }
    if name.starts_with("x-") {
        return lines.next().is_some_and(|l| {
            field_name(l).is_some() || l.starts_with(b" ") || l.starts_with(b"\t")
        });
    }
    false
}

/// The field name of a header line (`Name: value`), if the line is one.
fn field_name(line: &[u8]) -> Option<String> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = &line[..colon];
    let ok = !name.is_empty() && name.iter().all(|&b| b.is_ascii_graphic() && b != b':');
    ok.then(|| String::from_utf8_lossy(name).into_owned())
}

// ---------------------------------------------------------------------------
// Envelope and kind

fn root_headers<'a, 'x>(msg: &'a Message<'x>) -> &'a [Header<'x>] {
    msg.parts
        .first()
        .map(|p| p.headers.as_slice())
        .unwrap_or_default()
}

fn find_header<'a, 'x>(headers: &'a [Header<'x>], name: &str) -> Option<&'a Header<'x>> {
    headers
        .iter()
        .find(|h| h.name.as_str().eq_ignore_ascii_case(name))
}

/// The header's value as written: 8-bit bytes decoded (UTF-8 when valid,
/// GB18030 otherwise), unfolded and trimmed.
fn header_text(raw: &[u8], h: &Header<'_>) -> String {
    header_text_hinted(raw, h, None)
}

/// `header_text` for a header that may carry raw 8-bit text, with the
/// charset its message declares for its text as a hint (`decode_8bit`).
fn header_text_hinted(raw: &[u8], h: &Header<'_>, hint: Option<&str>) -> String {
    let bytes = raw
        .get(h.offset_start as usize..h.offset_end as usize)
        .unwrap_or_default();
    unfold(&decode_8bit(bytes, hint))
}

/// The first charset a message declares for a part (its body's, as a rule):
/// what a mailer that writes raw 8-bit headers writes them in.
fn text_charset(msg: &Message<'_>) -> Option<String> {
    use mail_parser::MimeHeaders;
    msg.parts
        .iter()
        .take(64)
        .filter_map(|p| p.content_type()?.attribute("charset"))
        .find_map(|c| non_empty(c.to_string()))
}

fn raw_is_utf8(raw: &[u8], h: &Header<'_>) -> bool {
    raw.get(h.offset_start as usize..h.offset_end as usize)
        .is_some_and(|b| std::str::from_utf8(b).is_ok())
}

fn unfold(s: &str) -> String {
    s.replace(['\r', '\n'], "").trim().to_string()
}

fn non_empty(s: String) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_string())
}

fn envelope_of(msg: &Message<'_>, parser: &MessageParser) -> Envelope {
    let raw = msg.raw_message.as_ref();
    let headers = root_headers(msg);
    let hint = text_charset(msg);
    let hint = hint.as_deref();
    let raw_value = |name: &str| find_header(headers, name).map(|h| header_text(raw, h));

    let (from, from_name) = find_header(headers, "from")
        .map(|h| sender(raw, h, parser, hint))
        .unwrap_or_default();

    let date = find_header(headers, "date").and_then(|h| match &h.value {
        HeaderValue::DateTime(d) => rfc3339(d),
        _ => None,
    });

    let message_id = find_header(headers, "message-id").and_then(|h| match &h.value {
        HeaderValue::Text(id) => non_empty(format!("<{}>", id.trim())),
        HeaderValue::TextList(ids) => ids.first().map(|id| format!("<{}>", id.trim())),
        _ => non_empty(header_text(raw, h)),
    });

    let in_reply_to = find_header(headers, "in-reply-to").and_then(|h| match &h.value {
        HeaderValue::Text(id) => non_empty(format!("<{}>", id.trim())),
        HeaderValue::TextList(ids) => non_empty(
            ids.iter()
                .map(|id| format!("<{}>", id.trim()))
                .collect::<Vec<_>>()
                .join(" "),
        ),
        _ => non_empty(header_text(raw, h)),
    });

    Envelope {
        message_id,
        from,
        from_name,
        subject: find_header(headers, "subject")
            .and_then(|h| non_empty(decode_words(&header_text_hinted(raw, h, hint)))),
        date,
        in_reply_to,
        auto_submitted: raw_value("auto-submitted").and_then(non_empty),
        list_id: raw_value("list-id").and_then(non_empty),
    }
}

/// Address and display name of a `From:` header. When the raw bytes are not
/// UTF-8 (a display name in raw GBK), mail-parser's value is lossy, so the
/// header is decoded first (as GB18030, or in the message's Latin charset,
/// `decode_8bit`) and parsed again from that text.
fn sender(
    raw: &[u8],
    h: &Header<'_>,
    parser: &MessageParser,
    hint: Option<&str>,
) -> (Option<String>, Option<String>) {
    if raw_is_utf8(raw, h) {
        return address_of(&h.value);
    }
    let text = format!("From: {}\r\n\r\n", header_text_hinted(raw, h, hint));
    parser
        .parse_headers(text.as_bytes())
        .and_then(|m| find_header(root_headers(&m), "from").map(|h| address_of(&h.value)))
        .unwrap_or_default()
}

fn address_of(value: &HeaderValue<'_>) -> (Option<String>, Option<String>) {
    let addr = match value {
        HeaderValue::Address(Address::List(list)) => list.first(),
        HeaderValue::Address(Address::Group(groups)) => {
            groups.iter().flat_map(|g| g.addresses.iter()).next()
        }
        _ => None,
    };
    let Some(addr) = addr else {
        return (None, None);
    };
    let address = addr
        .address
        .as_deref()
        .and_then(|a| non_empty(a.to_lowercase()));
    let name = addr.name.as_deref().and_then(|n| {
        // mail-parser leaves encoded-words it could not take apart (e.g. one
        // split inside a character); ours joins their bytes first.
        let n = if n.contains("=?") {
            decode_words(n)
        } else {
            n.to_string()
        };
        non_empty(n.trim_matches('"').to_string())
    });
    (address, name)
}

fn rfc3339(d: &mail_parser::DateTime) -> Option<String> {
    let secs = (i32::from(d.tz_hour) * 3600 + i32::from(d.tz_minute) * 60)
        * if d.tz_before_gmt { -1 } else { 1 };
    let offset = chrono::FixedOffset::east_opt(secs)?;
    let date =
        chrono::NaiveDate::from_ymd_opt(i32::from(d.year), u32::from(d.month), u32::from(d.day))?;
    let time = chrono::NaiveTime::from_hms_opt(
        u32::from(d.hour),
        u32::from(d.minute),
        u32::from(d.second),
    )?;
    let local = date.and_time(time).and_local_timezone(offset).single()?;
    Some(local.to_rfc3339())
}

fn classify(msg: &Message<'_>, env: &Envelope) -> MessageKind {
    const BOUNCE_SUBJECTS: &[&str] = &[
        "退信",
        "投递失败",
        "无法投递",
        "发送失败",
        "未送达",
        "undeliverable",
        "undelivered",
        "delivery status notification",
        "delivery failure",
        "delivery has failed",
        "failure notice",
        "returned mail",
        "mail delivery failed",
        "mail delivery failure",
    ];
    const AUTO_REPLY_PREFIXES: &[&str] = &[
        "自动回复",
        "自动答复",
        "自动应答",
        "auto:",
        "automatic reply",
        "autoreply",
        "auto reply",
        "auto-reply",
        "auto response",
        "out of office",
        "out of the office",
    ];

    let raw = msg.raw_message.as_ref();
    let headers = root_headers(msg);
    let value =
        |name: &str| find_header(headers, name).map(|h| header_text(raw, h).to_ascii_lowercase());

    if let Some(ct) = headers
        .iter()
        .find(|h| h.name == HeaderName::ContentType)
        .and_then(|h| h.value.as_content_type())
        && ct.ctype().eq_ignore_ascii_case("multipart")
        && ct
            .subtype()
            .is_some_and(|s| s.eq_ignore_ascii_case("report"))
    {
        let report = ct.attribute("report-type").unwrap_or_default();
        return if report.eq_ignore_ascii_case("disposition-notification") {
            MessageKind::AutoReply
        } else {
            MessageKind::Bounce
        };
    }

    let subject = env
        .subject
        .as_deref()
        .unwrap_or_default()
        .trim()
        .to_lowercase();
    let local = env
        .from
        .as_deref()
        .and_then(|a| a.split('@').next())
        .unwrap_or_default();
    let null_sender = value("return-path").is_some_and(|r| r.trim() == "<>");
    let bounce_subject = BOUNCE_SUBJECTS.iter().any(|k| subject.contains(k));
    let bounce_sender = matches!(
        local,
        "mailer-daemon" | "mailer_daemon" | "mail-daemon" | "postmaster"
    ) || env
        .from_name
        .as_deref()
        .is_some_and(|n| n.to_lowercase().contains("mail delivery"));
    if local == "mailer-daemon" || (bounce_subject && (bounce_sender || null_sender)) {
        return MessageKind::Bounce;
    }

    let auto_submitted = value("auto-submitted")
        .map(|v| v.split(';').next().unwrap_or_default().trim().to_string())
        .is_some_and(|v| !v.is_empty() && v != "no");
    let flagged =
        |name: &str| value(name).is_some_and(|v| !matches!(v.trim(), "" | "no" | "false" | "0"));
    let precedence = value("precedence").is_some_and(|v| v.trim() == "auto_reply");
    let auto_subject = AUTO_REPLY_PREFIXES.iter().any(|p| subject.starts_with(p));
    if auto_submitted
        || flagged("x-autoreply")
        || flagged("x-autorespond")
        || precedence
        || auto_subject
    {
        return MessageKind::AutoReply;
    }
    MessageKind::Submission
}

/// Local parts of robot senders: never answered.
const ROBOT_SENDERS: &[&str] = &[
    "noreply",
    "no-reply",
    "no_reply",
    "donotreply",
    "do-not-reply",
    "mailer-daemon",
    "postmaster",
    "bounce",
];

fn automation_of(msg: &Message<'_>, env: &Envelope, kind: MessageKind) -> Automation {
    let raw = msg.raw_message.as_ref();
    let headers = root_headers(msg);
    let value = |name: &str| find_header(headers, name).map(|h| header_text(raw, h));
    let local = env
        .from
        .as_deref()
        .and_then(|a| a.split('@').next())
        .unwrap_or_default();
    Automation {
        auto_submitted: env
            .auto_submitted
            .as_deref()
            .is_some_and(|a| !a.trim().eq_ignore_ascii_case("no")),
        list: env.list_id.is_some(),
        bulk: value("precedence").is_some_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "bulk" | "junk" | "list"
            )
        }),
        robot_sender: ROBOT_SENDERS.iter().any(|r| local.contains(r)),
        ours: value(OUTBOX_HEADER).is_some(),
        replies_to: replies_to(msg),
        returned: if kind == MessageKind::Bounce {
            returned_references(&bounce_text(msg))
        } else {
            Vec::new()
        },
    }
}

/// The Message-IDs a message replies to (`In-Reply-To`, `References`), in
/// angle brackets.
fn replies_to(msg: &Message<'_>) -> Vec<String> {
    let mut ids = Vec::new();
    for value in [msg.in_reply_to(), msg.references()] {
        if let Some(list) = value.as_text_list() {
            ids.extend(list.iter().map(|id| format!("<{id}>")));
        } else if let Some(id) = value.as_text() {
            ids.push(format!("<{id}>"));
        }
    }
    ids
}

/// The raw bounce plus the decoded content of each of its parts: servers
/// return the original base64-encoded as often as not, and our headers are
/// only readable once decoded. At most 64 parts are looked at.
fn bounce_text(msg: &Message<'_>) -> String {
    let mut text = String::from_utf8_lossy(msg.raw_message.as_ref()).into_owned();
    let mut stack = vec![msg];
    let mut budget = 64;
    while let Some(m) = stack.pop() {
        for part in &m.parts {
            budget -= 1;
            if budget == 0 {
                return text;
            }
            text.push('\n');
            match &part.body {
                PartType::Message(inner) => {
                    text.push_str(&String::from_utf8_lossy(inner.raw_message()));
                    stack.push(inner);
                }
                PartType::Text(t) | PartType::Html(t) => text.push_str(t),
                PartType::Binary(b) | PartType::InlineBinary(b) => {
                    text.push_str(&String::from_utf8_lossy(b));
                }
                PartType::Multipart(_) => {}
            }
        }
    }
    text
}

/// Our outbox header lines and `<xxdc-…@…>` Message-IDs in a bounce's
/// text, in order, each once.
fn returned_references(text: &str) -> Vec<Returned> {
    let header = format!("{}:", OUTBOX_HEADER.to_ascii_lowercase());
    let mut found = Vec::new();
    let mut push = |r: Returned| {
        if !found.contains(&r) {
            found.push(r);
        }
    };
    for line in text.lines() {
        if line.to_ascii_lowercase().starts_with(&header) {
            push(Returned::Outbox(line[header.len()..].trim().to_string()));
        }
        let mut rest = line;
        while let Some(start) = rest.find("<xxdc-") {
            let candidate = &rest[start..];
            let Some(end) = candidate.find('>') else {
                break;
            };
            let id = &candidate[..=end];
            if id.contains('@') && !id.contains(char::is_whitespace) {
                push(Returned::MessageId(id.to_string()));
            }
            rest = &candidate[end + 1..];
        }
    }
    found
}

// ---------------------------------------------------------------------------
// The MIME walk

#[derive(Debug)]
struct Walker {
    limits: MessageLimits,
    max_depth: usize,
    kind: MessageKind,
    parts: Vec<Part>,
    bodies: Vec<Body>,
    warnings: Vec<String>,
    leaves: usize,
    bytes: usize,
    stopped: bool,
    /// Inside a bounce's returned original: its files are listed, its
    /// bodies are not the bounce's.
    returned: bool,
    /// The charset the message being walked declares (`text_charset`).
    hint: Option<String>,
}

impl Walker {
    fn warn(&mut self, text: String) {
        if !self.warnings.contains(&text) {
            self.warnings.push(text);
        }
    }

    /// For a message too deeply nested to hand to mail-parser whole: splits
    /// its top-level multipart by hand and reads every part that is not
    /// itself too deep, so a good form next to a hostile chain of forwarded
    /// messages is still read.
    fn walk_top_parts(&mut self, parser: &MessageParser, raw: &[u8], top: &Message<'_>) {
        use mail_parser::MimeHeaders;
        let boundary = top
            .content_type()
            .and_then(|ct| ct.attribute("boundary"))
            .map(|b| format!("--{b}").into_bytes());
        let boundary: Option<Vec<u8>> = boundary;
        let (Some(boundary), Some(body_start)) = (boundary, find_blank_line(raw)) else {
            self.warn(format!(
                "邮件中嵌套的转发邮件超过 {MAX_NESTED_MESSAGE_MARKERS} 层（或个），只读取了信头，正文和附件未读取"
            ));
            return;
        };
        let body = &raw[body_start..];
        let mut starts = Vec::new();
        let mut pos = 0;
        while let Some(found) = find_ci(&body[pos..], &boundary) {
            let at = pos + found;
            let line_start = at == 0 || body[at - 1] == b'\n';
            pos = at + boundary.len();
            let rest = &body[pos..];
            let closing = rest.starts_with(b"--");
            // `--b` must not match the delimiter `--b2` of a nested part.
            let whole = closing || rest.first().is_none_or(|c| c.is_ascii_whitespace());
            if line_start && whole {
                starts.push((at, closing));
            }
        }
        for pair in starts.windows(2) {
            let ((at, closing), (next, _)) = (pair[0], pair[1]);
            if closing {
                break;
            }
            // The part runs from the line after the delimiter to the line
            // break before the next one.
            let Some(nl) = body[at..next].iter().position(|&b| b == b'\n') else {
                continue;
            };
            let chunk = &body[at + nl + 1..next];
            if nested_message_estimate(chunk, 0) > MAX_NESTED_MESSAGE_MARKERS {
                self.warn(format!(
                    "邮件中有一个部分嵌套的转发邮件超过 {MAX_NESTED_MESSAGE_MARKERS} 层（或个），该部分未读取"
                ));
                continue;
            }
            if let Some(part) = parser.parse(chunk) {
                self.walk_part(&part, 0, 1, 0, false);
                dismantle(part);
            }
        }
    }

    fn walk_message(&mut self, msg: &Message<'_>, depth: usize) {
        let body_index = self.bodies.len();
        if !self.returned {
            self.bodies.push(Body::default());
        }
        if !msg.parts.is_empty() {
            let hint = std::mem::replace(&mut self.hint, text_charset(msg));
            self.walk_part(msg, 0, depth, body_index, false);
            self.hint = hint;
        }
    }

    fn walk_part(
        &mut self,
        msg: &Message<'_>,
        id: usize,
        depth: usize,
        body_index: usize,
        in_report: bool,
    ) {
        if self.stopped {
            return;
        }
        let Some(part) = msg.parts.get(id) else {
            return;
        };
        let info = PartInfo::of(part, msg.raw_message.as_ref(), self.hint.as_deref());
        match &part.body {
            PartType::Multipart(children) => {
                if depth >= self.max_depth {
                    self.warn(format!(
                        "邮件嵌套层数超过上限 {}，更深层的内容未读取",
                        self.max_depth
                    ));
                    return;
                }
                let report = info.ctype == "multipart" && info.subtype == "report";
                for &child in children {
                    // Children always come after their parent in mail-parser's
                    // flat list; anything else would be a loop.
                    let child = child as usize;
                    if child > id {
                        self.walk_part(msg, child, depth + 1, body_index, report);
                    }
                }
            }
            PartType::Message(inner) => {
                // A bounce's returned original is walked for its files:
                // they are listed with what they hold, and nothing of a
                // bounce is credited (the pipeline reads no form from it).
                // Other messages inside a report are skipped.
                if in_report && self.kind != MessageKind::Bounce {
                    return;
                }
                if depth >= self.max_depth {
                    self.warn(format!(
                        "邮件嵌套层数超过上限 {}，更深层的内容未读取",
                        self.max_depth
                    ));
                    return;
                }
                let returned = self.returned;
                self.returned |= self.kind == MessageKind::Bounce;
                self.walk_message(inner, depth + 1);
                self.returned = returned;
            }
            _ => {
                if in_report && (info.ctype == "message" || info.subtype == "rfc822-headers") {
                    return;
                }
                self.leaf(msg, part, info, body_index);
            }
        }
    }

    fn leaf(
        &mut self,
        msg: &Message<'_>,
        part: &MessagePart<'_>,
        info: PartInfo,
        body_index: usize,
    ) {
        if self.leaves >= self.limits.max_parts {
            self.warn(format!(
                "邮件部件数超过上限 {}，其余部件未读取",
                self.limits.max_parts
            ));
            self.stopped = true;
            return;
        }
        self.leaves += 1;
        let bytes = leaf_bytes(part, msg.raw_message.as_ref());
        if self.bytes.saturating_add(bytes.len()) > self.limits.max_bytes {
            self.warn(format!(
                "邮件解码后总大小超过上限 {}，其余部件未读取",
                size_text(self.limits.max_bytes)
            ));
            self.stopped = true;
            return;
        }
        self.bytes += bytes.len();

        let is_body = info.filename.is_none()
            && !info.attachment
            && info.ctype == "text"
            && (info.subtype == "plain" || info.subtype == "html");
        if is_body && self.returned {
            // The returned original's text: not the bounce's body, no file.
        } else if is_body {
            let text = decode_with_label(&bytes, info.charset.as_deref());
            if let Some(body) = self.bodies.get_mut(body_index) {
                let slot = if info.subtype == "html" {
                    &mut body.html
                } else {
                    &mut body.text
                };
                match slot {
                    Some(existing) => {
                        existing.push('\n');
                        existing.push_str(&text);
                    }
                    None => *slot = Some(text),
                }
            }
        } else {
            self.parts.push(Part {
                filename: info.filename,
                content_type: format!("{}/{}", info.ctype, info.subtype),
                bytes: bytes.into_owned(),
            });
        }
    }
}

fn size_text(bytes: usize) -> String {
    const MIB: usize = 1024 * 1024;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{bytes} 字节")
    }
}

/// What the walk needs to know about one part, from its raw headers.
#[derive(Debug)]
struct PartInfo {
    ctype: String,
    subtype: String,
    charset: Option<String>,
    filename: Option<String>,
    attachment: bool,
}

impl PartInfo {
    /// `hint`: the message's charset (`text_charset`), for raw 8-bit names
    /// in a part that declares none of its own.
    fn of(part: &MessagePart<'_>, raw: &[u8], hint: Option<&str>) -> Self {
        let ct_header = part
            .headers
            .iter()
            .find(|h| h.name == HeaderName::ContentType);
        let cd_header = part
            .headers
            .iter()
            .find(|h| h.name == HeaderName::ContentDisposition);
        let ct = ct_header.and_then(|h| h.value.as_content_type());
        let cd = cd_header.and_then(|h| h.value.as_content_type());
        let (ctype, subtype) = match ct {
            Some(ct) => (
                ct.ctype().trim().to_ascii_lowercase(),
                ct.subtype().unwrap_or_default().trim().to_ascii_lowercase(),
            ),
            None => ("text".to_string(), "plain".to_string()),
        };
        let hint = ct.and_then(|c| c.attribute("charset")).or(hint);
        let ct_params = ct_header
            .map(|h| parse_params(&header_text_hinted(raw, h, hint)))
            .unwrap_or_default();
        let cd_params = cd_header
            .map(|h| parse_params(&header_text_hinted(raw, h, hint)))
            .unwrap_or_default();

        // Content-Disposition's filename first, then Content-Type's name; our
        // own reading of the raw header first, mail-parser's as a last resort.
        let filename = param_value(&cd_params, "filename")
            .or_else(|| param_value(&ct_params, "name"))
            .or_else(|| cd.and_then(|c| c.attribute("filename")).map(decode_words))
            .or_else(|| ct.and_then(|c| c.attribute("name")).map(decode_words))
            .and_then(|n| base_name(&n));
        let charset = param_value(&ct_params, "charset")
            .or_else(|| ct.and_then(|c| c.attribute("charset")).map(str::to_string))
            .and_then(non_empty);
        let attachment = cd.is_some_and(|c| c.ctype().trim().eq_ignore_ascii_case("attachment"));
        PartInfo {
            ctype,
            subtype,
            charset,
            filename,
            attachment,
        }
    }
}

/// The transfer-decoded bytes of a leaf. mail-parser hands text parts back
/// already converted to UTF-8 (lossily when the charset is missing or wrong),
/// so for those the raw body is decoded again here and the charset applied by
/// the caller; binary parts are taken as mail-parser decoded them.
fn leaf_bytes<'a>(part: &'a MessagePart<'_>, raw: &[u8]) -> Cow<'a, [u8]> {
    match &part.body {
        PartType::Binary(b) | PartType::InlineBinary(b) => Cow::Borrowed(b.as_ref()),
        PartType::Message(m) => Cow::Borrowed(m.raw_message.as_ref()),
        PartType::Multipart(_) => Cow::Borrowed(&[]),
        PartType::Text(_) | PartType::Html(_) => Cow::Owned(transfer_decode(part, raw)),
    }
}

/// A leaf's body decoded from the raw message by its transfer encoding.
fn transfer_decode(part: &MessagePart<'_>, raw: &[u8]) -> Vec<u8> {
    let body = raw
        .get(part.offset_body as usize..part.offset_end as usize)
        .unwrap_or_default();
    match part.encoding {
        TransferEncoding::Base64 => base64_lenient(body),
        TransferEncoding::QuotedPrintable => quoted_printable_lenient(body),
        TransferEncoding::None => body.to_vec(),
    }
}

/// Tears a parsed message down level by level. The derived drop of
/// mail-parser's nested-message tree recurses once per forwarded level.
fn dismantle(msg: Message<'_>) {
    let mut stack = vec![msg];
    while let Some(mut m) = stack.pop() {
        for part in &mut m.parts {
            if let PartType::Message(inner) = &mut part.body {
                stack.push(std::mem::take(inner));
            }
        }
    }
}

/// An upper bound on how deeply messages nest: every mention of a nested
/// message type in the raw text, plus the same count inside base64 or
/// quoted-printable bodies (mail-parser decodes and parses those recursively,
/// up to three levels). Counting mentions is cheap and over-counts harmlessly.
fn nested_message_estimate(raw: &[u8], level: usize) -> usize {
    let mut total = count_nested_markers(raw);
    if total == 0 || level >= 4 {
        return total;
    }
    let needle = b"content-transfer-encoding:";
    let mut pos = 0;
    while let Some(found) = find_ci(&raw[pos..], needle) {
        let start = pos + found + needle.len();
        pos = start;
        let value_end = raw[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(raw.len(), |p| start + p);
        let value = String::from_utf8_lossy(&raw[start..value_end])
            .trim()
            .to_ascii_lowercase();
        let base64 = value.starts_with("base64");
        if !base64 && !value.starts_with("quoted-printable") {
            continue;
        }
        let Some(body_start) = find_blank_line(&raw[start..]).map(|p| start + p) else {
            break;
        };
        let body_end = find_boundary_line(&raw[body_start..]).map_or(raw.len(), |p| body_start + p);
        let body = &raw[body_start..body_end];
        let decoded = if base64 {
            base64_lenient(body)
        } else {
            quoted_printable_lenient(body)
        };
        total += nested_message_estimate(&decoded, level + 1);
        if total > MAX_NESTED_MESSAGE_MARKERS {
            break;
        }
        pos = body_end.max(start);
    }
    total
}

fn count_nested_markers(raw: &[u8]) -> usize {
    let mut n = 0;
    for (i, _) in raw.iter().enumerate().filter(|&(_, &b)| b == b'/') {
        let before = &raw[..i];
        let after = &raw[i + 1..];
        let ends = |s: &[u8]| {
            before.len() >= s.len() && before[before.len() - s.len()..].eq_ignore_ascii_case(s)
        };
        let starts = |s: &[u8]| after.len() >= s.len() && after[..s.len()].eq_ignore_ascii_case(s);
        if (ends(b"message") && (starts(b"rfc822") || starts(b"global")))
            || (ends(b"multipart") && starts(b"digest"))
        {
            n += 1;
        }
    }
    n
}

fn find_ci(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
}

/// Offset just past the first empty line.
fn find_blank_line(s: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(p) = s[i..].iter().position(|&b| b == b'\n') {
        let line_start = i + p + 1;
        let rest = &s[line_start..];
        if rest.starts_with(b"\r\n") {
            return Some(line_start + 2);
        }
        if rest.starts_with(b"\n") {
            return Some(line_start + 1);
        }
        i = line_start;
    }
    None
}

/// Offset of the first line starting with `--` (a MIME boundary).
fn find_boundary_line(s: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(p) = s[i..].iter().position(|&b| b == b'\n') {
        let line_start = i + p + 1;
        if s[line_start..].starts_with(b"--") {
            return Some(line_start);
        }
        i = line_start;
    }
    None
}

// ---------------------------------------------------------------------------
// Charsets, RFC 2047, RFC 2231
//
// mail-parser decodes each encoded-word and each RFC 2231 segment on its own
// and has no notion of raw GBK in headers; no crate we know reassembles
// parameters at the byte level with a Chinese fallback, so the few rules that
// matter are written out here.

/// The encoding for a MIME charset label. Every GB label maps to GB18030:
/// mail labelled gb2312 routinely carries GBK-only characters (喆, 堃), and
/// GB18030 is a superset of both.
fn encoding_for_label(label: &str) -> Option<&'static Encoding> {
    let label = label.trim().trim_matches('"').to_ascii_lowercase();
    match label.as_str() {
        "gb2312" | "gbk" | "gb18030" | "cp936" | "x-gbk" | "euc-cn" | "x-euc-cn" | "chinese"
        | "csgb2312" | "gb_2312-80" | "gb_2312" | "ms936" | "windows-936" | "iso-ir-58"
        | "csiso58gb231280" => Some(GB18030),
        _ => Encoding::for_label(label.as_bytes()),
    }
}

/// Header bytes as text: UTF-8 when valid, otherwise GB18030, which is what
/// raw 8-bit headers from Chinese clients are written in. Latin mailers
/// (Netscape 4, Outlook 2000) write them raw too, in the charset of the
/// message's text: with a Latin `hint` the bytes are read as
/// `decode_with_label` reads Latin-labelled text.
fn decode_8bit<'a>(bytes: &'a [u8], hint: Option<&str>) -> Cow<'a, str> {
    if let Ok(s) = std::str::from_utf8(bytes) {
        return Cow::Borrowed(s);
    }
    if hint.and_then(encoding_for_label) == Some(WINDOWS_1252) && !reads_as_gbk_not_latin(bytes) {
        return WINDOWS_1252.decode_without_bom_handling(bytes).0;
    }
    GB18030.decode_without_bom_handling(bytes).0
}

/// Text in a declared charset, with a fallback when the label is missing or
/// plainly wrong: UTF-8 if the bytes are valid UTF-8, otherwise GB18030. A
/// Latin label (iso-8859-1, us-ascii, windows-1252: one decoder that never
/// fails) is doubted, since Chinese clients send GBK labelled us-ascii or
/// iso-8859-1, but kept unless the bytes read as GBK text rather than as
/// Latin text (`reads_as_gbk_not_latin`).
fn decode_with_label(bytes: &[u8], label: Option<&str>) -> String {
    if label.is_some_and(is_utf7_label) {
        return decode_utf7(bytes);
    }
    if bytes.is_ascii() {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    let declared = label.and_then(encoding_for_label);
    if let Some(enc) = declared.filter(|&e| e != WINDOWS_1252) {
        let (text, had_errors) = enc.decode_without_bom_handling(bytes);
        if !had_errors {
            return text.into_owned();
        }
    }
    if let Ok(s) = std::str::from_utf8(bytes) {
        return s.to_string();
    }
    if declared == Some(WINDOWS_1252) && !reads_as_gbk_not_latin(bytes) {
        return WINDOWS_1252
            .decode_without_bom_handling(bytes)
            .0
            .into_owned();
    }
    let (text, had_errors) = GB18030.decode_without_bom_handling(bytes);
    if had_errors && let Some(enc) = declared {
        return enc.decode_without_bom_handling(bytes).0.into_owned();
    }
    text.into_owned()
}

/// UTF-7 (RFC 2152), which Outlook 2000 wrote in headers and bodies.
/// encoding_rs follows WHATWG, which dropped it; mail-parser's public decoder
/// does the base64 runs, but keeps `+-` as written where RFC 2152 reads `+`,
/// so the text is cut at each `+-` outside a run.
fn decode_utf7(bytes: &[u8]) -> String {
    let Some(decode) = mail_parser::decoders::charsets::map::charset_decoder(b"utf-7") else {
        return String::from_utf8_lossy(bytes).into_owned();
    };
    let mut out = String::new();
    let (mut start, mut i) = (0, 0);
    while i < bytes.len() {
        if bytes[i] != b'+' {
            i += 1;
        } else if bytes.get(i + 1) == Some(&b'-') {
            out.push_str(&decode(&bytes[start..i]));
            out.push('+');
            i += 2;
            start = i;
        } else {
            // A run: base64 up to the first byte outside the alphabet.
            i += 1;
            while bytes
                .get(i)
                .is_some_and(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
            {
                i += 1;
            }
        }
    }
    out.push_str(&decode(&bytes[start..]));
    out
}

fn is_utf7_label(label: &str) -> bool {
    let label = label.trim().trim_matches('"').to_ascii_lowercase();
    matches!(
        label.as_str(),
        "utf-7" | "utf7" | "utf_7" | "csutf7" | "unicode-1-1-utf-7" | "x-unicode-2-0-utf-7"
    )
}

/// Whether 8-bit text under a Latin label is GBK that was mislabelled. Valid
/// GBK alone says little: every Latin letter (0xC0–0xFF) followed by any
/// ASCII letter is a GBK pair, so "Fr\xF6sche" decodes as `Fr鰏che`, and a
/// GB2312-range test would still take "informa\xE7\xE3o" (`玢`). What tells
/// them apart is how the high bytes are grouped: Latin text has one accented
/// letter between ASCII letters, now and then two (`ção`, `üü`, `öß`); Chinese
/// text has runs of characters, two bytes each, most of them not Latin
/// letters read one by one (单位 is `µ¥Î»`). So the runs of bytes ≥ 0x80 are
/// counted: one byte, or two Latin letters, count for Latin, any other run for
/// GBK, and GBK must win. Private-use characters (GBK's user-defined areas,
/// where `üü` lands) never come from a Chinese client's text. A lone Chinese
/// character between ASCII whose second byte is ASCII (玥 is `«h`) is read as
/// Latin: that needs a one-character Chinese text, rarer than Latin mail.
fn reads_as_gbk_not_latin(bytes: &[u8]) -> bool {
    let (text, had_errors) = GB18030.decode_without_bom_handling(bytes);
    if had_errors || text.chars().any(|c| ('\u{E000}'..='\u{F8FF}').contains(&c)) {
        return false;
    }
    let latin_letter = |b: u8| b >= 0xC0 && b != 0xD7 && b != 0xF7;
    let (mut gbk, mut latin) = (0usize, 0usize);
    for run in bytes.split(u8::is_ascii).filter(|r| !r.is_empty()) {
        match run {
            [_] => latin += 1,
            [a, b] if latin_letter(*a) && latin_letter(*b) => latin += 1,
            _ => gbk += 1,
        }
    }
    gbk > latin
}

/// Decodes RFC 2047 encoded-words anywhere in `s` (also inside what was a
/// quoted string, which Outlook and Foxmail write). Adjacent words of the same
/// charset are joined at the byte level before decoding, so a word boundary
/// inside a multi-byte character does no harm; white space between adjacent
/// words is dropped, as RFC 2047 says.
fn decode_words(s: &str) -> String {
    let mut out = String::new();
    let mut pending: Option<(String, Vec<u8>)> = None;
    let mut rest = s;
    let flush = |out: &mut String, pending: &mut Option<(String, Vec<u8>)>| {
        if let Some((charset, bytes)) = pending.take() {
            out.push_str(&decode_with_label(&bytes, Some(&charset)));
        }
    };
    while let Some((start, end, charset, bytes)) = next_encoded_word(rest) {
        let between = &rest[..start];
        let adjacent = pending.is_some() && between.trim().is_empty();
        match pending.as_mut() {
            Some((pc, pb)) if adjacent && pc.eq_ignore_ascii_case(&charset) => {
                pb.extend_from_slice(&bytes)
            }
            _ => {
                flush(&mut out, &mut pending);
                if !adjacent {
                    out.push_str(between);
                }
                pending = Some((charset, bytes));
            }
        }
        rest = &rest[end..];
    }
    flush(&mut out, &mut pending);
    out.push_str(rest);
    out
}

/// Finds the next well-formed `=?charset?B|Q?text?=` in `s`: its byte range,
/// charset (RFC 2231 language suffix removed) and decoded bytes.
fn next_encoded_word(s: &str) -> Option<(usize, usize, String, Vec<u8>)> {
    let mut from = 0;
    while let Some(p) = s[from..].find("=?") {
        let start = from + p;
        from = start + 2;
        let rest = &s[start + 2..];
        let Some(q1) = rest.find('?') else { break };
        let charset = &rest[..q1];
        if charset.is_empty() || charset.contains(|c: char| c.is_whitespace() || c == '=') {
            continue;
        }
        let after = &rest[q1 + 1..];
        let mut chars = after.chars();
        // The encoding letter is checked before slicing: it is one ASCII
        // byte only when it is B or Q.
        let (Some(enc @ ('B' | 'b' | 'Q' | 'q')), Some('?')) = (chars.next(), chars.next()) else {
            continue;
        };
        let text_start = start + 2 + q1 + 3;
        let Some(text_len) = s[text_start..].find("?=") else {
            break;
        };
        let text = &s[text_start..text_start + text_len];
        if text.contains(char::is_whitespace) {
            continue;
        }
        let bytes = match enc {
            'B' | 'b' => base64_lenient(text.as_bytes()),
            'Q' | 'q' => q_decode(text.as_bytes()),
            _ => continue,
        };
        let charset = charset.split('*').next().unwrap_or(charset).to_string();
        return Some((start, text_start + text_len + 2, charset, bytes));
    }
    None
}

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

fn q_decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'_' => out.push(b' '),
            b'=' if i + 2 < s.len() => match (hex_value(s[i + 1]), hex_value(s[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'='),
            },
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// Base64 that skips anything outside the alphabet and stops at padding, as
/// mail needs: broken line lengths and stray characters are common.
fn base64_lenient(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3 + 3);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &c in s {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// Quoted-printable that keeps malformed escapes as written.
fn quoted_printable_lenient(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'=' {
            let rest = &s[i + 1..];
            if rest.starts_with(b"\r\n") {
                i += 3;
                continue;
            }
            if rest.starts_with(b"\n") {
                i += 2;
                continue;
            }
            if let (Some(&h), Some(&l)) = (rest.first(), rest.get(1))
                && let (Some(h), Some(l)) = (hex_value(h), hex_value(l))
            {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).and_then(|&c| hex_value(c)),
                b.get(i + 2).and_then(|&c| hex_value(c)),
            )
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Splits a Content-Type / Content-Disposition value (already decoded to
/// text and unfolded) into lower-cased parameter names and raw values. The
/// leading `type/subtype` is skipped. Lenient as mail needs: a backslash in a
/// quoted string only escapes `"` and `\` (Windows paths are written
/// unescaped), an unterminated quote runs to the end, an unquoted value with
/// spaces runs to the next `;`.
fn parse_params(value: &str) -> Vec<(String, String)> {
    let mut fields: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => in_quotes = !in_quotes,
            '\\' if in_quotes && matches!(chars.peek(), Some('"') | Some('\\')) => {
                if let Some(next) = chars.next() {
                    cur.push(next);
                }
            }
            ';' if !in_quotes => fields.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    fields.push(cur);
    fields
        .into_iter()
        .skip(1)
        .filter_map(|f| {
            let (name, value) = f.split_once('=')?;
            let name = name.trim().to_ascii_lowercase();
            (!name.is_empty()).then(|| (name, value.trim().to_string()))
        })
        .collect()
}

/// The decoded value of parameter `key`: RFC 2231 forms (`key*`, `key*0*`,
/// `key*1`, …) win over the plain one. Segments are joined as bytes, then
/// decoded once with the charset of segment 0, which is what RFC 2231 means
/// and what a split inside a character requires.
fn param_value(params: &[(String, String)], key: &str) -> Option<String> {
    let mut single: Option<&str> = None;
    let mut segments: BTreeMap<usize, (&str, bool)> = BTreeMap::new();
    let mut plain: Option<&str> = None;
    for (name, value) in params {
        let Some(rest) = name.strip_prefix(key) else {
            continue;
        };
        if rest.is_empty() {
            plain.get_or_insert(value);
        } else if rest == "*" {
            single.get_or_insert(value);
        } else if let Some(rest) = rest.strip_prefix('*') {
            let (digits, extended) = match rest.strip_suffix('*') {
                Some(d) => (d, true),
                None => (rest, false),
            };
            if let Ok(n) = digits.parse::<usize>() {
                segments.entry(n).or_insert((value, extended));
            }
        }
    }
    if let Some(v) = single {
        let (charset, data) = split_charset(v);
        return non_empty(decode_with_label(&percent_decode(data), charset));
    }
    if !segments.is_empty() {
        let mut charset = None;
        let mut bytes = Vec::new();
        for (i, (value, extended)) in segments.values().enumerate() {
            if *extended {
                let data = if i == 0 {
                    let (c, d) = split_charset(value);
                    charset = c;
                    d
                } else {
                    value
                };
                bytes.extend(percent_decode(data));
            } else {
                // Plain segments are meant to be ASCII; if a client wrote raw
                // 8-bit text there, put it back in the segment charset.
                let enc = charset.and_then(encoding_for_label).unwrap_or(UTF_8);
                bytes.extend_from_slice(&enc.encode(value).0);
            }
        }
        return non_empty(decode_with_label(&bytes, charset));
    }
    plain.and_then(|v| {
        non_empty(if v.contains("=?") {
            decode_words(v)
        } else {
            v.to_string()
        })
    })
}

/// `charset'language'data` → (charset, data); without both quotes the whole
/// value is data.
fn split_charset(v: &str) -> (Option<&str>, &str) {
    let mut it = v.splitn(3, '\'');
    match (it.next(), it.next(), it.next()) {
        (Some(c), Some(_), Some(data)) => (Some(c).filter(|c| !c.is_empty()), data),
        _ => (None, v),
    }
}

/// The last path component, for display: `C:\foo\x.xls` and `../x.xls` give
/// `x.xls`. Control characters are dropped. Nothing is ever written to disk
/// under this name; it only has to read well.
fn base_name(name: &str) -> Option<String> {
    let cleaned: String = name.chars().filter(|c| !c.is_control()).collect();
    let last = cleaned
        .rsplit(['/', '\\'])
        .map(str::trim)
        .find(|s| !s.is_empty())?;
    // A drive-relative Windows name, `C:x.xls`.
    let last = match last.as_bytes() {
        [d, b':', _, ..] if d.is_ascii_alphabetic() => &last[2..],
        _ => last,
    };
    let last = last.trim();
    (!last.is_empty() && last != "." && last != "..").then(|| last.to_string())
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

    fn parse_default(raw: &[u8]) -> ParsedMessage {
        parse(raw, &MessageLimits::default())
    }

    #[test]
    fn automation_flags_are_read_from_the_headers() {
        let flags = |headers: &str| {
            parse_default(format!("{headers}Subject: x\r\n\r\nbody\r\n").as_bytes()).automation
        };
        assert_eq!(flags("From: obj@yj.gov.cn\r\n"), Automation::default());
        assert!(!flags("From: obj@yj.gov.cn\r\n").never_answered());
        assert!(flags("From: a@b.c\r\nPrecedence: Bulk\r\n").bulk);
        assert!(flags("From: a@b.c\r\nPrecedence: junk\r\n").bulk);
        assert!(!flags("From: a@b.c\r\nPrecedence: first-class\r\n").bulk);
        assert!(flags("From: a@yj.gov.cn\r\nList-Id: <list.yj.gov.cn>\r\n").list);
        assert!(flags("From: a@yj.gov.cn\r\nAuto-Submitted: auto-replied\r\n").auto_submitted);
        assert!(!flags("From: a@yj.gov.cn\r\nAuto-Submitted: no\r\n").auto_submitted);
        for robot in ["mailer-daemon@163.com", "noreply@qq.com", "postmaster@x.cn"] {
            assert!(flags(&format!("From: {robot}\r\n")).robot_sender, "{robot}");
        }
        assert!(flags("From: xxdc2004@163.com\r\nX-Xxdc-Outbox: 0001\r\n").ours);
        let replying = flags(
            "From: a@b.c\r\nIn-Reply-To: <xxdc-1@163.com>\r\n\
             References: <m0@yj.gov.cn> <xxdc-1@163.com>\r\n",
        );
        assert_eq!(
            replying.replies_to,
            vec!["<xxdc-1@163.com>", "<m0@yj.gov.cn>", "<xxdc-1@163.com>"]
        );
        assert!(!replying.never_answered());
    }

    #[test]
    fn our_ids_are_found_in_a_base64_returned_original() {
        use base64::Engine;
        let original =
            "Message-ID: <xxdc-0001@163.com>\r\nX-Xxdc-Outbox: 0001\r\nSubject: x\r\n\r\nbody\r\n";
        let b64 = base64::engine::general_purpose::STANDARD.encode(original);
        let bounce = format!(
            "From: MAILER-DAEMON@163.com\r\nSubject: 系统退信\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n\
             --b\r\nContent-Type: text/plain\r\n\r\nundeliverable\r\n\
             --b\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64}\r\n--b--\r\n"
        );
        assert!(!bounce.contains("X-Xxdc-Outbox"));
        let m = parse_default(bounce.as_bytes());
        assert_eq!(m.kind, MessageKind::Bounce);
        assert_eq!(
            m.automation.returned,
            vec![
                Returned::MessageId("<xxdc-0001@163.com>".into()),
                Returned::Outbox("0001".into()),
            ]
        );
    }

    fn names(m: &ParsedMessage) -> Vec<Option<&str>> {
        m.parts.iter().map(|p| p.filename.as_deref()).collect()
    }

    #[test]
    fn raw_gbk_subject_sender_and_filename_are_decoded_as_gb18030() {
        let m = parse_default(fixture!("raw_gbk_headers.eml"));
        assert_eq!(
            m.envelope.subject.as_deref(),
            Some("报送乌牛街道登记表（喆 堃）")
        );
        assert_eq!(m.envelope.from.as_deref(), Some("wnjd@yj.gov.cn"));
        assert_eq!(m.envelope.from_name.as_deref(), Some("乌牛街道办公室"));
        assert_eq!(
            m.envelope.message_id.as_deref(),
            Some("<20070516091200.raw8bit@yj.gov.cn>")
        );
        assert_eq!(
            m.envelope.date.as_deref(),
            Some("2007-05-16T09:12:00+08:00")
        );
        assert_eq!(names(&m), vec![Some("乌牛街道塡表（张喆）.xls")]);
        assert_eq!(m.parts[0].content_type, "application/octet-stream");
        assert_eq!(&m.parts[0].bytes[..8], b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1");
        assert_eq!(m.bodies[0].text.as_deref(), Some("附件为登记表。"));
        assert_eq!(m.kind, MessageKind::Submission);
        assert!(m.warnings.is_empty());
    }

    #[test]
    fn rfc2231_segments_are_joined_as_bytes_before_decoding() {
        let m = parse_default(fixture!("rfc2231.eml"));
        assert_eq!(
            names(&m),
            vec![
                Some("信息员登记表（县林业局）.xls"),
                Some("县林业局分管政务信息领导登记表.ods"),
                Some("登记表.ods"),
            ]
        );
        assert_eq!(m.envelope.from_name.as_deref(), Some("县林业局"));
        assert_eq!(
            m.envelope.subject.as_deref(),
            Some("信息员登记表（县林业局）")
        );
        assert_eq!(m.bodies[0].text.as_deref(), Some("见附件"));
    }

    #[test]
    fn encoded_words_in_quoted_names_paths_and_leaf_kinds() {
        let m = parse_default(fixture!("encoded_word_filename.eml"));
        assert_eq!(
            names(&m),
            vec![
                Some("县民政局登记表.xls"),
                Some("分管政务信息领导登记表（喆）.doc"),
                Some("县文化局登记表.xls"),
                Some("登记表.xls"),
                Some("登记表.xls"),
                Some("passwd.xls"),
                None,
                Some("登记表.txt"),
                Some("盖章页.jpg"),
            ]
        );
        assert_eq!(m.envelope.subject.as_deref(), Some("报送登记表（喆）"));
        let txt = &m.parts[7];
        assert_eq!(txt.content_type, "text/plain");
        assert_eq!(txt.bytes, GB18030.encode("单位：县民政局\r\n").0.as_ref());
        assert_eq!(m.parts[6].content_type, "application/octet-stream");
        assert_eq!(m.parts[6].bytes, vec![0, 1, 2]);
        assert_eq!(m.parts[8].content_type, "image/jpeg");
        assert_eq!(
            m.bodies,
            vec![Body {
                text: Some("附件".into()),
                html: None
            }]
        );
    }

    #[test]
    fn html_only_gbk_body_is_decoded() {
        let m = parse_default(fixture!("html_only_gbk.eml"));
        assert!(m.parts.is_empty());
        assert_eq!(m.bodies.len(), 1);
        assert_eq!(m.bodies[0].text, None);
        assert_eq!(
            m.bodies[0].html.as_deref(),
            Some("<html><body><p>单位：县审计局</p><p>信息员：王喆</p></body></html>\r\n")
        );
        assert_eq!(m.envelope.from.as_deref(), Some("yjsjj@126.com"));
        assert_eq!(m.envelope.from_name.as_deref(), Some("审计局"));
    }

    #[test]
    fn forwarded_messages_are_walked_two_levels_deep() {
        let m = parse_default(fixture!("forwarded_two_levels.eml"));
        assert_eq!(names(&m), vec![Some("中间层.xls"), Some("最里层.docx")]);
        let texts: Vec<_> = m.bodies.iter().map(|b| b.text.as_deref()).collect();
        assert_eq!(
            texts,
            vec![Some("最外层正文"), Some("中间层正文"), Some("最里层正文")]
        );
        assert_eq!(
            m.envelope.subject.as_deref(),
            Some("转发：转发：原始登记表")
        );
        assert_eq!(m.kind, MessageKind::Submission);
    }

    #[test]
    fn forwarded_messages_beyond_max_depth_are_cut_with_a_warning() {
        // Levels: outer multipart 0, forwarded message 1, its multipart 2,
        // the second forwarded message 3.
        let limits = MessageLimits {
            max_depth: 3,
            ..MessageLimits::default()
        };
        let m = parse(fixture!("forwarded_two_levels.eml"), &limits);
        assert_eq!(names(&m), vec![Some("中间层.xls")]);
        assert_eq!(m.bodies.len(), 2);
        assert_eq!(
            m.warnings,
            vec!["邮件嵌套层数超过上限 3，更深层的内容未读取".to_string()]
        );
    }

    #[test]
    fn multipart_report_bounce_lists_only_the_returned_originals_files() {
        let m = parse_default(fixture!("bounce_report.eml"));
        assert_eq!(m.kind, MessageKind::Bounce);
        assert_eq!(
            m.bodies,
            vec![Body {
                text: Some("您发送的邮件无法投递。".into()),
                html: None
            }]
        );
        assert_eq!(m.envelope.from.as_deref(), Some("postmaster@163.com"));
        assert_eq!(m.envelope.auto_submitted.as_deref(), Some("auto-replied"));
    }

    #[test]
    fn bounce_without_report_is_recognised_by_sender_and_subject() {
        let raw = b"From: MAILER-DAEMON@mx.yj.gov.cn\r\nSubject: Undelivered Mail Returned to Sender\r\n\
Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nfailed\r\n\
--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: x\r\nContent-Type: application/octet-stream; name=a.xls\r\n\r\nxx\r\n--b--\r\n";
        let m = parse_default(raw);
        assert_eq!(m.kind, MessageKind::Bounce);
        assert_eq!(names(&m), vec![Some("a.xls")], "the returned file, listed");
        assert_eq!(m.bodies.len(), 1, "its text is not the bounce's body");
        let raw = "From: \"系统管理员\" <postmaster@163.com>\r\nSubject: 系统退信\r\n\r\nx\r\n";
        assert_eq!(parse_default(raw.as_bytes()).kind, MessageKind::Bounce);
    }

    #[test]
    fn auto_reply_is_recognised() {
        let m = parse_default(fixture!("auto_reply.eml"));
        assert_eq!(m.kind, MessageKind::AutoReply);
        assert_eq!(
            m.envelope.subject.as_deref(),
            Some("自动回复：关于报送登记表的通知")
        );
        assert_eq!(m.envelope.in_reply_to.as_deref(), Some("<notice@163.com>"));
        assert_eq!(m.envelope.list_id.as_deref(), Some("<notices.yj.gov.cn>"));
        assert_eq!(
            m.bodies[0].text.as_deref(),
            Some("您好，我近期外出，邮件已收到。")
        );

        let by_subject = |s: &str| {
            parse_default(format!("From: a@b.c\r\nSubject: {s}\r\n\r\nx\r\n").as_bytes()).kind
        };
        assert_eq!(
            by_subject("Automatic reply: 登记表"),
            MessageKind::AutoReply
        );
        assert_eq!(by_subject("Out of Office: x"), MessageKind::AutoReply);
        assert_eq!(
            by_subject("Re: 关于报送登记表的通知"),
            MessageKind::Submission
        );
        let no = parse_default(b"From: a@b.c\r\nAuto-Submitted: no\r\nSubject: x\r\n\r\nx\r\n");
        assert_eq!(no.kind, MessageKind::Submission);
        let prec =
            parse_default(b"From: a@b.c\r\nPrecedence: auto_reply\r\nSubject: x\r\n\r\nx\r\n");
        assert_eq!(prec.kind, MessageKind::AutoReply);
    }

    #[test]
    fn ten_thousand_parts_stop_at_max_parts() {
        let start = std::time::Instant::now();
        let m = parse_default(fixture!("many_parts.eml"));
        assert_eq!(m.parts.len(), 200);
        assert!(
            m.parts
                .iter()
                .all(|p| p.filename.is_none() && p.bytes == b"x")
        );
        assert_eq!(
            m.warnings,
            vec!["邮件部件数超过上限 200，其余部件未读取".to_string()]
        );
        assert!(start.elapsed() < std::time::Duration::from_secs(10));
    }

    #[test]
    fn two_hundred_deep_multipart_nesting_stops_at_max_depth() {
        let m = parse_default(fixture!("deep_nesting.eml"));
        assert!(m.parts.is_empty());
        assert_eq!(
            m.warnings,
            vec!["邮件嵌套层数超过上限 8，更深层的内容未读取".to_string()]
        );
        let deep = MessageLimits {
            max_depth: 1000,
            ..MessageLimits::default()
        };
        let m = parse(fixture!("deep_nesting.eml"), &deep);
        assert!(
            m.parts.is_empty(),
            "capped at {HARD_MAX_DEPTH} levels whatever the caller asks"
        );
    }

    #[test]
    fn deeply_nested_forwarded_messages_do_not_overflow_the_stack() {
        let mut plain = String::new();
        for _ in 0..20_000 {
            plain.push_str("Subject: x\r\nContent-Type: message/rfc822\r\n\r\n");
        }
        plain.push_str("Subject: leaf\r\n\r\nhello\r\n");
        let m = parse_default(plain.as_bytes());
        assert_eq!(m.envelope.subject.as_deref(), Some("x"));
        assert!(m.warnings[0].contains("只读取了信头"));

        // Hidden inside a base64 body, where mail-parser recurses.
        let inner: String = (0..5_000)
            .map(|_| "Content-Type: message/rfc822\r\n\r\n")
            .collect();
        let encoded = base64_encode(inner.as_bytes());
        let raw = format!(
            "Subject: e\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n{encoded}\r\n"
        );
        let m = parse_default(raw.as_bytes());
        assert_eq!(m.envelope.subject.as_deref(), Some("e"));
        assert!(m.warnings[0].contains("只读取了信头"));
    }

    #[test]
    fn max_bytes_stops_the_walk() {
        let limits = MessageLimits {
            max_bytes: 600,
            ..MessageLimits::default()
        };
        let m = parse(fixture!("encoded_word_filename.eml"), &limits);
        assert_eq!(m.parts.len(), 1);
        assert_eq!(
            m.warnings,
            vec!["邮件解码后总大小超过上限 600 字节，其余部件未读取".to_string()]
        );
    }

    #[test]
    fn garbage_gives_an_empty_envelope() {
        for raw in [
            &b""[..],
            b"\x00\x01\x02\xff\xfe",
            b"PK\x03\x04\x14\x00\x00\x00",
        ] {
            let m = parse_default(raw);
            assert_eq!(m.envelope, Envelope::default());
            assert!(m.parts.is_empty());
        }
    }

    #[test]
    fn date_keeps_its_own_offset() {
        let m = parse_default(b"Date: Tue, 1 May 2007 17:05:09 -0500\r\nSubject: x\r\n\r\nx");
        assert_eq!(
            m.envelope.date.as_deref(),
            Some("2007-05-01T17:05:09-05:00")
        );
        let m = parse_default(b"Date: Tue, 1 May 2007 17:05:09 +0000\r\nSubject: x\r\n\r\nx");
        assert_eq!(
            m.envelope.date.as_deref(),
            Some("2007-05-01T17:05:09+00:00")
        );
    }

    #[test]
    fn header_level_helpers() {
        assert_eq!(decode_words("=?gb2312?B?1Q==?= =?gb2312?B?4w==?=x"), "浙x");
        assert_eq!(decode_words("a =?utf-8?Q?=E4=B8=AD_b?= c"), "a 中 b c");
        assert_eq!(decode_words("=?broken"), "=?broken");
        assert_eq!(
            base_name("C:\\Documents and Settings\\x.xls").as_deref(),
            Some("x.xls")
        );
        assert_eq!(base_name("../../x.xls").as_deref(), Some("x.xls"));
        assert_eq!(base_name("C:x.xls").as_deref(), Some("x.xls"));
        assert_eq!(base_name(".."), None);
        assert_eq!(
            decode_with_label(&GB18030.encode("喆").0, Some("us-ascii")),
            "喆"
        );
        assert_eq!(decode_with_label("喆".as_bytes(), Some("gb2312")), "喆");
    }

    /// A message with one Latin-labelled (or unlabelled) text body and one
    /// attachment whose Content-Disposition is `disposition`; the body bytes
    /// are written 8-bit, as is.
    fn latin_message(subject: &str, disposition: &str, label: &str, body: &[u8]) -> Vec<u8> {
        let mut raw = format!(
            "From: a@example.com\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
             --b\r\nContent-Type: text/plain{label}\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        )
        .into_bytes();
        raw.extend_from_slice(body);
        raw.extend_from_slice(
            format!(
                "\r\n--b\r\nContent-Type: application/octet-stream\r\n\
                 Content-Disposition: {disposition}\r\n\r\nxx\r\n--b--\r\n"
            )
            .as_bytes(),
        );
        raw
    }

    /// Regression: mail properly labelled iso-8859-1 was read as GB18030
    /// (`Die Hasen und die Fr鰏che`, `Eelanal\u{e407}si p鋜ing.jpg`), since a Latin
    /// letter followed by an ASCII one is a valid GBK pair.
    #[test]
    fn latin1_labelled_words_filenames_and_bodies_stay_latin() {
        assert_eq!(
            decode_words("=?iso-8859-1?Q?Die_Hasen_und_die_Fr=F6sche?="),
            "Die Hasen und die Frösche"
        );
        // Two letters in a row are a valid GB2312 pair (玢, 殚, 鲞).
        assert_eq!(
            decode_words("=?ISO-8859-1?Q?informa=E7=E3o_cr=E9=E9e_Gr=F6=DFe?="),
            "informação créée Größe"
        );
        assert_eq!(
            decode_with_label(b"caf\xe9 \x93quoted\x94", Some("us-ascii")),
            "café “quoted”"
        );
        let raw = latin_message(
            "=?iso-8859-1?Q?Die_Hasen_und_die_Fr=F6sche?=",
            "attachment;\r\n\tfilename*=ISO-8859-1''Eelanal%FC%FCsi%20p%E4ring.jpg",
            "; charset=\"iso-8859-1\"",
            b"Die Fr\xf6sche \xe4\xdfen Gr\xfc\xdfe, \xabvoil\xe0\xbb.",
        );
        let m = parse_default(&raw);
        assert_eq!(
            m.envelope.subject.as_deref(),
            Some("Die Hasen und die Frösche")
        );
        assert_eq!(names(&m), vec![Some("Eelanalüüsi päring.jpg")]);
        assert_eq!(
            m.bodies[0].text.as_deref(),
            Some("Die Frösche äßen Grüße, «voilà».")
        );
    }

    /// Chinese clients label GBK iso-8859-1 or us-ascii, or write it raw:
    /// that must still read as Chinese, also a GBK-only character whose
    /// second byte is ASCII (玥 is 0xAB 0x68).
    #[test]
    fn gbk_under_a_latin_label_is_still_read_as_chinese() {
        let gbk = |s: &str| GB18030.encode(s).0.into_owned();
        for label in ["iso-8859-1", "us-ascii", "windows-1252", "latin1"] {
            for text in [
                "单位：县民政局",
                "张玥",
                "喆",
                "1号楼",
                "信息员登记表（张玥）.xls",
            ] {
                assert_eq!(decode_with_label(&gbk(text), Some(label)), text, "{label}");
            }
        }
        let hex: String = gbk("登记表（张玥）.xls")
            .iter()
            .map(|b| format!("%{b:02X}"))
            .collect();
        let raw = latin_message(
            &format!(
                "=?iso-8859-1?B?{}?=",
                base64_encode(&gbk("报送民政局登记表"))
            ),
            &format!("attachment; filename*=iso-8859-1''{hex}"),
            "; charset=us-ascii",
            &gbk("单位：县民政局\r\n姓名：张玥"),
        );
        let m = parse_default(&raw);
        assert_eq!(m.envelope.subject.as_deref(), Some("报送民政局登记表"));
        assert_eq!(names(&m), vec![Some("登记表（张玥）.xls")]);
        assert_eq!(
            m.bodies[0].text.as_deref(),
            Some("单位：县民政局\r\n姓名：张玥")
        );
        // Without a label, 8-bit text is GBK whatever it looks like.
        let raw = latin_message("x", "attachment", "", &gbk("玥"));
        assert_eq!(parse_default(&raw).bodies[0].text.as_deref(), Some("玥"));
    }

    /// Regression: Netscape 4 and Outlook 2000 write raw 8-bit Latin-1 in
    /// the subject and in file names (`Fr\xF6sche`), in the charset their text
    /// part declares; raw GBK stays GBK unless the message says Latin and the
    /// bytes do not read as Chinese.
    #[test]
    fn raw_8bit_headers_follow_a_latin_charset_of_the_message() {
        let mut raw = latin_message(
            "Die Hasen und die Fr\u{FFFD}sche",
            "attachment; filename=\"HasenundFr\u{FFFD}sche.txt\"",
            "; charset=\"iso-8859-1\"",
            b"Fr\xf6sche",
        );
        let raw_latin = |raw: &mut Vec<u8>| {
            // U+FFFD is EF BF BD in UTF-8: put the raw byte in its place.
            while let Some(at) = raw.windows(3).position(|w| w == "\u{FFFD}".as_bytes()) {
                raw.splice(at..at + 3, [0xF6]);
            }
        };
        raw_latin(&mut raw);
        let m = parse_default(&raw);
        assert_eq!(
            m.envelope.subject.as_deref(),
            Some("Die Hasen und die Frösche")
        );
        assert_eq!(names(&m), vec![Some("HasenundFrösche.txt")]);

        let gbk = |s: &str| GB18030.encode(s).0.into_owned();
        for label in ["; charset=us-ascii", "; charset=gbk", ""] {
            let mut raw = b"From: ".to_vec();
            raw.extend(gbk(
                "乌牛街道 <wnjd@yj.gov.cn>\r\nSubject: 报送登记表（张玥）\r\n",
            ));
            raw.extend(
                latin_message(
                    "x",
                    "attachment; filename=\"\u{FFFD}.xls\"",
                    label,
                    &gbk("见附件"),
                )
                .splitn(3, |&b| b == b'\n')
                .nth(2)
                .unwrap_or_default(),
            );
            let at = raw
                .windows(3)
                .position(|w| w == "\u{FFFD}".as_bytes())
                .expect("placeholder");
            raw.splice(at..at + 3, gbk("登记表"));
            let m = parse_default(&raw);
            assert_eq!(
                m.envelope.subject.as_deref(),
                Some("报送登记表（张玥）"),
                "{label}"
            );
            assert_eq!(m.envelope.from_name.as_deref(), Some("乌牛街道"), "{label}");
            assert_eq!(names(&m), vec![Some("登记表.xls")], "{label}");
        }
    }

    /// Regression: UTF-7 encoded words and bodies (Outlook 2000) were left
    /// as written (`=?utf-7?Q?Die_Hasen_und_die_Fr+APY-sche…?=`).
    #[test]
    fn utf7_words_and_bodies_are_decoded() {
        assert_eq!(
            decode_words("=?utf-7?Q?Die_Hasen_und_die_Fr+APY-sche_=28Microsoft_Outlook_00=29?="),
            "Die Hasen und die Frösche (Microsoft Outlook 00)"
        );
        assert_eq!(
            decode_words("=?UTF-7?B?SitBUHctcmdlbiBTY2htK0FQdy1yZ2Vu?="),
            "Jürgen Schmürgen"
        );
        assert_eq!(
            decode_with_label(b"+ZYeB9FH6ckh5Pg-, 1980. 1+-1=2", Some("\"UTF-7\"")),
            "文致出版社, 1980. 1+1=2"
        );
        assert_eq!(decode_utf7(b"+AGE-+-+-+AGI-"), "a++b");
        assert_eq!(decode_utf7(b"a+-"), "a+");
        let raw = latin_message(
            "=?utf-7?Q?+U1VPTQ-?=",
            "attachment",
            "; charset=utf-7",
            b"+U1VPTf8a-",
        );
        let m = parse_default(&raw);
        assert_eq!(m.envelope.subject.as_deref(), Some("单位"));
        assert_eq!(m.bodies[0].text.as_deref(), Some("单位："));
    }

    #[test]
    fn looks_like_message_tells_eml_from_attachments() {
        assert!(looks_like_message(
            b"Received: from x\r\n\tby y\r\nFrom: a@b\r\n"
        ));
        assert!(looks_like_message(b"Return-Path: <a@b>\r\n"));
        assert!(looks_like_message(
            b"From a@b Mon May 21 13:41:55 2007\nFrom: a@b\n"
        ));
        assert!(looks_like_message(b"X-Mailer: Foxmail\r\nFrom: a@b\r\n"));
        assert!(!looks_like_message(b"PK\x03\x04\x14\x00"));
        assert!(!looks_like_message(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"));
        assert!(!looks_like_message("单位：县民政局\r\n".as_bytes()));
        assert!(!looks_like_message(b"X-Note: lonely\r\n\r\nbody"));
    }

    /// Text leaves are decoded again from the raw message (see `leaf_bytes`);
    /// this holds only if our reading of mail-parser's body offsets is right,
    /// which the binary leaves, decoded by mail-parser itself, can confirm.
    #[test]
    fn raw_body_offsets_agree_with_mail_parser() {
        let mut raws: Vec<Vec<u8>> = vec![
            fixture!("raw_gbk_headers.eml").to_vec(),
            fixture!("rfc2231.eml").to_vec(),
            fixture!("encoded_word_filename.eml").to_vec(),
            fixture!("forwarded_two_levels.eml").to_vec(),
        ];
        let dir = std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/golden/cases"
        ));
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.path().extension().and_then(|e| e.to_str()) == Some("eml") {
                raws.push(std::fs::read(entry.path()).expect("golden case readable"));
            }
        }
        // The mail fixtures alone must exercise the comparison; the golden
        // cases add more.
        let fixtures = 3;
        let mut compared = 0;
        for raw in &raws {
            let msg = MessageParser::default().parse(raw).expect("parses");
            let mut stack = vec![&msg];
            while let Some(m) = stack.pop() {
                for part in &m.parts {
                    match &part.body {
                        PartType::Binary(b) | PartType::InlineBinary(b) => {
                            assert_eq!(transfer_decode(part, m.raw_message.as_ref()), b.as_ref());
                            compared += 1;
                        }
                        PartType::Message(inner) => stack.push(inner),
                        _ => {}
                    }
                }
            }
        }
        assert!(compared >= fixtures, "{compared}");
    }

    /// Mangled copies of every fixture, and odd header text: no panic.
    #[test]
    fn mangled_input_never_panics() {
        assert_eq!(
            decode_words("=?gbk?中?x?= =?=?=?Q?"),
            "=?gbk?中?x?= =?=?=?Q?"
        );
        assert_eq!(
            param_value(&parse_params("a; filename*0*=x; filename*=''"), "filename"),
            None
        );
        let fixtures: [&[u8]; 6] = [
            fixture!("raw_gbk_headers.eml"),
            fixture!("rfc2231.eml"),
            fixture!("encoded_word_filename.eml"),
            fixture!("forwarded_two_levels.eml"),
            fixture!("bounce_report.eml"),
            fixture!("html_only_gbk.eml"),
        ];
        let mut seed: u64 = 0x2007_0516;
        let mut next = || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as usize
        };
        for round in 0..600 {
            let mut raw = fixtures[round % fixtures.len()].to_vec();
            for _ in 0..1 + next() % 8 {
                let at = next() % raw.len();
                match next() % 3 {
                    0 => raw[at] = b"=?\"';\r\n*%\xb5"[next() % 10],
                    1 => raw.truncate(at),
                    _ => {
                        raw.remove(at);
                    }
                }
                if raw.is_empty() {
                    break;
                }
            }
            let _ = parse_default(&raw);
        }
    }

    fn base64_encode(data: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for (i, chunk) in data.chunks(3).enumerate() {
            let b = [
                chunk[0],
                chunk.get(1).copied().unwrap_or(0),
                chunk.get(2).copied().unwrap_or(0),
            ];
            let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
            for k in 0..4 {
                if k <= chunk.len() {
                    out.push(A[(n >> (18 - 6 * k) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
            if i % 19 == 18 {
                out.push_str("\r\n");
            }
        }
        out
    }

    /// The golden cases (real-looking submissions with the parse output
    /// expected of them): every message decodes to the expected sender,
    /// subject, kind and file names.
    #[test]
    fn golden_cases_decode_to_expected_headers_and_filenames() {
        let dir = std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/golden/cases"
        ));
        let mut checked = 0;
        for entry in std::fs::read_dir(dir).expect("golden cases").flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("eml") {
                continue;
            }
            let raw = std::fs::read(&path).expect("case readable");
            let expected: serde_json::Value = serde_json::from_slice(
                &std::fs::read(path.with_extension("json")).expect("expected file"),
            )
            .expect("expected json");
            let m = parse_default(&raw);
            let name = path.display().to_string();
            assert!(looks_like_message(&raw), "{name}");
            assert_eq!(
                m.envelope.from.as_deref(),
                expected["message"]["from"].as_str(),
                "{name}"
            );
            assert_eq!(
                m.envelope.subject.as_deref(),
                expected["message"]["subject"].as_str(),
                "{name}"
            );
            // The expected list also names the members of a zip, right after it.
            let want: Vec<&str> = expected["attachments"]
                .as_array()
                .map(|a| a.iter().filter_map(|x| x["filename"].as_str()).collect())
                .unwrap_or_default();
            let mut got = Vec::new();
            for part in &m.parts {
                got.push(part.filename.clone().unwrap_or_default());
                if part.bytes.starts_with(b"PK\x03\x04")
                    && got.last().is_some_and(|f| f.ends_with(".zip"))
                {
                    let members =
                        crate::parse::container::read_zip(&part.bytes, &Default::default())
                            .expect("zip");
                    got.extend(members.into_iter().map(|m| m.name));
                }
            }
            assert_eq!(got, want, "{name}");
            assert_eq!(Some(m.kind.as_str()), expected["kind"].as_str(), "{name}");
            assert!(m.warnings.is_empty(), "{name}: {:?}", m.warnings);
            checked += 1;
        }
        assert!(checked >= 20, "only {checked} golden messages");
    }
}
