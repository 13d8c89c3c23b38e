//! Normalising the raw text of each field into the contract's form, and
//! reporting what cannot be normalised or is missing.
//!
//! Problems with input are data: a bad phone number gives a registration
//! with an `invalid_phone` problem, never an error. Values that cannot be
//! normalised are kept as written so staff can see them.

use unicode_normalization::UnicodeNormalization;

use crate::parse::problems::{Code, Problem};
use crate::parse::registration::{Field, Kind, Value};

/// The outcome of normalising one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Normalized {
    Ok(Value),
    /// Present but not normalisable: the raw text is kept, with the code.
    Invalid(Value, Code),
    /// Nothing usable (e.g. a gender that is neither 男 nor 女).
    Empty,
}

/// Normalises one raw value for `field`.
pub fn normalize(field: Field, raw: &str) -> Normalized {
    let raw = raw.trim();
    if raw.is_empty() {
        return Normalized::Empty;
    }
    let text = |s: String| Value::Text(s);
    match field.kind() {
        Kind::Name => {
            // A sentence's full stop after a typed name is not part of it.
            let bare = raw.trim_end_matches(['。', '，', '；', ',', ';', '.']);
            Normalized::Ok(text(squeeze_cjk(bare)))
        }
        Kind::Text => Normalized::Ok(text(fold_space(raw))),
        Kind::Mobile => match mobile(raw) {
            Some(m) => Normalized::Ok(text(m)),
            None => Normalized::Invalid(text(raw.to_string()), Code::InvalidMobile),
        },
        Kind::Phone => match phone(raw) {
            Some(p) => Normalized::Ok(text(p)),
            None => Normalized::Invalid(text(raw.to_string()), Code::InvalidPhone),
        },
        Kind::GovNet => match digits_only(raw, 3, 12) {
            Some(d) => Normalized::Ok(text(d)),
            None => Normalized::Invalid(text(raw.to_string()), Code::InvalidPhone),
        },
        Kind::Qq => match digits_only(raw, 5, 12) {
            Some(d) => Normalized::Ok(text(d)),
            None => Normalized::Invalid(text(raw.to_string()), Code::InvalidQq),
        },
        Kind::Email => match email(raw) {
            Some(e) => Normalized::Ok(text(e)),
            None => Normalized::Invalid(text(raw.to_string()), Code::InvalidEmail),
        },
        Kind::Birth => match birth(raw) {
            Some(b) => Normalized::Ok(text(b)),
            None => Normalized::Invalid(text(raw.to_string()), Code::InvalidBirth),
        },
        Kind::Gender => gender(raw).map_or(Normalized::Empty, |g| Normalized::Ok(text(g.into()))),
        Kind::PartyMember => {
            party(raw).map_or(Normalized::Empty, |b| Normalized::Ok(Value::Bool(b)))
        }
    }
}

/// The Chinese sentence for a value that could not be normalised.
pub fn invalid_message(field: Field, code: Code, raw: &str) -> String {
    let what = field.label_zh();
    match code {
        Code::InvalidMobile => format!("{what}应为11位数字：{raw}"),
        Code::InvalidPhone => format!("{what}无法识别为电话号码：{raw}"),
        Code::InvalidQq => format!("{what}应为5至12位数字：{raw}"),
        Code::InvalidEmail => format!("{what}不是有效的电子邮箱地址：{raw}"),
        Code::InvalidBirth => format!("{what}无法识别为年月（如1975.03）：{raw}"),
        _ => format!("{what}：{raw}"),
    }
}

/// Checks a registration's values: builds the normalised map and the
/// problems (invalid values, missing required fields).
pub fn check(
    raw: &std::collections::BTreeMap<Field, String>,
    required: &[Field],
) -> (std::collections::BTreeMap<Field, Value>, Vec<Problem>) {
    let mut values = std::collections::BTreeMap::new();
    let mut problems = Vec::new();
    for (&field, text) in raw {
        match normalize(field, text) {
            Normalized::Ok(v) => {
                values.insert(field, v);
            }
            Normalized::Invalid(v, code) => {
                problems.push(Problem::new(
                    Some(field),
                    code,
                    invalid_message(field, code, text.trim()),
                ));
                values.insert(field, v);
            }
            Normalized::Empty => {}
        }
    }
    for &field in required {
        if !values.contains_key(&field) {
            problems.push(Problem::new(
                Some(field),
                Code::MissingField,
                format!("未填写{}", field.label_zh()),
            ));
        }
    }
    (values, problems)
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32, 0x2E80..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x3FFFF | 0xFF00..=0xFFEF)
}

/// Removes white space between CJK characters (`张  三` → `张三`), folds
/// other runs to one space, trims.
pub fn squeeze_cjk(s: &str) -> String {
    let folded = fold_space(&s.replace('\n', " "));
    let chars: Vec<char> = folded.chars().collect();
    let mut out = String::with_capacity(folded.len());
    for (i, &c) in chars.iter().enumerate() {
        if c == ' ' {
            let prev = i.checked_sub(1).and_then(|p| chars.get(p)).copied();
            let next = chars.get(i + 1).copied();
            if prev.is_some_and(is_cjk) || next.is_some_and(is_cjk) {
                continue;
            }
        }
        out.push(c);
    }
    out
}

/// Folds runs of blank space to one space per run; keeps line breaks.
pub fn fold_space(s: &str) -> String {
    crate::parse::grid::clean_text(s)
}

/// ASCII-folds full-width digits and punctuation.
fn ascii_fold(s: &str) -> String {
    s.nfkc().collect()
}

fn mobile(raw: &str) -> Option<String> {
    let s = ascii_fold(raw);
    // `13805771234（短号661234）`, `13805771234/0577-67001234`: the first
    // number is the mobile.
    let s = s
        .split(['/', '、', ',', ';', '，', '；', '(', '（', '\n'])
        .map(str::trim)
        .find(|p| !p.is_empty())
        .unwrap_or("");
    let s = s
        .strip_prefix("+86")
        .or_else(|| s.strip_prefix("(86)"))
        .unwrap_or(s);
    let digits: String = s
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.'))
        .collect();
    let digits = if digits.len() == 13 && digits.starts_with("86") {
        &digits[2..]
    } else {
        &digits[..]
    };
    (digits.len() == 11 && digits.starts_with('1') && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.to_string())
}

/// `0577-67222322`, `67222322`, `67666336-802`: the area code (3–4 digits
/// starting with 0) separated by `-`, an extension after `-`.
fn phone(raw: &str) -> Option<String> {
    let s = ascii_fold(raw);
    // Several numbers: the first one is the number to call.
    let first = s
        .split(['/', '、', ',', ';', '，', '；'])
        .map(str::trim)
        .find(|p| !p.is_empty())?;
    let s = first
        .replace("转", "-")
        .replace(['(', ')', '（', '）'], "-");
    let groups: Vec<&str> = s
        .split(|c: char| !c.is_ascii_digit())
        .filter(|g| !g.is_empty())
        .collect();
    if groups.is_empty() || s.chars().any(|c| c.is_alphabetic() && !is_cjk(c)) {
        return None;
    }
    let mut groups: Vec<String> = groups.into_iter().map(String::from).collect();
    // One run of digits with the area code in front: 057767222322.
    if groups.len() == 1 && groups[0].starts_with('0') && (10..=12).contains(&groups[0].len()) {
        let g = groups.remove(0);
        let cut = if g.starts_with("01") || g.starts_with("02") {
            3
        } else {
            4
        };
        groups = vec![g[..cut].to_string(), g[cut..].to_string()];
    }
    let (area, rest) =
        if groups[0].starts_with('0') && (3..=4).contains(&groups[0].len()) && groups.len() > 1 {
            (Some(groups[0].clone()), &groups[1..])
        } else {
            (None, &groups[..])
        };
    let number = rest.first()?;
    let mobile_like = number.len() == 11 && number.starts_with('1');
    if !(5..=8).contains(&number.len()) && !mobile_like {
        return None;
    }
    let ext = rest.get(1);
    if rest.len() > 2 || ext.is_some_and(|e| e.len() > 5) {
        return None;
    }
    let mut out = String::new();
    if let Some(a) = area {
        out.push_str(&a);
        out.push('-');
    }
    out.push_str(number);
    if let Some(e) = ext {
        out.push('-');
        out.push_str(e);
    }
    Some(out)
}

fn digits_only(raw: &str, min: usize, max: usize) -> Option<String> {
    let s = ascii_fold(raw);
    let s = s.trim();
    let s = s.strip_suffix(".0").unwrap_or(s);
    let digits: String = s.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    (digits.bytes().all(|b| b.is_ascii_digit()) && (min..=max).contains(&digits.len()))
        .then_some(digits)
}

fn email(raw: &str) -> Option<String> {
    let s = ascii_fold(raw).replace('。', ".").to_lowercase();
    let s = s
        .trim()
        .trim_start_matches("mailto:")
        .trim_matches(|c: char| c == '<' || c == '>' || c.is_whitespace());
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    let (local, domain) = s.split_once('@')?;
    let ok_local = !local.is_empty()
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._%+-".contains(c));
    let ok_domain = domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    (ok_local && ok_domain).then_some(s)
}

/// `YYYY-MM` from `1975.03`, `1975年3月`, `1975-3`, `197503`, `1975/3/12`, a
/// spreadsheet date rendered `1975-03-01`.
fn birth(raw: &str) -> Option<String> {
    let s = ascii_fold(raw);
    let groups: Vec<&str> = s
        .split(|c: char| !c.is_ascii_digit())
        .filter(|g| !g.is_empty())
        .collect();
    let (year, month) = match groups.as_slice() {
        [one] if one.len() == 6 || one.len() == 8 => (&one[..4], &one[4..6]),
        [y, m, ..] if y.len() == 4 && (1..=2).contains(&m.len()) => (*y, *m),
        // A two-digit year (`75.03`, `75年3月`): people registering were born
        // in the 1900s.
        [y, m, ..] if y.len() == 2 && (1..=2).contains(&m.len()) && y.as_bytes()[0] >= b'3' => {
            return finish(&format!("19{y}"), m);
        }
        _ => return None,
    };
    finish(year, month)
}

fn finish(year: &str, month: &str) -> Option<String> {
    let y: u32 = year.parse().ok()?;
    let m: u32 = month.parse().ok()?;
    ((1900..=2030).contains(&y) && (1..=12).contains(&m)).then(|| format!("{y:04}-{m:02}"))
}

fn gender(raw: &str) -> Option<&'static str> {
    let s: String = ascii_fold(raw)
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_lowercase();
    let s = s
        .split(['(', '（', ',', '，'])
        .next()
        .unwrap_or("")
        .to_string();
    match s.as_str() {
        "男" | "男性" | "m" | "male" => Some("男"),
        "女" | "女性" | "f" | "female" => Some("女"),
        _ => None,
    }
}

fn party(raw: &str) -> Option<bool> {
    let s: String = ascii_fold(raw)
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    const NO: &[&str] = &[
        "否",
        "不是",
        "群众",
        "团员",
        "共青团员",
        "非党员",
        "无党派",
        "无党派人士",
        "民主党派",
        "无",
        "不",
    ];
    const YES: &[&str] = &[
        "是",
        "中共党员",
        "党员",
        "预备党员",
        "共产党员",
        "中国共产党党员",
        "中共预备党员",
        "中共",
    ];
    // `是（中共党员）`, `中共预备党员`, `共青团员（群众）`: the word that opens it.
    let s = s.split(['(', '（']).next().unwrap_or("").to_string();
    if NO.contains(&s.as_str())
        || s.starts_with("民革")
        || s.starts_with("民盟")
        || s.starts_with("九三")
    {
        Some(false)
    } else if YES.contains(&s.as_str()) {
        Some(true)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(field: Field, raw: &str) -> String {
        match normalize(field, raw) {
            Normalized::Ok(Value::Text(s)) => s,
            other => panic!("{raw}: {other:?}"),
        }
    }

    #[test]
    fn mobiles() {
        assert_eq!(
            ok(Field::OfficerMobile, "１３７５７７３２７７３"),
            "13757732773"
        );
        assert_eq!(ok(Field::OfficerMobile, "+86 138-0577-1234"), "13805771234");
        assert_eq!(ok(Field::OfficerMobile, "138 0577 0899"), "13805770899");
        assert!(matches!(
            normalize(Field::OfficerMobile, "1380577123"),
            Normalized::Invalid(_, Code::InvalidMobile)
        ));
    }

    #[test]
    fn phones() {
        assert_eq!(ok(Field::UnitOfficePhone, "67666336-802"), "67666336-802");
        assert_eq!(ok(Field::UnitFax, "(0577)67281536"), "0577-67281536");
        assert_eq!(
            ok(Field::LeaderOfficePhone, "0577－67070457"),
            "0577-67070457"
        );
        assert_eq!(
            ok(Field::LeaderOfficePhone, "（0577）67271316"),
            "0577-67271316"
        );
        assert_eq!(
            ok(Field::LeaderOfficePhone, "057767222322"),
            "0577-67222322"
        );
        assert_eq!(
            ok(Field::LeaderOfficePhone, "67222322转801"),
            "67222322-801"
        );
        assert!(matches!(
            normalize(Field::UnitFax, "同上"),
            Normalized::Invalid(_, Code::InvalidPhone)
        ));
    }

    /// Every field that holds a phone number reports one it cannot read,
    /// kept as written: letters in it, too few or too many digits.
    #[test]
    fn every_phone_field_flags_what_is_not_a_number() {
        use crate::parse::registration::Kind;
        for field in Field::ALL {
            let bad: &[&str] = match field.kind() {
                Kind::Phone => &[
                    "6712155a",
                    "0577-6712",
                    "0577-671215531234",
                    "电话待定",
                    "abc",
                ],
                Kind::GovNet => &["6015a7", "12", "6712155312345", "待定"],
                _ => continue,
            };
            for &raw in bad {
                match normalize(field, raw) {
                    Normalized::Invalid(Value::Text(kept), Code::InvalidPhone) => {
                        assert_eq!(kept, raw, "{field:?}")
                    }
                    other => panic!("{field:?} {raw}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn births() {
        for (raw, want) in [
            ("1975.03", "1975-03"),
            ("1975年3月", "1975-03"),
            ("1975-3", "1975-03"),
            ("197503", "1975-03"),
            ("1975-03-01", "1975-03"),
            ("1985.10", "1985-10"),
        ] {
            assert_eq!(ok(Field::OfficerBirth, raw), want);
        }
        assert!(matches!(
            normalize(Field::OfficerBirth, "不详"),
            Normalized::Invalid(_, Code::InvalidBirth)
        ));
    }

    #[test]
    fn extra_text_around_values() {
        assert_eq!(
            ok(Field::OfficerMobile, "13805771234（短号661234）"),
            "13805771234"
        );
        assert_eq!(ok(Field::OfficerBirth, "75.03"), "1975-03");
        assert_eq!(
            normalize(Field::OfficerPartyMember, "是（中共党员）"),
            Normalized::Ok(Value::Bool(true))
        );
        assert_eq!(
            normalize(Field::OfficerGender, "男（汉族）"),
            Normalized::Ok(Value::Text("男".into()))
        );
    }

    #[test]
    fn names_emails_and_flags() {
        assert_eq!(ok(Field::OfficerName, "张  三"), "张三");
        assert_eq!(ok(Field::OfficerNativePlace, "浙江 永嘉"), "浙江永嘉");
        assert_eq!(
            ok(Field::OfficerEmail, " HuangWJ＠163．com "),
            "huangwj@163.com"
        );
        assert_eq!(
            normalize(Field::OfficerPartyMember, "共青团员"),
            Normalized::Ok(Value::Bool(false))
        );
        assert_eq!(
            normalize(Field::OfficerPartyMember, "中共党员"),
            Normalized::Ok(Value::Bool(true))
        );
        assert_eq!(
            normalize(Field::OfficerGender, " 男 "),
            Normalized::Ok(Value::Text("男".into()))
        );
        assert_eq!(ok(Field::OfficerQq, "840465842"), "840465842");
    }
}
