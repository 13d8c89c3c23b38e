//! Crediting a registration to a roster unit.
//!
//! The form's 单位 is compared with each unit's name and aliases after
//! folding the ways units write their own names (永嘉县 prefix,
//! 人民政府/政府, 办事处, 办公室/办, spaces, full width). Without a usable
//! 单位, the sender's address, then the subject and the file name decide.
//! A wrong match is worse than none: a name that fits two units, or a form
//! that names one unit while the sender belongs to another, gives no match.
//! Pure functions: no I/O.

use std::collections::HashMap;

use unicode_normalization::UnicodeNormalization;

use crate::parse::problems::{Code, Problem};
use crate::parse::registration::{Field, UnitMatch};
use crate::parse::roster::{Roster, Unit};

/// Name keys of every unit, built once per roster.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    /// canonical key → unit ids carrying it.
    keys: HashMap<String, Vec<usize>>,
    units: Vec<Unit>,
}

/// The result of matching one registration.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub unit_match: Option<UnitMatch>,
    pub problem: Option<Problem>,
}

/// What is known about a registration's origin besides the form.
#[derive(Debug, Clone, Copy, Default)]
pub struct Context<'a> {
    pub sender: Option<&'a Unit>,
    pub subject: Option<&'a str>,
    pub filename: Option<&'a str>,
    /// The unit the form's title names, when its 单位 is empty.
    pub title: Option<&'a str>,
    /// The form was read by OCR: a name one misread character away from a
    /// roster name is matched ([`Matcher::by_name_fuzzy`]).
    pub ocr: bool,
}

/// Folds a unit name to the key it is compared by.
pub fn canonical(name: &str) -> String {
    let mut s: String = name.nfkc().filter(|c| !c.is_whitespace()).collect();
    // Remarks in brackets: 永嘉县教育局（盖章）.
    for (open, close) in [('(', ')'), ('[', ']'), ('【', '】'), ('〔', '〕')] {
        while let (Some(a), Some(b)) = (s.find(open), s.rfind(close)) {
            if b <= a {
                break;
            }
            s.replace_range(a..b + close.len_utf8(), "");
        }
    }
    for prefix in ["浙江省", "温州市", "永嘉县", "永嘉"] {
        if let Some(rest) = s.strip_prefix(prefix) {
            s = rest.to_string();
        }
    }
    s = s.replace("人民政府", "政府").replace("办公室", "办");
    for suffix in ["办事处", "政府"] {
        if let Some(rest) = s.strip_suffix(suffix)
            && rest.chars().count() >= 2
        {
            s = rest.to_string();
        }
    }
    if s.ends_with("街道办") {
        s.truncate(s.len() - "办".len());
    }
    if let Some(rest) = s.strip_prefix('县')
        && rest.chars().count() >= 2
    {
        s = rest.to_string();
    }
    s
}

/// Levenshtein distance over characters. Written here because the names
/// are a few characters long: a dependency would bring nothing.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

impl Matcher {
    pub fn new(roster: &Roster) -> Self {
        let mut keys: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, unit) in roster.units.iter().enumerate() {
            for name in std::iter::once(&unit.name).chain(&unit.aliases) {
                let key = canonical(name);
                if key.chars().count() < 2 {
                    continue;
                }
                let ids = keys.entry(key).or_default();
                if !ids.contains(&i) {
                    ids.push(i);
                }
            }
        }
        Self {
            keys,
            units: roster.units.clone(),
        }
    }

    /// The unit a written name stands for, with a confidence, if exactly one
    /// unit fits.
    pub fn by_name(&self, name: &str) -> Option<(&Unit, f64)> {
        let key = canonical(name);
        if key.chars().count() < 2 {
            return None;
        }
        if let Some(ids) = self.keys.get(&key) {
            return match ids.as_slice() {
                [one] => Some((&self.units[*one], 0.97)),
                _ => None,
            };
        }
        // The name carries a unit's key plus more (瓯北街道党政办): the
        // longest key found, if no other unit's key is as long.
        self.longest_contained(&key).map(|u| (u, 0.8))
    }

    /// The unit an OCR reading of a name stands for when one character or
    /// so was misread: the one roster key within edit distance 1 (2 for
    /// keys of 8 characters or more) of the reading, provided no other
    /// unit's key is as close or one step further (two close names are not
    /// guessed between: a reading one character from both 桥头镇 and 桥下镇
    /// matches neither). Keys of fewer than 3 characters are never guessed.
    pub fn by_name_fuzzy(&self, name: &str) -> Option<(&Unit, f64)> {
        let key = canonical(name);
        let len = key.chars().count();
        if len < 3 {
            return None;
        }
        let allowed = if len >= 8 { 2 } else { 1 };
        let mut scored: Vec<(usize, usize)> = Vec::new();
        for (k, ids) in &self.keys {
            if k.chars().count() < 3 {
                continue;
            }
            let d = edit_distance(&key, k);
            scored.extend(ids.iter().map(|&i| (d, i)));
        }
        scored.sort_unstable();
        scored.dedup_by_key(|(_, i)| *i);
        let (best, unit) = *scored.first()?;
        let runner_up = scored.iter().find(|(_, i)| *i != unit).map(|(d, _)| *d);
        if best == 0 || best > allowed || runner_up.is_some_and(|d| d <= best + 1) {
            return None;
        }
        Some((&self.units[unit], 0.75))
    }

    /// The one unit whose key occurs in free text (a subject, a file name).
    pub fn in_text(&self, text: &str) -> Option<&Unit> {
        let folded: String = text.nfkc().filter(|c| !c.is_whitespace()).collect();
        let mut found: Vec<usize> = self
            .keys
            .iter()
            .filter(|(k, _)| k.chars().count() >= 3 && folded.contains(k.as_str()))
            .flat_map(|(_, ids)| ids.iter().copied())
            .collect();
        found.sort_unstable();
        found.dedup();
        match found.as_slice() {
            [one] => Some(&self.units[*one]),
            _ => None,
        }
    }

    fn longest_contained(&self, key: &str) -> Option<&Unit> {
        let mut best: Option<(usize, Vec<usize>)> = None;
        for (k, ids) in &self.keys {
            let len = k.chars().count();
            if len < 3 || !key.contains(k.as_str()) {
                continue;
            }
            match &mut best {
                Some((l, v)) if *l == len => v.extend(ids),
                Some((l, _)) if *l > len => {}
                _ => best = Some((len, ids.clone())),
            }
        }
        let (_, mut ids) = best?;
        ids.sort_unstable();
        ids.dedup();
        match ids.as_slice() {
            [one] => Some(&self.units[*one]),
            _ => None,
        }
    }

    /// Credits a registration whose form names `form_unit` (its 单位).
    pub fn decide(&self, form_unit: Option<&str>, ctx: Context<'_>) -> Outcome {
        let found = |unit: &Unit, by: &'static str, confidence: f64| Outcome {
            unit_match: Some(UnitMatch {
                unit_id: unit.id.clone(),
                unit_name: unit.name.clone(),
                by,
                confidence,
            }),
            problem: None,
        };
        let none = |code: Code, message: String| Outcome {
            unit_match: None,
            problem: Some(Problem::new(Some(Field::UnitName), code, message)),
        };
        // `本单位`, `我局`: the writer's own unit, which says nothing on its own.
        let own = |n: &str| {
            let c: String = n.chars().filter(|c| !c.is_whitespace()).collect();
            c.chars().count() <= 3 && (c.starts_with('本') || c.starts_with('我'))
        };
        if let Some(written) = form_unit.filter(|n| !n.trim().is_empty() && !own(n)) {
            let named = self
                .by_name(written)
                .or_else(|| ctx.ocr.then(|| self.by_name_fuzzy(written)).flatten());
            return match (named, ctx.sender) {
                (Some((unit, _)), Some(sender)) if sender.id != unit.id => none(
                    Code::UnitConflict,
                    format!(
                        "登记表填写的单位“{written}”与发件邮箱所属单位“{}”不一致，请人工确认",
                        sender.name
                    ),
                ),
                (Some((unit, confidence)), _) => found(unit, "form", confidence),
                (None, _) => none(
                    Code::UnknownUnit,
                    format!("登记表填写的单位“{written}”不在单位名单中"),
                ),
            };
        }
        // A title naming a unit counts as the form's word, with the same
        // conflict rule as a written 单位.
        if let Some((unit, _)) = ctx.title.and_then(|t| self.by_name(t)) {
            return match ctx.sender {
                Some(sender) if sender.id != unit.id => none(
                    Code::UnitConflict,
                    format!(
                        "登记表标题中的单位“{}”与发件邮箱所属单位“{}”不一致，请人工确认",
                        unit.name, sender.name
                    ),
                ),
                _ => found(unit, "form", 0.85),
            };
        }
        if let Some(sender) = ctx.sender {
            return found(sender, "sender", 0.9);
        }
        if let Some(unit) = ctx.subject.and_then(|s| self.in_text(s)) {
            return found(unit, "subject", 0.7);
        }
        if let Some(unit) = ctx.filename.and_then(|s| self.in_text(s)) {
            return found(unit, "filename", 0.6);
        }
        none(
            Code::UnknownUnit,
            "登记表未填写单位，且无法从发件人、主题或文件名判断所属单位".into(),
        )
    }
}

#[cfg(test)]
mod fuzzy_tests {
    use super::*;

    #[test]
    fn edit_distance_counts_characters() {
        assert_eq!(edit_distance("大若岩镇", "大若岩镇"), 0);
        assert_eq!(edit_distance("大苦岩镇", "大若岩镇"), 1);
        assert_eq!(edit_distance("岩镇", "大若岩镇"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    fn roster() -> Roster {
        let unit = |id: &str, name: &str, alias: &str| Unit {
            id: id.into(),
            name: name.into(),
            category: String::new(),
            aliases: vec![alias.into()],
            emails: Vec::new(),
        };
        Roster {
            units: vec![
                unit("qiaotou", "桥头镇人民政府", "桥头镇"),
                unit("qiaoxia", "桥下镇人民政府", "桥下镇"),
                unit("yunling", "云岭乡人民政府", "云岭乡"),
            ],
        }
    }

    #[test]
    fn a_misread_character_is_matched_only_when_one_unit_is_close() {
        let r = roster();
        let m = Matcher::new(&r);
        assert_eq!(
            m.by_name_fuzzy("云蛤乡人民政府")
                .map(|(u, _)| u.id.as_str()),
            Some("yunling")
        );
        // One character from 桥头镇 and from 桥下镇: not guessed.
        assert!(m.by_name_fuzzy("桥上镇人民政府").is_none());
        assert!(m.by_name_fuzzy("完全不同的单位").is_none());
        // Only for OCR readings.
        let typed = m.decide(Some("云蛤乡人民政府"), Context::default());
        assert!(typed.unit_match.is_none());
        let read = m.decide(
            Some("云蛤乡人民政府"),
            Context {
                ocr: true,
                ..Context::default()
            },
        );
        assert_eq!(read.unit_match.map(|u| u.unit_id), Some("yunling".into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roster() -> Roster {
        let unit = |id: &str, name: &str, aliases: &[&str], emails: &[&str]| Unit {
            id: id.into(),
            name: name.into(),
            category: String::new(),
            aliases: aliases.iter().map(|s| s.to_string()).collect(),
            emails: emails.iter().map(|s| s.to_string()).collect(),
        };
        Roster {
            units: vec![
                unit(
                    "oubei",
                    "瓯北街道办事处",
                    &["瓯北街道", "瓯北镇"],
                    &["obj@yj.gov.cn"],
                ),
                unit("qiaotou", "桥头镇人民政府", &["桥头镇"], &[]),
                unit("jyj", "永嘉县教育局", &["县教育局", "教育局"], &[]),
                unit("xfb", "永嘉县人民政府办公室", &["县府办", "县政府办"], &[]),
                unit("tyj", "永嘉县体育局", &[], &["tyj@yj.gov.cn"]),
            ],
        }
    }

    #[test]
    fn name_variants_match() {
        let m = Matcher::new(&roster());
        for (written, id) in [
            ("永嘉县瓯北街道办事处", "oubei"),
            ("瓯北街道办", "oubei"),
            ("桥头镇政府", "qiaotou"),
            ("桥 头 镇", "qiaotou"),
            ("县教育局", "jyj"),
            ("永嘉县教育局（盖章）", "jyj"),
            ("县政府办公室", "xfb"),
            ("瓯北街道党政办", "oubei"),
        ] {
            assert_eq!(
                m.by_name(written).map(|(u, _)| u.id.as_str()),
                Some(id),
                "{written}"
            );
        }
        assert!(m.by_name("永嘉县烟草专卖局").is_none());
    }

    #[test]
    fn conflict_and_unknown_give_no_match() {
        let r = roster();
        let m = Matcher::new(&r);
        let ctx = Context {
            sender: r.get("tyj"),
            ..Context::default()
        };
        let out = m.decide(Some("县教育局"), ctx);
        assert!(out.unit_match.is_none());
        assert_eq!(out.problem.map(|p| p.code), Some(Code::UnitConflict));
        let out = m.decide(Some("县烟草局"), Context::default());
        assert_eq!(out.problem.map(|p| p.code), Some(Code::UnknownUnit));
    }

    #[test]
    fn own_unit_words_fall_back_to_the_sender() {
        let r = roster();
        let m = Matcher::new(&r);
        let out = m.decide(
            Some("本单位"),
            Context {
                sender: r.get("tyj"),
                ..Context::default()
            },
        );
        assert_eq!(out.unit_match.map(|u| u.by), Some("sender"));
    }

    #[test]
    fn fallbacks_sender_subject_filename() {
        let r = roster();
        let m = Matcher::new(&r);
        let out = m.decide(
            None,
            Context {
                sender: r.get("tyj"),
                ..Context::default()
            },
        );
        assert_eq!(out.unit_match.map(|u| u.by), Some("sender"));
        let out = m.decide(
            None,
            Context {
                subject: Some("桥头镇登记表"),
                ..Context::default()
            },
        );
        assert_eq!(
            out.unit_match.map(|u| u.unit_id),
            Some("qiaotou".to_string())
        );
        let two = m.decide(
            None,
            Context {
                subject: Some("桥头镇、瓯北街道登记表"),
                ..Context::default()
            },
        );
        assert!(two.unit_match.is_none());
    }
}
