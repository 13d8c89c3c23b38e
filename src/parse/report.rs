//! What `parse` reports for one input, in the contract's JSON shape
//! (`docs/parse-json.md`) and as a Chinese table for people.

use std::fmt::Write as _;

use serde::Serialize;

use crate::parse::grid::Meta;
use crate::parse::message::{Automation, Envelope, MessageKind};
use crate::parse::problems::Problem;
use crate::parse::registration::{Field, Registration};

/// `attachments[].outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Parsed,
    NoForm,
    Scanned,
    Unsupported,
    Error,
}

impl Outcome {
    pub fn zh(self) -> &'static str {
        match self {
            Outcome::Parsed => "已读取登记表",
            Outcome::NoForm => "未含登记表",
            Outcome::Scanned => "扫描件",
            Outcome::Unsupported => "不支持",
            Outcome::Error => "无法读取",
        }
    }
}

/// One file leaf of the message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attachment {
    pub filename: Option<String>,
    pub content_type: String,
    pub size: usize,
    pub sha256: String,
    pub format: &'static str,
    pub outcome: Outcome,
    pub detail: Option<String>,
    pub meta: Meta,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SenderUnit {
    pub unit_id: String,
    pub unit_name: String,
}

/// Everything `parse` says about one input.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseReport {
    pub input: String,
    pub message: Option<Envelope>,
    pub kind: MessageKind,
    /// What makes the message automatic (not part of the JSON).
    pub automation: Automation,
    pub sender_unit: Option<SenderUnit>,
    pub attachments: Vec<Attachment>,
    pub registrations: Vec<Registration>,
    pub needs_review: bool,
    pub problems: Vec<Problem>,
}

impl ParseReport {
    /// The contract's output object.
    pub fn to_json(&self) -> serde_json::Value {
        let message = self.message.as_ref().map(|e| {
            serde_json::json!({
                "message_id": e.message_id,
                "from": e.from,
                "from_name": e.from_name,
                "subject": e.subject,
                "date": e.date,
            })
        });
        serde_json::json!({
            "input": self.input,
            "message": message,
            "kind": self.kind.as_str(),
            "sender_unit": self.sender_unit,
            "attachments": self.attachments,
            "registrations": self.registrations.iter().map(Registration::to_json).collect::<Vec<_>>(),
            "needs_review": self.needs_review,
            "problems": self.problems.iter().map(Problem::to_json).collect::<Vec<_>>(),
        })
    }

    /// A readable summary in Chinese for office staff.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "== {} ==", self.input);
        if let Some(m) = &self.message {
            let _ = writeln!(
                out,
                "发件人：{} {}",
                m.from_name.as_deref().unwrap_or(""),
                m.from.as_deref().unwrap_or("（无）")
            );
            let _ = writeln!(out, "主题：{}", m.subject.as_deref().unwrap_or("（无）"));
            if let Some(d) = &m.date {
                let _ = writeln!(out, "时间：{d}");
            }
        }
        match (&self.kind, &self.sender_unit) {
            (MessageKind::Bounce, _) => out.push_str("类型：退信\n"),
            (MessageKind::AutoReply, _) => out.push_str("类型：自动回复\n"),
            (_, Some(u)) => {
                let _ = writeln!(out, "发件单位：{}", u.unit_name);
            }
            _ => {}
        }
        for a in &self.attachments {
            let _ = writeln!(
                out,
                "附件：{}（{}，{} 字节）— {}{}",
                a.filename.as_deref().unwrap_or("（未命名）"),
                a.format,
                a.size,
                a.outcome.zh(),
                a.detail
                    .as_deref()
                    .map(|d| format!("：{d}"))
                    .unwrap_or_default()
            );
        }
        for (i, r) in self.registrations.iter().enumerate() {
            let unit = r.unit_match.as_ref().map_or_else(
                || "（未能确定单位）".to_string(),
                |m| format!("{}（{}）", m.unit_name, m.unit_id),
            );
            let _ = writeln!(out, "登记表 {}（来源：{}）→ {}", i + 1, r.source, unit);
            for field in Field::ALL {
                let value = match r.values.get(&field) {
                    Some(crate::parse::registration::Value::Text(s)) => s.replace('\n', " / "),
                    Some(crate::parse::registration::Value::Bool(b)) => {
                        if *b { "是" } else { "否" }.to_string()
                    }
                    None => continue,
                };
                let _ = writeln!(out, "    {}：{}", field.label_zh(), value);
            }
        }
        for p in &self.problems {
            let _ = writeln!(out, "问题：{}", p.message);
        }
        let _ = writeln!(
            out,
            "需要人工处理：{}",
            if self.needs_review { "是" } else { "否" }
        );
        out
    }
}

/// One line per input, for a batch of files: who registered, and what
/// needs a person.
pub fn summary_table(reports: &[ParseReport]) -> String {
    let header = [
        "文件",
        "单位",
        "分管领导",
        "信息员",
        "信息员手机",
        "人工处理",
        "问题",
    ]
    .map(String::from);
    let mut rows = vec![header.to_vec()];
    for r in reports {
        let file = std::path::Path::new(&r.input)
            .file_name()
            .map_or_else(|| r.input.clone(), |n| n.to_string_lossy().into_owned());
        let codes = {
            let mut c: Vec<&str> = r.problems.iter().map(|p| p.code.as_str()).collect();
            c.sort_unstable();
            c.dedup();
            c.join(",")
        };
        let review = if r.needs_review { "是" } else { "否" }.to_string();
        if r.registrations.is_empty() {
            rows.push(vec![
                file,
                "—".into(),
                String::new(),
                String::new(),
                String::new(),
                review,
                codes,
            ]);
            continue;
        }
        for reg in &r.registrations {
            let unit = reg.unit_match.as_ref().map_or_else(
                || format!("？{}", reg.text(Field::UnitName).unwrap_or("")),
                |m| m.unit_name.clone(),
            );
            let get = |f: Field| reg.text(f).unwrap_or("").to_string();
            rows.push(vec![
                file.clone(),
                unit,
                get(Field::LeaderName),
                get(Field::OfficerName),
                get(Field::OfficerMobile),
                review.clone(),
                codes.clone(),
            ]);
        }
    }
    render_table(&rows)
}

/// Aligns columns by display width (a CJK character is two columns wide).
pub fn render_table(rows: &[Vec<String>]) -> String {
    use unicode_width::UnicodeWidthStr;
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.width())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < row.len() {
                line.push_str(&" ".repeat(widths[c] - cell.width() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
