//! Free sentences in a mail body, as units type them instead of the form:
//!
//! ```text
//! 分管领导：厉丹芳（副局长），手机13957785650，办公电话67121553，分管宣传、统战、信息
//! 信息员：胡峰平（文秘），男，1982年3月，中共党员，手机13857712669，电子邮箱hfp@yjmz.gov.cn
//! ```
//!
//! A name (with the title in brackets or after it), then comma-separated
//! pieces, each a `label+value` without a colon (`手机13957785650`) or a bare
//! value whose kind shows (男, 1982年3月, 中共党员, 分管…). [`expand`]
//! rewrites such a line into the `label：value` lines the form extractor
//! reads (`信息员姓名：胡峰平`, `职务：文秘`, `手机：13857712669` …); every
//! other line is left as it is.

use crate::parse::labels::{self, Key, Label};
use crate::parse::registration::Section;

/// Titles a title-after-name ends with (`厉丹芳副局长`); also what makes a
/// sentence without a 分管领导/信息员 prefix the leader's.
const LEADER_TITLES: &[&str] = &[
    "局长",
    "主任",
    "书记",
    "镇长",
    "乡长",
    "主席",
    "部长",
    "院长",
    "所长",
    "站长",
    "处长",
    "委员",
    "馆长",
    "行长",
    "社长",
    "队长",
    "区长",
    "县长",
    "科长",
    "组长",
    "会长",
    "秘书长",
];
const OTHER_TITLES: &[&str] = &[
    "干事",
    "科员",
    "文秘",
    "秘书",
    "办事员",
    "信息员",
    "专员",
    "工作人员",
    "职员",
    "文书",
    "助理",
    "联络员",
];
const PARTY_VALUES: &[&str] = &[
    "中共党员",
    "党员",
    "中共预备党员",
    "预备党员",
    "群众",
    "共青团员",
    "团员",
    "无党派",
    "无党派人士",
    "非党员",
    "民主党派",
];

/// Rewrites the free person sentences of a body; `None` when there is none.
pub fn expand(text: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let rewritten = expand_cells(&lines)?;
    let mut out = String::with_capacity(text.len() + 64);
    for (line, new) in lines.iter().zip(rewritten) {
        match new {
            Some(new) => out.push_str(&new),
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    Some(out)
}

/// The person sentences among a table's cells (their texts in reading
/// order; a cell may hold several lines): for each cell, its text with the
/// sentences rewritten as `label：value` lines, or None for a cell without
/// one; `None` when no cell has one. A cell that only names the part
/// (`信息员：`) says whose the next cell's sentence is, as a line does.
pub fn expand_cells(cells: &[&str]) -> Option<Vec<Option<String>>> {
    let mut out = Vec::with_capacity(cells.len());
    let mut changed = false;
    let mut people = 0;
    let mut hint: Option<Section> = None;
    for cell in cells {
        let mut text = String::new();
        let mut found = false;
        for line in cell.lines() {
            match person(line, hint, people) {
                Some(lines) => {
                    text.push_str(&lines);
                    found = true;
                    people += 1;
                    hint = None;
                }
                None => {
                    hint = section_named(line).or(hint);
                    text.push_str(line);
                    text.push('\n');
                }
            }
        }
        changed |= found;
        out.push(found.then_some(text));
    }
    changed.then_some(out)
}

/// The section a line mentions, for the next sentence.
fn section_named(line: &str) -> Option<Section> {
    let t = line.trim();
    if t.is_empty() || t.chars().count() > 20 {
        return None;
    }
    let officer = t.contains("信息员") || t.contains("联络员");
    let leader = t.contains("领导");
    match (leader, officer) {
        (true, false) => Some(Section::Leader),
        (false, true) => Some(Section::Officer),
        _ => None,
    }
}

/// The `label：value` lines of one person's sentence.
fn person(line: &str, hint: Option<Section>, before: usize) -> Option<String> {
    let (section, rest) = match prefix(line) {
        Some((section, rest)) => (Some(section), rest),
        None => (None, line.trim()),
    };
    let pieces: Vec<&str> = rest
        .split(['，', ',', '；', ';'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if pieces.len() < 2 {
        return None;
    }
    let (name, mut title) = name_and_title(pieces[0])?;
    let mut fields: Vec<(&str, String)> = Vec::new();
    let mut recognised = 0;
    for piece in &pieces[1..] {
        if let Some(field) = piece_field(piece) {
            fields.push(field);
            recognised += 1;
        } else if title.is_none() && is_title(piece) {
            // `胡峰平，文秘，…`: the title as a piece of its own.
            title = Some(piece.to_string());
            recognised += 1;
        }
    }
    // Without a 分管领导/信息员 prefix, two recognised pieces are needed
    // before an ordinary sentence is taken for a person.
    let needed = if section.is_some() { 1 } else { 2 };
    if recognised < needed {
        return None;
    }
    let section = section.or(hint).unwrap_or_else(|| {
        let leads = title.as_deref().is_some_and(is_leader_title)
            || fields.iter().any(|(label, _)| *label == "分管工作");
        if leads || (before == 0 && title.is_none()) {
            Section::Leader
        } else {
            Section::Officer
        }
    });
    let anchor = match section {
        Section::Officer => "信息员",
        _ => "分管领导",
    };
    let mut out = format!("{anchor}姓名：{name}\n");
    if let Some(title) = title {
        out.push_str(&format!("职务：{title}\n"));
    }
    for (label, value) in fields {
        out.push_str(&format!("{label}：{value}\n"));
    }
    Some(out)
}

/// `分管领导：…`, `信息员为…`, `我局分管信息工作的领导是…`: the section and
/// the sentence after the prefix.
fn prefix(line: &str) -> Option<(Section, &str)> {
    let t = line.trim();
    if let Some((head, rest)) = t.split_once(['：', ':'])
        && let Some(Label::Anchor {
            section,
            named: false,
        }) = labels::classify(head)
    {
        return Some((section, rest.trim()));
    }
    for word in ["是", "为"] {
        if let Some((head, rest)) = t.split_once(word)
            && head.chars().count() <= 16
        {
            let section = if head.ends_with("信息员") || head.ends_with("联络员") {
                Section::Officer
            } else if head.ends_with("领导") {
                Section::Leader
            } else {
                continue;
            };
            return Some((section, rest.trim()));
        }
    }
    None
}

/// `厉丹芳（副局长）`, `厉丹芳(副局长)`, `厉丹芳 副局长`, `厉丹芳副局长`,
/// `厉丹芳`: a name of 2 to 4 Chinese characters and the title, if any.
fn name_and_title(piece: &str) -> Option<(String, Option<String>)> {
    let piece = piece.trim();
    let (name, title) = if let Some((name, rest)) = piece.split_once(['（', '(']) {
        let title = rest.trim_end_matches(['）', ')']).trim();
        (name.trim(), (!title.is_empty()).then(|| title.to_string()))
    } else if let Some((name, title)) = piece.split_once(char::is_whitespace) {
        (name.trim(), Some(title.trim().to_string()))
    } else {
        match title_suffix(piece) {
            Some(at) if at > 0 => (&piece[..at], Some(piece[at..].to_string())),
            _ => (piece, None),
        }
    };
    let count = name.chars().count();
    let han = name
        .chars()
        .all(|c| ('\u{4e00}'..='\u{9fff}').contains(&c) || c == '·');
    (han && (2..=4).contains(&count) && labels::classify(name).is_none())
        .then(|| (name.to_string(), title))
}

/// Where a title at the end of `text` starts (`副局长` in `厉丹芳副局长`).
fn title_suffix(text: &str) -> Option<usize> {
    LEADER_TITLES
        .iter()
        .chain(OTHER_TITLES)
        .filter_map(|t| text.strip_suffix(t).map(|head| head.len()))
        .map(|mut at| {
            // 副局长, 常务副局长, 党委副书记: the modifiers belong to the title.
            for modifier in ["副", "常务", "党委", "党组", "办公室"] {
                if text[..at].ends_with(modifier) {
                    at -= modifier.len();
                }
            }
            at
        })
        .filter(|&at| (2..=4).contains(&text[..at].chars().count()))
        .max()
}

/// A short piece that ends with a title word (`文秘`, `党政办副主任`).
fn is_title(piece: &str) -> bool {
    piece.chars().count() <= 10
        && labels::classify(piece).is_none()
        && LEADER_TITLES
            .iter()
            .chain(OTHER_TITLES)
            .any(|t| piece.ends_with(t))
}

fn is_leader_title(title: &str) -> bool {
    LEADER_TITLES.iter().any(|t| title.contains(t))
}

/// One piece after the name as a canonical label and its value.
fn piece_field(piece: &str) -> Option<(&'static str, String)> {
    let p = piece.trim().trim_end_matches(['。', '.']);
    match p {
        "男" | "女" => return Some(("性别", p.to_string())),
        _ => {}
    }
    if PARTY_VALUES.contains(&p) {
        return Some(("政治面貌", p.to_string()));
    }
    if let Some(birth) = birth(p) {
        return Some(("出生年月", birth));
    }
    for lead in ["分管", "负责", "主管"] {
        if let Some(rest) = p.strip_prefix(lead)
            && !rest.is_empty()
            && labels::classify(p).is_none()
        {
            // `分管工作：办公室、文秘`: the label's own 工作 goes with it.
            let rest = rest
                .strip_prefix("工作")
                .filter(|r| r.starts_with(['：', ':']))
                .unwrap_or(rest);
            let rest = rest.trim_start_matches(['：', ':']).trim();
            let rest = rest
                .strip_suffix("工作")
                .filter(|r| !r.is_empty())
                .unwrap_or(rest);
            return Some(("分管工作", rest.to_string()));
        }
    }
    let (key, value) = labelled(p)?;
    let label = match key {
        Key::Name => return None,
        Key::Title => "职务",
        Key::Duties => "分管工作",
        Key::OfficePhone | Key::UnitPhone => "办公电话",
        Key::Mobile => "手机",
        Key::HomePhone => "宅电",
        Key::GovNet => "机关网",
        Key::Email => "电子邮箱",
        Key::Qq => "QQ",
        Key::Gender => "性别",
        Key::Birth => "出生年月",
        Key::NativePlace => "籍贯",
        Key::Party => "政治面貌",
        Key::Resume => "个人简历",
        Key::Fax => "传真",
        Key::UnitName | Key::Address => return None,
    };
    Some((label, value))
}

/// `手机13957785650`, `手机：139…`, `QQ 12345678`, `电子邮箱hfp@…`: the
/// longest label the piece starts with, and the rest.
fn labelled(piece: &str) -> Option<(Key, String)> {
    if let Some((head, rest)) = piece.split_once(['：', ':'])
        && let Some(Label::Field(key)) = labels::classify(head)
    {
        let rest = rest.trim();
        return (!rest.is_empty()).then(|| (key, rest.to_string()));
    }
    let ends: Vec<usize> = piece
        .char_indices()
        .map(|(i, c)| i + c.len_utf8())
        .take(10)
        .collect();
    for &end in ends.iter().rev() {
        let (head, rest) = piece.split_at(end);
        let rest = rest.trim_start_matches(['：', ':', ' ', '为', '是']).trim();
        if rest.is_empty() {
            continue;
        }
        if let Some(Label::Field(key)) = labels::classify(head) {
            return Some((key, rest.to_string()));
        }
    }
    None
}

/// `1982年3月`, `1982.03`, `1982-3`, `1982年3月出生`, `1982年3月生`.
fn birth(piece: &str) -> Option<String> {
    let core = piece
        .strip_suffix("出生")
        .or_else(|| piece.strip_suffix("生"))
        .unwrap_or(piece)
        .trim();
    let digits: String = core.chars().filter(char::is_ascii_digit).collect();
    let shape_ok = core
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '年' | '月' | '日' | '.' | '-' | '/'));
    (shape_ok
        && (5..=8).contains(&digits.len())
        && (core.starts_with("19") || core.starts_with("20")))
    .then(|| core.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_and_an_officer_in_sentences() {
        let body = "县府办信息督查科：\n分管领导：厉丹芳（副局长），手机13957785650，办公电话67121553，分管宣传、统战、信息\n信息员：胡峰平（文秘），男，1982年3月，中共党员，手机13857712669，电子邮箱hfp@yjmz.gov.cn，QQ 12345678\n";
        let out = expand(body).expect("two sentences");
        assert_eq!(
            out,
            "县府办信息督查科：\n\
             分管领导姓名：厉丹芳\n职务：副局长\n手机：13957785650\n办公电话：67121553\n分管工作：宣传、统战、信息\n\
             信息员姓名：胡峰平\n职务：文秘\n性别：男\n出生年月：1982年3月\n政治面貌：中共党员\n手机：13857712669\n电子邮箱：hfp@yjmz.gov.cn\nQQ：12345678\n"
        );
    }

    #[test]
    fn sentences_without_a_prefix_take_their_part_from_the_title_or_the_line_before() {
        let out = expand("厉丹芳副局长，手机13957785650，分管宣传\n信息员如下：\n胡峰平，手机13857712669，办公电话67121554\n").expect("sentences");
        assert!(
            out.starts_with("分管领导姓名：厉丹芳\n职务：副局长\n"),
            "{out}"
        );
        assert!(
            out.contains("信息员姓名：胡峰平\n手机：13857712669\n办公电话：67121554\n"),
            "{out}"
        );
    }

    #[test]
    fn a_name_and_a_title_alone() {
        assert_eq!(
            expand("分管领导：厉丹芳，副局长\n").as_deref(),
            Some("分管领导姓名：厉丹芳\n职务：副局长\n")
        );
    }

    #[test]
    fn a_title_may_stand_as_a_piece_of_its_own() {
        let out = expand("信息员：胡峰平，党政办文秘，男，手机13857712669\n").expect("a sentence");
        assert_eq!(
            out,
            "信息员姓名：胡峰平\n职务：党政办文秘\n性别：男\n手机：13857712669\n"
        );
    }

    #[test]
    fn forms_and_ordinary_text_are_left_alone() {
        for body in [
            "单位：永嘉县三江街道办事处\n分管领导姓名：刘海乐\n职务：党工委副书记\n分管工作：办公室、文秘、信息、档案\n",
            "根据通知要求，现将我街道分管政务信息领导及信息员报送如下：\n",
            "您好，附件是我单位的登记表，请查收，谢谢！\n",
            "信息员：麻艳\n",
        ] {
            assert_eq!(expand(body), None, "{body}");
        }
    }
}
