//! Where a typed body stops being the sender's own words: the quoted
//! message below a reply (often the office's own notice, with the blank
//! form and the office's phone numbers) or a forwarded one.
//!
//! Mail clients mark the quoted part with a line of their own — Foxmail
//! `======= 2007-05-15 您在来信中写道：=======`, Outlook `-----原始邮件-----`
//! or `-----Original Message-----`, QQ `------------------ 原始邮件
//! ------------------`, 163 `---- 回复的原邮件 ----`, Gmail and Apple
//! `在 2007年5月15日 …写道：` / `On … wrote:` — or prefix every quoted line
//! with `>`. A forward is marked `---------- Forwarded message ---------`,
//! `-------- 转发邮件信息 --------` and the like.
//!
//! [`split`] returns the sender's own text and what follows the first such
//! line. Whether the rest is read is the pipeline's decision: a reply's
//! quote never is; a forward (a secretary passing on the officer's mail)
//! is, unless it comes from the office itself.

/// What the marker line says the rest is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuoteKind {
    /// A reply's quote of the message answered.
    Reply,
    /// A forwarded message.
    Forward,
    /// `原始邮件` / `Original Message`: clients use it for replies and
    /// forwards alike; the subject decides.
    Original,
}

/// The part below the marker line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quoted {
    pub kind: QuoteKind,
    pub text: String,
    /// The quoted message's sender, from a `发件人:`/`From:` line right
    /// below the marker, when there is one.
    pub from: Option<String>,
}

/// Lines from a marker on that are read as the quoted message's headers.
const HEADER_LINES: usize = 8;

/// Splits a plain-text body into the sender's own text (`>`-quoted lines
/// left out) and the quoted or forwarded message below it.
pub fn split(text: &str) -> (String, Option<Quoted>) {
    let mut own = String::new();
    let all: Vec<&str> = text.lines().collect();
    for (i, &line) in all.iter().enumerate() {
        let kind = marker(line).or_else(|| header_block(&all[i..]).then_some(QuoteKind::Original));
        if let Some(kind) = kind {
            // A header block's own first line is part of the quote.
            let from_here = kind == QuoteKind::Original && header_value(line, FROM).is_some();
            let rest: Vec<&str> = all[if from_here { i } else { i + 1 }..].to_vec();
            let from = rest
                .iter()
                .take(HEADER_LINES)
                .find_map(|l| header_value(l, FROM));
            return (
                own,
                Some(Quoted {
                    kind,
                    text: rest.join("\n"),
                    from,
                }),
            );
        }
        let trimmed = line.trim_start();
        if trimmed.starts_with('>') || trimmed.starts_with('＞') {
            continue;
        }
        own.push_str(line);
        own.push('\n');
    }
    (own, None)
}

/// Whether the message is a forward by its subject (`转发：`, `Fw:`,
/// `Fwd:`), which decides a [`QuoteKind::Original`] marker.
pub fn subject_forwards(subject: &str) -> bool {
    let s = subject.trim_start().to_lowercase();
    ["转发", "轉寄", "fw:", "fw：", "fwd:", "fwd："]
        .iter()
        .any(|p| s.starts_with(p))
}

/// The kind of marker `line` is, if it is one.
pub fn marker(line: &str) -> Option<QuoteKind> {
    let t = line.trim();
    if t.is_empty() || t.chars().count() > 200 {
        return None;
    }
    let lower = t.to_lowercase();
    let core: String = t
        .trim_matches(|c: char| c == '-' || c == '=' || c == '_' || c.is_whitespace())
        .split_whitespace()
        .collect();
    let core_lower = core.to_lowercase();
    let dashed = t.starts_with("--") || t.starts_with("==") || t.starts_with("__");
    if dashed {
        if ["原始邮件", "原始郵件", "originalmessage"]
            .iter()
            .any(|k| core_lower == *k)
        {
            return Some(QuoteKind::Original);
        }
        if ["回复的原邮件", "回覆的原郵件"]
            .iter()
            .any(|k| core_lower == *k)
        {
            return Some(QuoteKind::Reply);
        }
        if [
            "forwardedmessage",
            "转发邮件信息",
            "转发的邮件",
            "转发邮件",
            "轉寄郵件",
            "以下为转发邮件",
        ]
        .iter()
        .any(|k| core_lower == *k)
        {
            return Some(QuoteKind::Forward);
        }
        if core.contains("来信中写道") || core.contains("來信中寫道") {
            return Some(QuoteKind::Reply);
        }
    }
    if lower.starts_with("begin forwarded message") {
        return Some(QuoteKind::Forward);
    }
    // Foxmail without the rules, Gmail and Apple in Chinese, English clients.
    if t.contains("来信中写道") || t.contains("來信中寫道") {
        return Some(QuoteKind::Reply);
    }
    let ends_wrote = t.ends_with("写道：") || t.ends_with("写道:") || t.ends_with("寫道：");
    if ends_wrote && (t.starts_with('在') || t.starts_with("于") || t.contains('@')) {
        return Some(QuoteKind::Reply);
    }
    if lower.starts_with("on ") && (lower.ends_with("wrote:") || lower.ends_with("wrote：")) {
        return Some(QuoteKind::Reply);
    }
    None
}

/// The names of a quoted message's sender line.
const FROM: &[&str] = &["发件人", "From", "寄件者", "發件人"];
/// The names of a quoted message's date line.
const SENT: &[&str] = &[
    "发送时间",
    "Sent",
    "日期",
    "Date",
    "時間",
    "发送日期",
    "寄件日期",
];

/// Whether `lines` start the header block Outlook puts above a quoted or
/// forwarded message without any marker of its own (2010 and later: an
/// optional rule of underscores, then `发件人:`/`From:` and, within the
/// next few lines, `发送时间:`/`Sent:`). Outlook writes it for replies and
/// forwards alike (an [`QuoteKind::Original`]).
pub fn header_block(lines: &[&str]) -> bool {
    let mut rest = lines;
    let is_rule = |l: &str| {
        let t = l.trim();
        t.chars().count() >= 10 && t.chars().all(|c| c == '_' || c == '-' || c == '—')
    };
    if rest.first().is_some_and(|l| is_rule(l)) {
        rest = &rest[1..];
    }
    let Some(first) = rest.first() else {
        return false;
    };
    header_value(first, FROM).is_some()
        && rest[1..]
            .iter()
            .take(4)
            .any(|l| header_value(l, SENT).is_some())
}

/// The value of a `Name: value` header line among `names`.
fn header_value(line: &str, names: &[&str]) -> Option<String> {
    let t = line.trim().trim_start_matches(['*', '>', ' ']);
    let (name, value) = t.split_once([':', '：'])?;
    let name = name.trim().trim_matches('*');
    names
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n))
        .then(|| value.trim().to_string())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_markers_of_the_usual_clients() {
        for line in [
            "======= 2007-05-15 10:12:01 您在来信中写道：=======",
            "-----原始邮件-----",
            "----- 原始邮件 -----",
            "------------------ 原始邮件 ------------------",
            "-----Original Message-----",
            "---- 回复的原邮件 ----",
            "在 2007年5月15日 上午10:12，信息督查科 <xxdc2004@163.com> 写道：",
            "在2007-05-15 10:12:01，\"信息督查科\" <xxdc2004@163.com> 写道：",
            "On Tue, May 15, 2007 at 10:12 AM 信息督查科 <xxdc2004@163.com> wrote:",
        ] {
            assert!(
                matches!(marker(line), Some(QuoteKind::Reply | QuoteKind::Original)),
                "{line}"
            );
        }
        for line in [
            "---------- Forwarded message ---------",
            "-------- 转发邮件信息 --------",
            "Begin forwarded message:",
        ] {
            assert_eq!(marker(line), Some(QuoteKind::Forward), "{line}");
        }
    }

    #[test]
    fn ordinary_lines_are_not_markers() {
        for line in [
            "单位：永嘉县民政局",
            "信息员：胡峰平（文秘），男",
            "请于5月20日前报送",
            "---",
            "分管领导写道：已审核",
            "==========",
        ] {
            assert_eq!(marker(line), None, "{line}");
        }
    }

    #[test]
    fn the_quote_is_split_off_with_its_sender() {
        let body = "单位：桥头镇\n信息员：张三\n\n-----原始邮件-----\n发件人: \"信息督查科\" <xxdc2004@163.com>\n发送时间: 2007年5月10日\n主题: 关于报送的通知\n联系电话：0577-67221531\n";
        let (own, quoted) = split(body);
        assert_eq!(own, "单位：桥头镇\n信息员：张三\n\n");
        let quoted = quoted.expect("a quote");
        assert_eq!(quoted.kind, QuoteKind::Original);
        assert_eq!(
            quoted.from.as_deref(),
            Some("\"信息督查科\" <xxdc2004@163.com>")
        );
        assert!(quoted.text.contains("0577-67221531"));
    }

    #[test]
    fn outlook_header_blocks_start_a_quote() {
        for text in [
            "单位：桥头镇\n\n________________________________\n发件人: 信息督查科 [mailto:xxdc2004@163.com]\n发送时间: 2007年5月14日 10:00\n主题: 通知\n\n单位：永嘉县××局\n",
            "单位：桥头镇\n\nFrom: xxdc2004@163.com\nSent: Monday, May 14, 2007 10:00 AM\nTo: a@b.cn\n单位：永嘉县××局\n",
        ] {
            let (own, quoted) = split(text);
            assert_eq!(own.trim(), "单位：桥头镇", "{text}");
            let quoted = quoted.expect("a quote");
            assert_eq!(quoted.kind, QuoteKind::Original);
            assert!(quoted.from.expect("from").contains("xxdc2004@163.com"));
            assert!(quoted.text.contains("永嘉县××局"));
        }
        // A form's own 发件人 line without a date under it is not a quote.
        assert!(!header_block(&[
            "发件人：桥头镇党政办",
            "手机：13957785650"
        ]));
    }

    #[test]
    fn angle_quoted_lines_are_left_out() {
        let (own, quoted) = split(
            "信息员：张三\n> 联系电话：0577-67221531\n＞ 传真：67221532\n手机：13905771234\n",
        );
        assert_eq!(own, "信息员：张三\n手机：13905771234\n");
        assert!(quoted.is_none());
    }

    #[test]
    fn forward_subjects() {
        assert!(subject_forwards("转发：登记表"));
        assert!(subject_forwards("Fwd: 登记表"));
        assert!(subject_forwards("FW: 登记表"));
        assert!(!subject_forwards("回复：登记表"));
        assert!(!subject_forwards("登记表（转发给信息员）"));
    }
}
