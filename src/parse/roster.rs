//! The unit roster (名单): every township, street and county department
//! asked to register, with its known names and mail addresses.
//!
//! Loaded from CSV (UTF-8 with or without BOM, or GBK as Excel/WPS save
//! it) or XLSX with the header `id,name,category,aliases,emails`. A bad row
//! is named with its line number; matching names against units is
//! `crate::parse::matching`.

use std::collections::HashSet;
use std::io::Cursor;
use std::path::Path;

use calamine::{Reader, Xlsx};

/// One unit on the roster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    pub id: String,
    pub name: String,
    /// 乡镇 or 县直单位 (free text).
    pub category: String,
    pub aliases: Vec<String>,
    /// Lower-case addresses the unit is known to send from.
    pub emails: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roster {
    pub units: Vec<Unit>,
}

#[derive(Debug, thiserror::Error)]
pub enum RosterError {
    #[error("无法读取名单文件 {path}：{reason}")]
    Io { path: String, reason: String },
    #[error("名单文件 {path} 缺少表头列：{column}（应为 id,name,category,aliases,emails）")]
    MissingColumn { path: String, column: &'static str },
    #[error("名单文件 {path} 第 {line} 行有误：{reason}")]
    BadRow {
        path: String,
        line: usize,
        reason: String,
    },
}

impl Roster {
    /// Loads a roster; XLSX by content, otherwise CSV.
    pub fn load(path: &Path) -> Result<Self, RosterError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| RosterError::Io {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        let rows = if bytes.starts_with(b"PK\x03\x04") {
            xlsx_rows(&bytes).map_err(|reason| RosterError::Io {
                path: shown.clone(),
                reason,
            })?
        } else {
            csv_rows(&bytes).map_err(|reason| RosterError::Io {
                path: shown.clone(),
                reason,
            })?
        };
        Self::from_rows(&shown, rows)
    }

    /// Builds a roster from a header row and data rows, each with its line
    /// number.
    fn from_rows(path: &str, rows: Vec<(usize, Vec<String>)>) -> Result<Self, RosterError> {
        let mut iter = rows.into_iter();
        let Some((_, header)) = iter.next() else {
            return Err(RosterError::MissingColumn {
                path: path.into(),
                column: "id",
            });
        };
        let header: Vec<String> = header
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .collect();
        let col = |name: &'static str| {
            header
                .iter()
                .position(|h| h == name)
                .ok_or(RosterError::MissingColumn {
                    path: path.into(),
                    column: name,
                })
        };
        let (id_c, name_c) = (col("id")?, col("name")?);
        let category_c = col("category").ok();
        let aliases_c = col("aliases").ok();
        let emails_c = col("emails").ok();
        let mut units = Vec::new();
        let mut ids = HashSet::new();
        for (line, row) in iter {
            let get = |c: Option<usize>| {
                c.and_then(|c| row.get(c))
                    .map(|s| s.trim().to_string())
                    .unwrap_or_default()
            };
            if row.iter().all(|c| c.trim().is_empty()) {
                continue;
            }
            let bad = |reason: String| RosterError::BadRow {
                path: path.into(),
                line,
                reason,
            };
            let id = get(Some(id_c));
            let name = get(Some(name_c));
            if id.is_empty() {
                return Err(bad("缺少单位编号（id）".into()));
            }
            if name.is_empty() {
                return Err(bad(format!("单位 {id} 缺少名称（name）")));
            }
            if !ids.insert(id.clone()) {
                return Err(bad(format!("单位编号 {id} 重复")));
            }
            let emails: Vec<String> = split_list(&get(emails_c))
                .into_iter()
                .map(|e| e.to_lowercase())
                .collect();
            if let Some(e) = emails.iter().find(|e| !bare_address(e)) {
                return Err(bad(format!(
                    "邮箱地址无效：{}（只写地址本身，如 qtz@yj.gov.cn，不带名称、引号或尖括号）",
                    e.escape_debug()
                )));
            }
            units.push(Unit {
                id,
                name,
                category: get(category_c),
                aliases: split_list(&get(aliases_c)),
                emails,
            });
        }
        Ok(Self { units })
    }

    pub fn get(&self, id: &str) -> Option<&Unit> {
        self.units.iter().find(|u| u.id == id)
    }

    /// The unit whose known addresses contain `address`.
    pub fn by_email(&self, address: &str) -> Option<&Unit> {
        let address = address.trim().to_lowercase();
        self.units.iter().find(|u| u.emails.contains(&address))
    }
}

/// Splits `a|b；c;d` into trimmed, non-empty parts.
fn split_list(s: &str) -> Vec<String> {
    s.split(['|', '；', ';'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect()
}

fn csv_rows(bytes: &[u8]) -> Result<Vec<(usize, Vec<String>)>, String> {
    let text = crate::parse::sniff::decode_text(bytes);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| e.to_string())?;
        let line = record
            .position()
            .map_or(0, |p| usize::try_from(p.line()).unwrap_or(0));
        rows.push((line, record.iter().map(String::from).collect()));
    }
    Ok(rows)
}

fn xlsx_rows(bytes: &[u8]) -> Result<Vec<(usize, Vec<String>)>, String> {
    let mut wb = Xlsx::new(Cursor::new(bytes)).map_err(|e| e.to_string())?;
    let name = wb
        .sheet_names()
        .first()
        .cloned()
        .ok_or("工作簿中没有工作表")?;
    let range = wb.worksheet_range(&name).map_err(|e| e.to_string())?;
    let start = range.start().map_or(0, |(r, _)| r as usize);
    Ok(range
        .rows()
        .enumerate()
        .map(|(i, row)| (start + i + 1, row.iter().map(|c| c.to_string()).collect()))
        .collect())
}

/// A bare address `local@domain.tld`: no display name, quotes, angle
/// brackets, commas, spaces or control characters — reminders go exactly
/// there, never to an address hidden in a display form.
fn bare_address(address: &str) -> bool {
    let Some((local, domain)) = address.split_once('@') else {
        return false;
    };
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._%+-".contains(c);
    !local.is_empty()
        && local
            .chars()
            .all(|c| allowed(c) || "!#$&'*/=?^`{|}~".contains(c))
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Roster, RosterError> {
        Roster::from_rows("t.csv", csv_rows(text.as_bytes()).expect("csv"))
    }

    #[test]
    fn only_bare_addresses_are_taken() {
        for bad in [
            "\"u4@yj.gov.cn\" <x@evil.example>",
            "u4@yj.gov.cn <x@evil.example>",
            "<u4@yj.gov.cn>",
            "u4@yj.gov.cn\r\nbcc: x@evil.example",
            "u4 @yj.gov.cn",
            "u4@localhost",
            "@yj.gov.cn",
        ] {
            assert!(!bare_address(bad), "{bad:?}");
        }
        for good in ["qtz@yj.gov.cn", "wang.xiao-1980@126.com", "a+b@x.org"] {
            assert!(bare_address(good), "{good}");
        }
        let err = parse("id,name,category,aliases,emails\nu4,单位,乡镇,,\"\"\"u4@yj.gov.cn\"\" <x@evil.example>\"\n")
            .unwrap_err();
        assert!(err.to_string().contains("第 2 行"), "{err}");
    }

    #[test]
    fn reads_lists_and_lowercases_emails() {
        let r = parse("id,name,category,aliases,emails\nqiaotou,桥头镇人民政府,乡镇,桥头镇|桥头镇政府,QTZ@yj.gov.cn；q@163.com\n").expect("ok");
        assert_eq!(r.units[0].aliases, vec!["桥头镇", "桥头镇政府"]);
        assert_eq!(
            r.by_email("qtz@YJ.gov.cn").map(|u| u.id.as_str()),
            Some("qiaotou")
        );
    }

    #[test]
    fn gbk_csv_is_read() {
        let (gbk, _, _) = encoding_rs::GBK.encode(
            "id,name,category,aliases,emails\njyj,永嘉县教育局,县直单位,教育局,jyj@yj.gov.cn\n",
        );
        let r = Roster::from_rows("t.csv", csv_rows(&gbk).expect("csv")).expect("ok");
        assert_eq!(r.units[0].name, "永嘉县教育局");
    }

    #[test]
    fn bad_rows_are_named_by_line() {
        let err = parse("id,name,category,aliases,emails\na,甲,乡镇,,\na,乙,乡镇,,\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "名单文件 t.csv 第 3 行有误：单位编号 a 重复"
        );
        let err = parse("id,name\nb,,\n").unwrap_err();
        assert!(err.to_string().contains("第 2 行"), "{err}");
        assert!(matches!(
            parse("name\nx\n"),
            Err(RosterError::MissingColumn { column: "id", .. })
        ));
    }
}
