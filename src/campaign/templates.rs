//! Subject and body templates of the mails we send (回执, 催报提醒, 逾期通知,
//! 通报), with named placeholders such as `{unit_name}` and `{remaining}`.
//!
//! Templates live in `config/templates/` as `KIND.subject` and `KIND.txt`;
//! the built-in defaults below are used for any file that is missing.
//! Values are escaped for where they go: a value put into a subject (a
//! header) loses every line break and control character, so a unit name
//! cannot inject headers. Hand-written because the syntax is a single
//! `{name}` lookup; a template engine would add nothing but surface.

use std::collections::BTreeMap;
use std::path::Path;

pub use crate::store::outbox::MailKind;

fn default_subject(kind: MailKind) -> &'static str {
    match kind {
        MailKind::Ack => "回执：已收到{unit_name}的分管政务信息领导及信息员登记表",
        MailKind::AckUnmatched => "回执：已收到您报送的登记表",
        MailKind::Reminder => "提醒：请{unit_name}于{deadline}前报送分管政务信息领导及信息员登记表",
        MailKind::OverdueReminder => "催报：{unit_name}的分管政务信息领导及信息员登记表尚未收到",
        MailKind::OverdueReport => "通报：截至{now}尚未报送登记表的单位（{count}个）",
        MailKind::RemindersHeld => "请注意：催报提醒已暂停（{reason}）",
        MailKind::CorrectionRequest => {
            "请核对：{unit_name}的分管政务信息领导及信息员登记表需要更正"
        }
    }
}

fn default_body(kind: MailKind) -> &'static str {
    match kind {
        MailKind::Ack => DEFAULT_ACK,
        MailKind::AckUnmatched => DEFAULT_ACK_UNMATCHED,
        MailKind::Reminder => DEFAULT_REMINDER,
        MailKind::OverdueReminder => DEFAULT_OVERDUE_REMINDER,
        MailKind::OverdueReport => DEFAULT_OVERDUE_REPORT,
        MailKind::RemindersHeld => DEFAULT_REMINDERS_HELD,
        MailKind::CorrectionRequest => DEFAULT_CORRECTION_REQUEST,
    }
}

const DEFAULT_CORRECTION_REQUEST: &str = "{unit_name}：

感谢您单位报送《分管政务信息领导及信息员登记表》。经核对，以下内容缺少或有误：

{items}
{note}
请于{deadline}前补充或更正后，直接回复本邮件或重新发送登记表。谢谢！

{office}
";

const DEFAULT_ACK: &str = "{unit_name}：

您单位报送的《分管政务信息领导及信息员登记表》已收到并登记，内容如下：

分管领导：{leader_name}（{leader_title}），手机 {leader_mobile}
信息员：{officer_name}（{officer_title}），手机 {officer_mobile}，电子邮箱 {officer_email}

{problems}
如有错误，请直接回复本邮件或重新发送更正后的登记表。

{office}
";

const DEFAULT_ACK_UNMATCHED: &str = "您好：

您于{received_at}发来的邮件（主题：{subject}）已收到。系统未能确定报送单位，
工作人员将尽快核对处理，请勿重复发送。

{problems}
{office}
";

const DEFAULT_REMINDER: &str = "{unit_name}：

根据《关于报送分管政务信息领导及信息员名单的通知》，请于{deadline}前将《分管政务信息领导及信息员登记表》
发送至本邮箱。目前尚未收到您单位的登记表（{remaining}）。

{reason}
如已报送，请忽略本邮件。

{office}
";

const DEFAULT_OVERDUE_REMINDER: &str = "{unit_name}：

报送《分管政务信息领导及信息员登记表》的截止时间{deadline}已过（{remaining}），目前仍未收到您单位的登记表，
请尽快报送。

{reason}
如已报送，请忽略本邮件。

{office}
";

const DEFAULT_OVERDUE_REPORT: &str =
    "截至{now}，以下{count}个单位尚未报送《分管政务信息领导及信息员登记表》
（截止时间{deadline}）：

{units}

明细见附件。

xxdc-intake 自动生成
";

const DEFAULT_REMINDERS_HELD: &str = "自{since}起，催报提醒暂停发送：{reason}。

为免向已经报送的单位发出提醒，在所有邮件来源重新收取成功、已收到的邮件处理完毕之前，
服务不向各单位发送催报提醒，也不发送通报。请检查邮箱设置和网络（xxdc-intake status
可查看各邮件来源最近的错误）。恢复后提醒将自动继续；期间错过的时段超过补发时限的不再补发。

xxdc-intake 自动生成
";

/// One subject and body template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub subject: String,
    pub body: String,
}

/// All templates, loaded once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Templates {
    by_kind: BTreeMap<MailKind, Template>,
}

#[derive(Debug, thiserror::Error)]
#[error("模板 {file} 有误：{reason}")]
pub struct TemplateError {
    pub file: String,
    pub reason: String,
}

impl Default for Templates {
    fn default() -> Self {
        let by_kind = MailKind::ALL
            .into_iter()
            .map(|k| {
                (
                    k,
                    Template {
                        subject: default_subject(k).into(),
                        body: default_body(k).into(),
                    },
                )
            })
            .collect();
        Self { by_kind }
    }
}

impl Templates {
    /// Loads `KIND.subject` / `KIND.txt` from `dir`, falling back to the
    /// built-in text for missing files. Unknown placeholders are errors.
    pub fn load(dir: &Path) -> Result<Self, TemplateError> {
        let mut t = Self::default();
        for kind in MailKind::ALL {
            let entry = t.by_kind.entry(kind).or_insert_with(|| Template {
                subject: String::new(),
                body: String::new(),
            });
            for (ext, slot) in [("subject", &mut entry.subject), ("txt", &mut entry.body)] {
                let path = dir.join(format!("{}.{ext}", kind.stem()));
                match std::fs::read_to_string(&path) {
                    Ok(text) => {
                        let text = if ext == "subject" {
                            text.trim().to_string()
                        } else {
                            text
                        };
                        check(&text, kind).map_err(|reason| TemplateError {
                            file: path.display().to_string(),
                            reason,
                        })?;
                        *slot = text;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(TemplateError {
                            file: path.display().to_string(),
                            reason: e.to_string(),
                        });
                    }
                }
            }
        }
        Ok(t)
    }

    /// Renders `kind` with `values`: the subject as one safe header line,
    /// the body as text.
    pub fn render(&self, kind: MailKind, values: &BTreeMap<&str, String>) -> (String, String) {
        let Some(t) = self.by_kind.get(&kind) else {
            return (String::new(), String::new());
        };
        let subject = header_safe(&fill(&t.subject, values, true));
        let body = fill(&t.body, values, false);
        (subject, body)
    }
}

/// The placeholders each kind may use.
pub fn placeholders(kind: MailKind) -> &'static [&'static str] {
    match kind {
        MailKind::Ack => &[
            "unit_name",
            "deadline",
            "now",
            "remaining",
            "office",
            "campaign",
            "leader_name",
            "leader_title",
            "leader_mobile",
            "officer_name",
            "officer_title",
            "officer_mobile",
            "officer_email",
            "problems",
            "subject",
            "received_at",
        ],
        MailKind::AckUnmatched => &[
            "now",
            "office",
            "campaign",
            "deadline",
            "problems",
            "subject",
            "received_at",
        ],
        MailKind::Reminder | MailKind::OverdueReminder => &[
            "unit_name",
            "deadline",
            "now",
            "remaining",
            "office",
            "campaign",
            "reason",
            "count",
        ],
        MailKind::OverdueReport => &["deadline", "now", "office", "campaign", "count", "units"],
        MailKind::RemindersHeld => &["deadline", "now", "office", "campaign", "reason", "since"],
        MailKind::CorrectionRequest => &[
            "unit_name",
            "deadline",
            "now",
            "remaining",
            "office",
            "campaign",
            "items",
            "note",
        ],
    }
}

fn check(text: &str, kind: MailKind) -> Result<(), String> {
    let allowed = placeholders(kind);
    for name in names_in(text) {
        if !allowed.contains(&name) {
            return Err(format!(
                "不认识的占位符 {{{name}}}，可用的有：{}",
                allowed.join("、")
            ));
        }
    }
    Ok(())
}

fn names_in(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close)
                if after[..close]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && close > 0 =>
            {
                out.push(&after[..close]);
                rest = &after[close + 1..];
            }
            _ => rest = after,
        }
    }
    out
}

/// Replaces `{name}` with its value; unknown names stay as written. In a
/// header, values lose their line breaks.
fn fill(template: &str, values: &BTreeMap<&str, String>, header: bool) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}').map(|close| (&after[..close], close)) {
            Some((name, close)) if values.contains_key(name) => {
                let value = &values[name];
                if header {
                    out.push_str(&header_safe(value))
                } else {
                    out.push_str(value)
                }
                rest = &after[close + 1..];
            }
            _ => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// One header line: control characters (CR, LF, NUL …) become spaces, runs
/// of space fold, length is bounded.
pub fn header_safe(value: &str) -> String {
    let cleaned: String = value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let folded = cleaned.split_whitespace().collect::<Vec<_>>().join(" ");
    folded.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&'static str, &str)]) -> BTreeMap<&'static str, String> {
        pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
    }

    #[test]
    fn placeholders_are_filled() {
        let t = Templates::default();
        let (subject, body) = t.render(
            MailKind::Reminder,
            &values(&[
                ("unit_name", "桥头镇人民政府"),
                ("deadline", "5月20日"),
                ("remaining", "距截止还剩2天"),
                ("office", "信息督查科"),
                ("reason", ""),
            ]),
        );
        assert_eq!(
            subject,
            "提醒：请桥头镇人民政府于5月20日前报送分管政务信息领导及信息员登记表"
        );
        assert!(body.contains("距截止还剩2天"));
        assert!(!body.contains("{unit_name}"));
    }

    #[test]
    fn a_unit_name_cannot_inject_headers() {
        let t = Templates::default();
        let evil = "桥头镇\r\nBcc: victim@example.com\r\n\r\nspam";
        let (subject, _) = t.render(
            MailKind::Reminder,
            &values(&[("unit_name", evil), ("deadline", "x")]),
        );
        assert!(!subject.contains('\r') && !subject.contains('\n'));
        assert!(subject.contains("桥头镇 Bcc: victim@example.com spam"));
    }

    #[test]
    fn template_files_are_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("reminder.subject"), "请{unit}报送").expect("write");
        let err = Templates::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("不认识的占位符 {unit}"), "{err}");
        std::fs::write(dir.path().join("reminder.subject"), "请{unit_name}报送\n").expect("write");
        let t = Templates::load(dir.path()).expect("load");
        assert_eq!(
            t.render(MailKind::Reminder, &values(&[("unit_name", "甲")]))
                .0,
            "请甲报送"
        );
    }
}
