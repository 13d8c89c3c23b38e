//! Finding the 登记表 in a grid and reading its values, by label and
//! position.
//!
//! One extractor serves every format: it sees only [`Grid`]s. It finds the
//! form wherever it stands (any sheet, with or without a title, next to a
//! blank copy), takes a value from the right of its label or from under a
//! header row, and decides whose value it is — the 分管领导's or the
//! 信息员's — by where the label stands relative to the part's anchor
//! (分管领导姓名 / 信息员姓名), since the same labels appear in both parts.
//!
//! It returns raw text per field; normalising and checking values is
//! `crate::parse::normalize`.
//!
//! Layouts understood:
//! - label left of value (the notice's template, `标签：值` body lines, inline
//!   `单位：X` cells, several pairs per line);
//! - a header row of labels with values underneath;
//! - a row per person (`分管领导 | 张三 | 副局长 …` under `类别 | 姓名 | 职务 …`);
//! - a column per person (`项目 | 分管领导 | 信息员` with rows `姓名 | 张三 | 李四`).

use std::collections::{BTreeMap, HashMap};

use crate::parse::grid::Grid;
use crate::parse::labels::{self, Key, Label};
use crate::parse::registration::{Field, Kind, Section};

/// Sub-columns per grid column: inline `标签：值` pairs inside one cell become
/// neighbouring virtual cells without disturbing the real columns.
const SUB: u32 = 64;
/// Rows a tall merged cell is indexed under (a hostile rowspan must not make
/// the index huge).
const MAX_INDEXED_ROWSPAN: u32 = 256;

/// The raw values of one form found in a grid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawForm {
    pub values: BTreeMap<Field, String>,
    /// The unit a title names (`永嘉县教育局…登记表`), for matching when the
    /// form's 单位 is empty; not a value of the form.
    pub title_unit: Option<String>,
}

impl RawForm {
    /// Whether the form carries anything about a person (a blank template
    /// carries only labels, or a unit name pre-filled by the office).
    pub fn has_person(&self) -> bool {
        self.values.keys().any(|f| f.section() != Section::Unit)
    }

    pub fn filled(&self) -> usize {
        self.values.len()
    }

    /// Takes the unit fields this form lacks from another (e.g. a
    /// `填报单位：X` line above a Word table).
    pub fn fill_unit_from(&mut self, other: &RawForm) {
        if self.title_unit.is_none() {
            self.title_unit.clone_from(&other.title_unit);
        }
        for (field, value) in &other.values {
            if field.section() == Section::Unit {
                self.values.entry(*field).or_insert_with(|| value.clone());
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Node {
    row: u32,
    last_row: u32,
    col: u32,
    last_col: u32,
    text: String,
    label: Option<Label>,
}

impl Node {
    fn before(&self, other: &Node) -> bool {
        (self.row, self.col) < (other.row, other.col)
    }
}

/// Every form found in `grid`, in reading order. A grid holding two forms
/// (stacked, or side by side) yields two.
pub fn extract(grid: &Grid) -> Vec<RawForm> {
    let nodes = expand(grid);
    if nodes.is_empty() {
        return Vec::new();
    }
    split_regions(&nodes)
        .into_iter()
        .map(|region| Layout::new(region).read())
        .map(split_person_lines)
        .filter(|form| !form.values.is_empty() || form.title_unit.is_some())
        .collect()
}

/// A person written on one line without labels — `分管领导：王建国 副局长
/// 13905771111` — leaves the whole line in the name. The name is the first
/// word; a mobile number, an e-mail address, a phone number and a title
/// among the other words fill those fields when the form left them empty.
fn split_person_lines(mut form: RawForm) -> RawForm {
    use Field::*;
    for (name, title, mobile, phone, email) in [
        (
            LeaderName,
            LeaderTitle,
            LeaderMobile,
            LeaderOfficePhone,
            LeaderEmail,
        ),
        (
            OfficerName,
            OfficerTitle,
            OfficerMobile,
            OfficerOfficePhone,
            OfficerEmail,
        ),
    ] {
        let Some(value) = form.values.get(&name).cloned() else {
            continue;
        };
        let words: Vec<&str> = value
            .split(|c: char| c.is_whitespace() || matches!(c, '，' | ',' | '、' | '；' | ';' | '/'))
            .filter(|w| !w.is_empty())
            .collect();
        // `张 三` is a padded name, not a name and a title.
        if words.len() < 2 || words[0].chars().count() < 2 {
            continue;
        }
        let mut rest: Vec<(Field, String)> = Vec::new();
        for word in &words[1..] {
            let digits: String = word.chars().filter(char::is_ascii_digit).collect();
            let field = if word.contains('@') || word.contains('＠') {
                email
            } else if digits.len() == 11
                && digits.starts_with('1')
                && digits.len() + 2 >= word.chars().count()
            {
                mobile
            } else if (7..=12).contains(&digits.len()) && digits.len() + 2 >= word.chars().count() {
                phone
            } else if digits.is_empty() && word.chars().count() <= 12 {
                title
            } else {
                // Something we cannot place: keep the line as written.
                rest.clear();
                break;
            };
            rest.push((field, (*word).to_string()));
        }
        if rest.is_empty() {
            continue;
        }
        form.values.insert(name, words[0].to_string());
        for (field, word) in rest {
            form.values.entry(field).or_insert(word);
        }
    }
    form
}

/// Turns cells into nodes, splitting inline `标签：值` text into label and
/// value nodes on sub-columns.
fn expand(grid: &Grid) -> Vec<Node> {
    let mut nodes = Vec::new();
    for cell in &grid.cells {
        let row = cell.row;
        let last_row = cell.last_row();
        let col = cell.col.saturating_mul(SUB);
        let last_col = cell
            .last_col()
            .saturating_add(1)
            .saturating_mul(SUB)
            .saturating_sub(1);
        let text = cell.text.trim();
        if text.is_empty() {
            continue;
        }
        if let Some(label) = labels::classify(text) {
            nodes.push(Node {
                row,
                last_row,
                col,
                last_col,
                text: text.into(),
                label: Some(label),
            });
            continue;
        }
        let pieces = split_inline(text);
        let count = u32::try_from(pieces.len()).unwrap_or(u32::MAX).min(SUB);
        for (i, (piece, label)) in pieces.into_iter().take(SUB as usize).enumerate() {
            let i = u32::try_from(i).unwrap_or(0);
            let sub_last = if i + 1 == count { last_col } else { col + i };
            nodes.push(Node {
                row,
                last_row,
                col: col + i,
                last_col: sub_last,
                text: piece,
                label,
            });
        }
    }
    nodes.sort_by_key(|n| (n.row, n.col));
    nodes
}

fn is_separator(c: char) -> bool {
    c.is_whitespace() || matches!(c, '，' | ',' | '；' | ';' | '。' | '\u{3000}')
}

fn is_colon(c: char) -> bool {
    matches!(c, ':' | '：' | '︰')
}

/// Splits `单位：X，地址：Y` into `[单位, X, 地址, Y]`, each piece with its
/// label (None for a value). Text without inline labels comes back whole.
/// Also splits `手机 13805771234` (a label and its value after a space), as
/// PDF text lines and hand-typed bodies write them.
fn split_inline(text: &str) -> Vec<(String, Option<Label>)> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    // (label start byte, colon byte, label)
    let mut starts: Vec<(usize, usize, Label)> = Vec::new();
    for (k, &(pos, c)) in chars.iter().enumerate() {
        if !is_colon(c) {
            continue;
        }
        // The label runs back from the colon to the previous separator or
        // colon; try the longest candidate first, then shorter suffixes so
        // that `李松军职务：` still finds 职务.
        let floor = starts.last().map_or(0, |s| s.1 + 1);
        let mut begin = k;
        while begin > 0 {
            let (p, ch) = chars[begin - 1];
            if p < floor || is_separator(ch) || is_colon(ch) {
                break;
            }
            begin -= 1;
        }
        for &(start, _) in &chars[begin..k] {
            if let Some(label @ (Label::Field(_) | Label::Anchor { .. } | Label::Other)) =
                labels::classify(&text[start..pos])
            {
                starts.push((start, pos, label));
                break;
            }
        }
    }
    if starts.is_empty() {
        return split_spaced(text);
    }
    // Separators between pairs go; a value's own ending (the `。` of a
    // résumé that ends the line) stays, as written.
    let trim = |s: &str, last: bool| {
        let s = s.trim_start_matches(|c: char| is_separator(c) || is_colon(c));
        if last {
            s.trim_end().to_string()
        } else {
            s.trim_end_matches(|c: char| is_separator(c) || c == '、')
                .to_string()
        }
    };
    let mut out = Vec::new();
    let head = trim(&text[..starts[0].0], false);
    if !head.is_empty() {
        out.push((head, None));
    }
    for (i, &(_, colon, label)) in starts.iter().enumerate() {
        let end = starts.get(i + 1).map_or(text.len(), |s| s.0);
        let label_text = text[starts[i].0..colon].to_string();
        out.push((label_text, Some(label)));
        let colon_len = text[colon..].chars().next().map_or(1, char::len_utf8);
        let value = trim(&text[colon + colon_len..end], i + 1 == starts.len());
        if !value.is_empty() {
            out.push((value, None));
        }
    }
    out
}

/// `手机 13805771234` or `办 电 67672148`: a label (possibly padded with
/// spaces between its characters) followed by a value.
fn split_spaced(text: &str) -> Vec<(String, Option<Label>)> {
    let tokens: Vec<&str> = text.split_whitespace().collect();
    if tokens.len() < 2 || text.contains('\n') {
        return vec![(text.to_string(), None)];
    }
    let mut out: Vec<(String, Option<Label>)> = Vec::new();
    let mut i = 0;
    let mut found = false;
    while i < tokens.len() {
        let mut matched = None;
        for k in (1..=4.min(tokens.len() - i)).rev() {
            let group = &tokens[i..i + k];
            if k > 1 && group.iter().any(|t| t.chars().count() > 2) {
                continue;
            }
            if let Some(label @ (Label::Field(_) | Label::Anchor { .. })) =
                labels::classify(&group.concat())
            {
                matched = Some((k, label));
                break;
            }
        }
        match matched {
            Some((k, label)) => {
                out.push((tokens[i..i + k].concat(), Some(label)));
                found = true;
                i += k;
            }
            None => {
                match out.last_mut() {
                    Some((value, None)) => {
                        value.push(' ');
                        value.push_str(tokens[i]);
                    }
                    _ => out.push((tokens[i].to_string(), None)),
                }
                i += 1;
            }
        }
    }
    // Only a label first makes this a labelled line; `浙江 永嘉` stays a value.
    if found && out.first().is_some_and(|(_, l)| l.is_some()) {
        out
    } else {
        vec![(text.to_string(), None)]
    }
}

/// Splits the nodes into one region per form when the grid holds several
/// (two 分管领导 anchors). Stacked forms split by rows at the unit label or
/// title above each later anchor; side-by-side forms split by columns.
fn split_regions(nodes: &[Node]) -> Vec<Vec<Node>> {
    let anchors: Vec<&Node> = nodes
        .iter()
        .filter(|n| {
            matches!(
                n.label,
                Some(Label::Anchor {
                    section: Section::Leader,
                    ..
                })
            )
        })
        .collect();
    if anchors.len() < 2 {
        return vec![nodes.to_vec()];
    }
    let same_row = anchors.iter().all(|a| a.row == anchors[0].row);
    if same_row {
        let mut cuts: Vec<u32> = anchors
            .iter()
            .skip(1)
            .map(|a| form_start_col(nodes, a))
            .collect();
        cuts.dedup();
        return partition(nodes, &cuts, |n| n.col);
    }
    let mut cuts = Vec::new();
    for pair in anchors.windows(2) {
        let (prev, next) = (pair[0], pair[1]);
        if next.row == prev.row {
            continue;
        }
        // Start the next form at its title or unit label, if one stands
        // between the two anchors.
        let start = nodes
            .iter()
            .filter(|n| n.row > prev.row && n.row <= next.row)
            .filter(|n| {
                matches!(n.label, Some(Label::Title | Label::Field(Key::UnitName)))
                    || matches!(n.label, Some(Label::Field(Key::Address)))
            })
            .map(|n| n.row)
            .min()
            .unwrap_or(next.row);
        cuts.push(start);
    }
    partition(nodes, &cuts, |n| n.row)
}

fn form_start_col(nodes: &[Node], anchor: &Node) -> u32 {
    // The unit label of a side-by-side copy stands at or left of its anchor,
    // in the rows above it; without one, the anchor's own column.
    nodes
        .iter()
        .filter(|n| n.row < anchor.row && matches!(n.label, Some(Label::Field(Key::UnitName))))
        .filter(|n| n.col <= anchor.col && n.col > 0)
        .map(|n| n.col)
        .max()
        .unwrap_or(anchor.col)
}

fn partition(nodes: &[Node], cuts: &[u32], pos: impl Fn(&Node) -> u32) -> Vec<Vec<Node>> {
    let mut regions = vec![Vec::new(); cuts.len() + 1];
    for n in nodes {
        let idx = cuts.iter().filter(|&&c| pos(n) >= c).count();
        regions[idx].push(n.clone());
    }
    regions.retain(|r| !r.is_empty());
    regions
}

/// Neighbour lookups over one region.
struct Layout {
    nodes: Vec<Node>,
    /// row → indices of nodes covering that row, sorted by column.
    rows: BTreeMap<u32, Vec<usize>>,
    /// The anchors (分管领导, 信息员 …), for [`Layout::section_of`].
    anchors: Vec<usize>,
    /// [`Layout::column_header`] of each node once known: a body of
    /// thousands of lines in one column would otherwise walk the column
    /// up from every line (quadratic).
    headers: std::cell::RefCell<Vec<Option<Option<usize>>>>,
}

impl Layout {
    fn new(nodes: Vec<Node>) -> Self {
        let mut rows: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (i, n) in nodes.iter().enumerate() {
            let last = n.last_row.min(n.row.saturating_add(MAX_INDEXED_ROWSPAN));
            for r in n.row..=last {
                rows.entry(r).or_default().push(i);
            }
        }
        for list in rows.values_mut() {
            list.sort_by_key(|&i| nodes[i].col);
        }
        let anchors = (0..nodes.len())
            .filter(|&i| matches!(nodes[i].label, Some(Label::Anchor { .. })))
            .collect();
        let headers = std::cell::RefCell::new(vec![None; nodes.len()]);
        Self {
            nodes,
            rows,
            anchors,
            headers,
        }
    }

    /// The nearest node left of `i` on its first row.
    fn left(&self, i: usize) -> Option<usize> {
        let n = &self.nodes[i];
        self.rows
            .get(&n.row)?
            .iter()
            .copied()
            .filter(|&j| j != i && self.nodes[j].last_col < n.col)
            .max_by_key(|&j| self.nodes[j].last_col)
    }

    /// The nearest node right of `i` on its first row.
    fn right(&self, i: usize) -> Option<usize> {
        let n = &self.nodes[i];
        self.rows
            .get(&n.row)?
            .iter()
            .copied()
            .filter(|&j| j != i && self.nodes[j].col > n.last_col)
            .min_by_key(|&j| self.nodes[j].col)
    }

    /// The nearest node above `i` that covers `i`'s first column.
    fn above(&self, i: usize) -> Option<usize> {
        let n = &self.nodes[i];
        self.rows.range(..n.row).rev().find_map(|(_, list)| {
            list.iter().copied().find(|&j| {
                let m = &self.nodes[j];
                m.last_row < n.row && m.col <= n.col && n.col <= m.last_col
            })
        })
    }

    fn label(&self, i: usize) -> Option<Label> {
        self.nodes[i].label
    }

    fn is_value(&self, i: usize) -> bool {
        self.nodes[i].label.is_none()
    }

    /// A label heads a column when no value stands right of it: the values
    /// of a header row stand underneath.
    fn is_header(&self, i: usize) -> bool {
        self.right(i).is_none_or(|j| !self.is_value(j))
    }

    /// Whether `h` stands in a row of column headers: labels only, at least
    /// three (`类别 | 姓名 | 性别 | 职务`), not one empty field's label.
    fn is_header_row(&self, h: usize) -> bool {
        let row = self.nodes[h].row;
        let Some(list) = self.rows.get(&row) else {
            return false;
        };
        let own: Vec<usize> = list
            .iter()
            .copied()
            .filter(|&j| self.nodes[j].row == row)
            .collect();
        own.len() >= 3 && own.iter().all(|&j| !self.is_value(j))
    }

    /// The first label above `i`, through values, if it heads a column.
    fn column_header(&self, i: usize) -> Option<usize> {
        // Every value passed on the way up has the same answer: remember it.
        let mut chain = Vec::new();
        let mut cur = i;
        let found = loop {
            if let Some(known) = self.headers.borrow()[cur] {
                break known;
            }
            chain.push(cur);
            match self.above(cur) {
                None => break None,
                Some(j) if self.label(j).is_some() => break self.is_header(j).then_some(j),
                Some(j) => cur = j,
            }
        };
        let mut cache = self.headers.borrow_mut();
        for c in chain {
            cache[c] = Some(found);
        }
        found
    }

    /// The first label left of `i`, through values.
    fn row_label(&self, i: usize) -> Option<usize> {
        let mut cur = i;
        while let Some(j) = self.left(cur) {
            if self.label(j).is_some() {
                return Some(j);
            }
            cur = j;
        }
        None
    }

    /// The part a label belongs to: the nearest anchor above-left of it in
    /// reading order (the latest row, then the rightmost), else the unit
    /// part. Side-by-side parts resolve to the anchor on their own side.
    fn section_of(&self, i: usize) -> Section {
        let n = &self.nodes[i];
        self.anchors
            .iter()
            .map(|&a| &self.nodes[a])
            .filter(|a| {
                a.col <= n.col
                    && (a.row < n.row
                        || a.row == n.row && a.col < n.col
                        || a.row == n.row && a.col == n.col)
            })
            .max_by_key(|a| (a.row, a.col))
            .and_then(|a| match a.label {
                Some(Label::Anchor { section, .. }) => Some(section),
                _ => None,
            })
            .unwrap_or(Section::Unit)
    }

    /// Which field the value node `i` holds, if any.
    fn field_of(&self, i: usize) -> Option<Field> {
        let left = self.left(i);
        match left.and_then(|j| self.label(j)) {
            Some(Label::Field(key)) => {
                let j = left?;
                // A column per person: the person's anchor heads the column.
                let section = match self.column_header(i).and_then(|h| self.label(h)) {
                    Some(Label::Anchor {
                        section,
                        named: false,
                    }) => section,
                    _ => self.section_of(j),
                };
                labels::field_for(key, section)
            }
            Some(Label::Anchor { section, named }) => {
                // A row per person (`分管领导 | 张三 | 副局长` under `类别 |
                // 姓名 | 职务`): the header above says the field — unless the
                // anchor itself stands under a field label (`Email：` on the
                // line before `信息员：池佳`), a line of its own.
                let anchor = left?;
                let category_column = self
                    .above(anchor)
                    .and_then(|a| self.label(a))
                    .is_none_or(|l| !matches!(l, Label::Field(_)));
                let header = self.column_header(i).filter(|&h| self.is_header_row(h));
                let key = match (named, header.and_then(|h| self.label(h))) {
                    (false, Some(Label::Field(key))) if category_column => key,
                    _ => Key::Name,
                };
                labels::field_for(key, section)
            }
            Some(Label::Context | Label::Other | Label::Title) => None,
            None => {
                if let Some(field) = self.continued(i) {
                    return Some(field);
                }
                let header = self.column_header(i)?;
                match self.label(header)? {
                    Label::Field(key) => {
                        let section = self
                            .row_label(i)
                            .and_then(|r| match self.label(r) {
                                Some(Label::Anchor { section, .. }) => Some(section),
                                _ => None,
                            })
                            .unwrap_or_else(|| self.section_of(header));
                        labels::field_for(key, section)
                    }
                    // A header row naming the person: 分管领导姓名 | 职务 | …
                    Label::Anchor {
                        section,
                        named: true,
                    } => labels::field_for(Key::Name, section),
                    Label::Anchor { section, .. } => match self.row_label(i) {
                        Some(row_label) => match self.label(row_label)? {
                            Label::Field(key) => labels::field_for(key, section),
                            _ => None,
                        },
                        // `分管领导 | 职务 | 手机` over the values: the person's
                        // part names its column of names.
                        None => labels::field_for(Key::Name, section),
                    },
                    _ => None,
                }
            }
        }
    }

    /// A résumé written over several lines (`个人简历：1991.09-1995.07 …`,
    /// then `1995.08-2000.12 …` alone on the next line): a line that starts
    /// with a period, first on its row, under the résumé's label or under
    /// lines that continue it (at most [`MAX_RESUME_LINES`] up).
    fn continued(&self, i: usize) -> Option<Field> {
        let mut cur = i;
        for _ in 0..MAX_RESUME_LINES {
            if self.left(cur).is_some() || !starts_period(&self.nodes[cur].text) {
                return None;
            }
            let j = self.above(cur)?;
            match self.label(j) {
                Some(Label::Field(Key::Resume)) => {
                    return labels::field_for(Key::Resume, self.section_of(j));
                }
                None => cur = j,
                Some(_) => return None,
            }
        }
        None
    }

    fn read(self) -> RawForm {
        let mut form = RawForm::default();
        let mut order: Vec<usize> = (0..self.nodes.len()).collect();
        order.sort_by(|&a, &b| {
            if self.nodes[a].before(&self.nodes[b]) {
                std::cmp::Ordering::Less
            } else {
                std::cmp::Ordering::Greater
            }
        });
        // The first value of a field wins, except that a text field (a
        // résumé written one line per row beside one tall label) gathers
        // the further values its own label claims.
        let mut claimed_by: HashMap<Field, Option<usize>> = HashMap::new();
        for i in order {
            if !self.is_value(i) {
                continue;
            }
            let Some(field) = self.field_of(i) else {
                continue;
            };
            let Some(value) = clean_value(&self.nodes[i].text) else {
                continue;
            };
            let label = self.left(i).filter(|&j| self.label(j).is_some());
            let continues = label.is_none() && self.continued(i).is_some();
            match claimed_by.get(&field) {
                None => {
                    claimed_by.insert(field, label);
                    form.values.insert(field, value);
                }
                Some(first)
                    if field.kind() == Kind::Text
                        && (continues || label.is_some() && *first == label) =>
                {
                    if let Some(text) = form.values.get_mut(&field) {
                        text.push('\n');
                        text.push_str(&value);
                    }
                }
                Some(_) => {}
            }
        }
        // `永嘉县教育局分管政务信息领导及信息员登记表`: a title that names the
        // unit helps to match a form whose 单位 is empty.
        if let Some(unit) = self
            .nodes
            .iter()
            .filter(|n| n.text.contains("登记表") && matches!(n.label, None | Some(Label::Title)))
            .find_map(|n| unit_in_title(&n.text))
        {
            form.title_unit = Some(unit);
        }
        form
    }
}

/// Lines of one résumé looked through for its label.
const MAX_RESUME_LINES: usize = 20;

/// Whether a line starts with a résumé period's year (`1995.08-2000.12`,
/// `2001年1月至今`).
fn starts_period(text: &str) -> bool {
    let head: Vec<char> = text.trim_start().chars().take(5).collect();
    head.len() == 5
        && (head.starts_with(&['1', '9']) || head.starts_with(&['2', '0']))
        && head[..4].iter().all(char::is_ascii_digit)
        && matches!(
            head[4],
            '.' | '．' | '年' | '-' | '/' | '～' | '~' | '0'..='9'
        )
}

/// The unit a form's title names before the form's own name, if any.
fn unit_in_title(title: &str) -> Option<String> {
    let flat: String = title.chars().filter(|c| !c.is_whitespace()).collect();
    let cut = [
        "分管政务信息",
        "分管信息",
        "政务信息",
        "分管领导",
        "信息员",
        "登记表",
    ]
    .iter()
    .filter_map(|w| flat.find(w))
    .min()?;
    let prefix = flat[..cut].trim_matches(|c: char| !c.is_alphanumeric() && !is_cjk_char(c));
    let prefix = prefix.strip_suffix('的').unwrap_or(prefix);
    let plausible = |name: &str| {
        name.chars().count() >= 3
            && !name.contains("关于")
            && !name.contains("通知")
            && [
                "局", "镇", "乡", "街道", "办", "委", "政府", "院", "所", "中心", "处", "会", "部",
                "站", "队",
            ]
            .iter()
            .any(|end| name.ends_with(end))
    };
    if plausible(prefix) {
        return Some(prefix.to_string());
    }
    // `…登记表（瓯北街道）`
    let after = &flat[flat.find("登记表")? + "登记表".len()..];
    let inner = after
        .trim_start_matches(['(', '（'])
        .split([')', '）'])
        .next()?;
    (after.starts_with(['(', '（']) && plausible(inner)).then(|| inner.to_string())
}

fn is_cjk_char(c: char) -> bool {
    matches!(c as u32, 0x3400..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x3FFFF)
}

/// Trims a value and drops placeholders that mean "nothing" (无, /, —).
fn clean_value(text: &str) -> Option<String> {
    let t = text.trim_matches(|c: char| c.is_whitespace() || is_colon(c) || c == '\u{3000}');
    let t = collapse_repeat(t);
    let placeholder = matches!(
        t.as_str(),
        "" | "无"
            | "/"
            | "／"
            | "-"
            | "—"
            | "——"
            | "－"
            | "暂无"
            | "空"
            | "未填"
            | "略"
            | "\\"
            | "×"
    );
    (!placeholder).then_some(t)
}

/// LibreOffice round trips can repeat a content control's text k times
/// (`浙江绍兴浙江绍兴`); a value that is an exact k-fold repeat of a piece of
/// two or more characters is read once.
fn collapse_repeat(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let n = chars.len();
    for unit in 2..=n / 2 {
        if n.is_multiple_of(unit) && chars.chunks(unit).all(|c| c == &chars[..unit]) {
            // Numbers repeat legitimately (e.g. 66666666); only collapse text.
            if chars[..unit].iter().any(|c| !c.is_ascii_digit()) {
                return chars[..unit].iter().collect();
            }
        }
    }
    text.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::grid::Cell;

    fn grid(rows: &[&[&str]]) -> Grid {
        let mut g = Grid::new("t");
        for (r, row) in rows.iter().enumerate() {
            for (c, text) in row.iter().enumerate() {
                g.push(Cell::new(r as u32, c as u32, *text));
            }
        }
        g
    }

    fn get(f: &RawForm, field: Field) -> Option<&str> {
        f.values.get(&field).map(String::as_str)
    }

    #[test]
    fn template_layout_tells_leader_from_officer() {
        let mut g = grid(&[
            &["分管政务信息领导及信息员登记表"],
            &["单 位", "瓯北街道办事处", "", "地 址", "解放街52号"],
            &[
                "分管领导姓名",
                "麻丽洁",
                "职 务",
                "副主任",
                "分管工作",
                "信息",
            ],
            &["联系方式", "办 电", "67672148", "手 机", "13857712669"],
            &["", "宅 电", "", "机关网", "601567"],
            &["", "E-mail:"],
            &["信息员姓名", "黄文建", "性 别", "男", "职 务", "科员"],
            &["联 系 方 式", "办 电", "67093132", "手 机", "13505775694"],
            &["", "QQ 号码", "840465842", "E-mail:", "hw@163.com"],
        ]);
        g.cells[0].colspan = 6;
        let forms = extract(&g);
        assert_eq!(forms.len(), 1);
        let f = &forms[0];
        assert_eq!(get(f, Field::UnitName), Some("瓯北街道办事处"));
        assert_eq!(get(f, Field::LeaderTitle), Some("副主任"));
        assert_eq!(get(f, Field::LeaderMobile), Some("13857712669"));
        assert_eq!(get(f, Field::LeaderGovNet), Some("601567"));
        assert_eq!(get(f, Field::LeaderEmail), None);
        assert_eq!(get(f, Field::OfficerName), Some("黄文建"));
        assert_eq!(get(f, Field::OfficerTitle), Some("科员"));
        assert_eq!(get(f, Field::OfficerMobile), Some("13505775694"));
        assert_eq!(get(f, Field::OfficerEmail), Some("hw@163.com"));
        assert_eq!(get(f, Field::OfficerQq), Some("840465842"));
    }

    #[test]
    fn body_lines_with_several_pairs() {
        let g = grid(&[
            &["单位：永嘉县审计局"],
            &["分管领导：李松军，职务：纪检组长，手机：13957765165，办电：0577-67422869"],
            &["信息员：高胜正，职务：秘书，手机：13805776240，QQ：433636，邮箱：gsz665@126.com"],
            &["县审计局办公室"],
        ]);
        let f = &extract(&g)[0];
        assert_eq!(get(f, Field::UnitName), Some("永嘉县审计局"));
        assert_eq!(get(f, Field::LeaderName), Some("李松军"));
        assert_eq!(get(f, Field::LeaderOfficePhone), Some("0577-67422869"));
        assert_eq!(get(f, Field::OfficerTitle), Some("秘书"));
        assert_eq!(get(f, Field::OfficerEmail), Some("gsz665@126.com"));
        assert_eq!(f.values.len(), 10);
    }

    #[test]
    fn row_per_person_and_column_per_person() {
        let rows = grid(&[
            &["单位", "县民政局"],
            &["类别", "姓名", "职务", "手机"],
            &["分管领导", "张三", "副局长", "13800000001"],
            &["信息员", "李四", "科员", "13800000002"],
        ]);
        let f = &extract(&rows)[0];
        assert_eq!(get(f, Field::LeaderName), Some("张三"));
        assert_eq!(get(f, Field::LeaderTitle), Some("副局长"));
        assert_eq!(get(f, Field::OfficerMobile), Some("13800000002"));

        let cols = grid(&[
            &["项目", "分管领导", "信息员"],
            &["姓名", "张三", "李四"],
            &["手机", "13800000001", "13800000002"],
        ]);
        let f = &extract(&cols)[0];
        assert_eq!(get(f, Field::LeaderName), Some("张三"));
        assert_eq!(get(f, Field::OfficerName), Some("李四"));
        assert_eq!(get(f, Field::LeaderMobile), Some("13800000001"));
        assert_eq!(get(f, Field::OfficerMobile), Some("13800000002"));
    }

    #[test]
    fn side_by_side_parts_and_section_title_rows() {
        let g = grid(&[
            &["单位", "县统计局"],
            &["分管领导", "林一", "信息员", "周二"],
            &["职务", "副局长", "职务", "科员"],
            &["手机", "13800000001", "手机", "13800000002"],
        ]);
        let f = &extract(&g)[0];
        assert_eq!(get(f, Field::LeaderTitle), Some("副局长"));
        assert_eq!(get(f, Field::OfficerTitle), Some("科员"));
        assert_eq!(get(f, Field::OfficerMobile), Some("13800000002"));

        let mut g = grid(&[
            &["分管领导情况"],
            &["姓名", "林一", "手机", "13800000001"],
            &["信息员情况"],
            &["姓名", "周二", "手机", "13800000002"],
            &["个人简历"],
            &["2001.09 参加工作"],
        ]);
        for c in &mut g.cells {
            if c.text.ends_with("情况") || c.text == "个人简历" || c.text.starts_with("2001")
            {
                c.colspan = 4;
            }
        }
        let f = &extract(&g)[0];
        assert_eq!(get(f, Field::LeaderName), Some("林一"));
        assert_eq!(get(f, Field::OfficerName), Some("周二"));
        assert_eq!(get(f, Field::OfficerMobile), Some("13800000002"));
        assert_eq!(get(f, Field::OfficerResume), Some("2001.09 参加工作"));
    }

    #[test]
    fn resume_one_line_per_row_beside_a_tall_label() {
        let mut g = grid(&[
            &["信息员姓名", "周二"],
            &["个人简历", "1990.09 入学"],
            &["", "1994.07 参加工作"],
            &["单位主要领导意见", "（盖章）"],
        ]);
        for c in &mut g.cells {
            if c.text == "个人简历" {
                c.rowspan = 2;
            }
        }
        let f = &extract(&g)[0];
        assert_eq!(
            get(f, Field::OfficerResume),
            Some("1990.09 入学\n1994.07 参加工作")
        );
    }

    #[test]
    fn a_resume_over_several_lines_keeps_every_period() {
        let g = grid(&[
            &["信息员姓名：池佳"],
            &["个人简历：1991.09-1995.07 浙江师范大学中文系学习"],
            &["1995.08-2000.12 永嘉县司法局工作"],
            &["2001.01-至今 桥下镇党政办工作"],
            &["桥下镇党政办"],
            &["2007年5月16日"],
        ]);
        let forms = extract(&g);
        assert_eq!(
            get(&forms[0], Field::OfficerResume),
            Some(
                "1991.09-1995.07 浙江师范大学中文系学习\n1995.08-2000.12 永嘉县司法局工作\n2001.01-至今 桥下镇党政办工作"
            )
        );
    }

    #[test]
    fn an_anchor_under_a_field_label_starts_its_own_line() {
        let g = grid(&[
            &["分管领导：池方明　职务：副镇长"],
            &["机关网号：　Email："],
            &["信息员：池佳　性别：女"],
        ]);
        let forms = extract(&g);
        assert_eq!(get(&forms[0], Field::OfficerName), Some("池佳"));
        assert_eq!(get(&forms[0], Field::OfficerEmail), None);
        // The template's last contact row with an empty e-mail, then the
        // officer's row.
        let template = grid(&[
            &["联系方式", "E-mail", ""],
            &["信息员", "池佳", "性别", "女"],
        ]);
        assert_eq!(
            get(&extract(&template)[0], Field::OfficerName),
            Some("池佳")
        );
        let under = grid(&[
            &["分管领导", "职务", "手机"],
            &["董建新", "副局长", "13958772781"],
        ]);
        assert_eq!(get(&extract(&under)[0], Field::LeaderName), Some("董建新"));
    }

    #[test]
    fn values_under_a_header_row() {
        let g = grid(&[
            &["单位", "地址", "传真"],
            &["县林业局", "城北路1号", "67000000"],
        ]);
        let f = &extract(&g)[0];
        assert_eq!(get(f, Field::UnitName), Some("县林业局"));
        assert_eq!(get(f, Field::UnitFax), Some("67000000"));
    }

    #[test]
    fn two_stacked_forms_yield_two() {
        let g = grid(&[
            &["单位", "县招商局"],
            &["分管领导姓名", "夏德海"],
            &["信息员姓名", "王一"],
            &["单位", "县司法局"],
            &["分管领导姓名", "林二"],
            &["信息员姓名", "陈三"],
        ]);
        let forms = extract(&g);
        assert_eq!(forms.len(), 2);
        assert_eq!(get(&forms[1], Field::UnitName), Some("县司法局"));
        assert_eq!(get(&forms[1], Field::OfficerName), Some("陈三"));
    }

    #[test]
    fn spaced_label_value_and_placeholders() {
        let g = grid(&[
            &["信息员姓名 王五"],
            &["手 机 13800000003"],
            &["宅电", "无"],
            &["籍贯", "浙江 永嘉"],
        ]);
        let f = &extract(&g)[0];
        assert_eq!(get(f, Field::OfficerName), Some("王五"));
        assert_eq!(get(f, Field::OfficerMobile), Some("13800000003"));
        assert_eq!(get(f, Field::OfficerHomePhone), None);
        assert_eq!(get(f, Field::OfficerNativePlace), Some("浙江 永嘉"));
    }

    #[test]
    fn a_person_on_one_line_without_labels() {
        let g = grid(&[
            &["单位：县统计局"],
            &["分管领导：王建国 副局长 13905771111"],
            &["信息员：李小红，科员，13905772222，lxh@163.com"],
            &["信息员姓名", "张 三"],
        ]);
        let f = &extract(&g)[0];
        assert_eq!(get(f, Field::LeaderName), Some("王建国"));
        assert_eq!(get(f, Field::LeaderTitle), Some("副局长"));
        assert_eq!(get(f, Field::LeaderMobile), Some("13905771111"));
        assert_eq!(get(f, Field::OfficerName), Some("李小红"));
        assert_eq!(get(f, Field::OfficerEmail), Some("lxh@163.com"));
        let padded = grid(&[&["信息员姓名", "张 三"]]);
        assert_eq!(get(&extract(&padded)[0], Field::OfficerName), Some("张 三"));
    }

    #[test]
    fn a_title_naming_the_unit_is_kept_for_matching() {
        let g = grid(&[
            &["永嘉县教育局分管政务信息领导及信息员登记表"],
            &["信息员姓名", "周二"],
        ]);
        let f = &extract(&g)[0];
        assert_eq!(get(f, Field::UnitName), None);
        assert_eq!(f.title_unit.as_deref(), Some("永嘉县教育局"));
        let plain = grid(&[&["分管政务信息领导及信息员登记表"], &["信息员姓名", "周二"]]);
        assert_eq!(extract(&plain)[0].title_unit, None);
        assert_eq!(unit_in_title("关于报送信息员登记表的通知"), None);
        assert_eq!(
            unit_in_title("分管政务信息领导及信息员登记表（瓯北街道）").as_deref(),
            Some("瓯北街道")
        );
    }

    #[test]
    fn repeated_control_text_is_read_once() {
        assert_eq!(collapse_repeat("浙江绍兴浙江绍兴浙江绍兴"), "浙江绍兴");
        assert_eq!(collapse_repeat("66666666"), "66666666");
    }
}
