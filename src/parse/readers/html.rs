//! Reads an HTML message body (typed or pasted from Word into webmail) into
//! grids: every `<table>` (`html table N`, nested ones `html table N.M`, their
//! text also kept in the containing cell) with `rowspan`/`colspan` placed as
//! a browser places them, and the text outside tables as one cell per
//! visual line (`text`).
//!
//! Parsing is html5ever's (through `scraper`), so entities, missing end
//! tags and Word's markup are handled as a browser would; the walk over the
//! tree is ours, iterative so that deep nesting cannot overflow the stack.
//! It does not decode the body's charset (the mail layer hands over a
//! `&str`), apply CSS, or look at images. A source newline is whitespace, as
//! in a browser (Word's HTML wraps its source lines anywhere); lines break at
//! `<br>` and block elements, and at newlines only inside `<pre>`.

use scraper::{Html, Node};

use super::ooxml::{CellBudget, OpenCell, TableStack, TextLines};
use crate::parse::grid::{Extracted, Meta, ReadError, ReadLimits, clean_text};

/// Browsers clamp spans to these (HTML standard, "processing model").
const MAX_COLSPAN: u32 = 1000;
const MAX_ROWSPAN: u32 = 65534;

/// Past this many unclosed elements the rest of a body is dropped, see
/// [`nesting_cut`].
const MAX_NESTING: usize = 512;

/// Reads an HTML body. Never fails: more than `limits.max_cells` cells, or
/// markup nested deeper than [`MAX_NESTING`], are cut off and
/// `meta.truncated` is set.
pub fn read(html: &str, limits: &ReadLimits) -> Extracted {
    read_with(html, limits, None)
}

/// Reads a message body's own part: a `<blockquote>` (a reply's quote) is
/// left out, and reading stops at a line that starts a quoted message
/// (`parse::quote::marker`) — unless it starts a forward (`forwarded`: the
/// subject says the message is one), whose text is read.
pub fn read_own(html: &str, limits: &ReadLimits, forwarded: bool) -> Extracted {
    read_with(html, limits, Some(forwarded))
}

fn read_with(html: &str, limits: &ReadLimits, quotes: Option<bool>) -> Extracted {
    let cut = nesting_cut(html);
    let document = Html::parse_document(cut.map_or(html, |at| &html[..at]));
    let mut budget = CellBudget::new(limits);
    let mut walk = Walk::new(&mut budget);
    walk.quotes = quotes;

    // Depth-first over the tree without recursion.
    let root = document.tree.root();
    let mut next = root.first_child();
    while let Some(node) = next {
        if walk.quote_started() {
            break;
        }
        let descend = walk.open(node.value());
        if descend && let Some(child) = node.first_child() {
            next = Some(child);
            continue;
        }
        let mut done = node;
        next = loop {
            walk.close(done.value());
            if let Some(sibling) = done.next_sibling() {
                break Some(sibling);
            }
            match done.parent() {
                Some(parent) if parent.id() != root.id() => done = parent,
                _ => break None,
            }
        };
    }

    let Walk {
        tables,
        mut text,
        body,
        mut truncated,
        ..
    } = walk;
    truncated |= cut.is_some();
    for line in body.split('\n') {
        truncated |= text.push(line, &mut budget).is_err();
    }
    let top_level = tables.top_level();
    let mut grids = tables.finish(&mut budget).unwrap_or_default();
    grids.extend(text.into_grid());
    let mut meta = Meta::new();
    meta.insert("tables".into(), top_level.into());
    if truncated {
        meta.insert("truncated".into(), true.into());
    }
    Extracted {
        grids,
        meta,
        scanned: false,
    }
}

/// Where to cut a body whose elements nest deeper than [`MAX_NESTING`].
///
/// html5ever's tree builder does scope checks over its stack of open
/// elements, so 50 000 nested `<div>`s (250 KB) take minutes; no real
/// message nests beyond a few dozen. This estimates the depth from the tags
/// alone — void elements and those whose end tag is optional (`<p>`, `<li>`,
/// `<td>` …, closed implicitly by the parser) are not counted — and returns
/// the byte offset of the tag that goes too deep.
fn nesting_cut(html: &str) -> Option<usize> {
    let bytes = html.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(offset) = bytes
        .get(i..)
        .and_then(|rest| rest.iter().position(|&b| b == b'<'))
    {
        let at = i + offset;
        let rest = &bytes[at + 1..];
        if rest.starts_with(b"!--") {
            i = html[at..]
                .find("-->")
                .map_or(bytes.len(), |end| at + end + 3);
            continue;
        }
        i = at + 1;
        if rest.first() == Some(&b'/') {
            depth = depth.saturating_sub(1);
            continue;
        }
        let name_len = rest
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric())
            .count();
        if name_len == 0 {
            continue;
        }
        let name = String::from_utf8_lossy(&rest[..name_len]).to_ascii_lowercase();
        let self_closing = rest
            .iter()
            .position(|&b| b == b'>')
            .is_some_and(|end| end > 0 && rest[end - 1] == b'/');
        if self_closing || closes_implicitly(&name) {
            continue;
        }
        depth += 1;
        if depth > MAX_NESTING {
            return Some(at);
        }
    }
    None
}

/// Void elements and elements whose end tag may be omitted.
fn closes_implicitly(name: &str) -> bool {
    matches!(
        name,
        "br" | "img"
            | "hr"
            | "meta"
            | "link"
            | "input"
            | "col"
            | "area"
            | "base"
            | "wbr"
            | "source"
            | "embed"
            | "param"
            | "track"
            | "p"
            | "li"
            | "dt"
            | "dd"
            | "td"
            | "th"
            | "tr"
            | "tbody"
            | "thead"
            | "tfoot"
            | "colgroup"
            | "option"
            | "optgroup"
            | "html"
            | "head"
            | "body"
    )
}

/// Elements that start and end a visual line.
fn is_block(name: &str) -> bool {
    matches!(
        name,
        "p" | "div"
            | "tr"
            | "li"
            | "ul"
            | "ol"
            | "dl"
            | "dt"
            | "dd"
            | "h1"
            | "h2"
            | "h3"
            | "h4"
            | "h5"
            | "h6"
            | "blockquote"
            | "pre"
            | "hr"
            | "table"
            | "caption"
            | "address"
            | "center"
            | "section"
            | "article"
            | "header"
            | "footer"
            | "form"
            | "fieldset"
    )
}

/// The element a mail client puts a reply's or forward's quoted message
/// under (its header block included): Outlook's rule above `发件人:`
/// (`border-top:solid #B5C4DF` in 2007/2010, `#E1E1E1` later), Outlook on
/// the web's `divRplyFwdMsg` and `appendonsend`, Gmail's `gmail_quote`,
/// Yahoo's `yahoo_quoted`.
fn starts_quote(element: &scraper::node::Element) -> bool {
    let id = element.attr("id").unwrap_or("");
    let class = element.attr("class").unwrap_or("");
    let style: String = element
        .attr("style")
        .unwrap_or("")
        .to_ascii_lowercase()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    matches!(id, "divRplyFwdMsg" | "appendonsend")
        || class
            .split_whitespace()
            .any(|c| matches!(c, "gmail_quote" | "yahoo_quoted" | "OutlookMessageHeader"))
        || style.contains("border-top:solid#b5c4df")
        || style.contains("border-top:solid#e1e1e1")
}

/// Subtrees that are never displayed text.
fn is_hidden(name: &str) -> bool {
    matches!(
        name,
        "head" | "style" | "script" | "template" | "title" | "noscript"
    )
}

#[derive(Debug)]
struct Walk<'b> {
    tables: TableStack,
    text: TextLines,
    /// Text outside tables; lines separated by `\n`.
    body: String,
    in_pre: u32,
    truncated: bool,
    budget: &'b mut CellBudget,
    /// Reading a message's own part: `Some(forwarded)`.
    quotes: Option<bool>,
    /// Bytes of `body` already looked at for a quote marker.
    checked: usize,
    /// An element that holds a quoted message's headers was met.
    quote_block: bool,
}

impl<'b> Walk<'b> {
    fn new(budget: &'b mut CellBudget) -> Self {
        Self {
            tables: TableStack::new("html table", |cell: &OpenCell| clean_text(&cell.text)),
            text: TextLines::new(),
            body: String::new(),
            in_pre: 0,
            truncated: false,
            budget,
            quotes: None,
            checked: 0,
            quote_block: false,
        }
    }

    /// Whether a finished line of the text outside tables starts a quoted
    /// message that is not read; the marker line is dropped then.
    fn quote_started(&mut self) -> bool {
        let Some(forwarded) = self.quotes else {
            return false;
        };
        if self.quote_block {
            return true;
        }
        while let Some(end) = self.body[self.checked..].find('\n') {
            let start = self.checked;
            self.checked += end + 1;
            let kind = crate::parse::quote::marker(&self.body[start..start + end]);
            let stop = match kind {
                Some(crate::parse::quote::QuoteKind::Reply) => true,
                Some(crate::parse::quote::QuoteKind::Original) => !forwarded,
                Some(crate::parse::quote::QuoteKind::Forward) | None => false,
            };
            if stop {
                self.body.truncate(start);
                return true;
            }
        }
        false
    }

    fn sink(&mut self) -> Option<&mut String> {
        if self.tables.in_table() {
            self.tables.text_sink()
        } else {
            Some(&mut self.body)
        }
    }

    fn line_break(&mut self) {
        if let Some(sink) = self.sink()
            && !sink.is_empty()
            && !sink.ends_with('\n')
        {
            sink.push('\n');
        }
    }

    fn check(&mut self, result: Result<(), ReadError>) {
        self.truncated |= result.is_err();
    }

    /// Returns whether to walk into the node's children.
    fn open(&mut self, node: &Node) -> bool {
        match node {
            Node::Text(text) => {
                let keep_newlines = self.in_pre > 0;
                if let Some(sink) = self.sink() {
                    if keep_newlines {
                        sink.push_str(text);
                    } else {
                        sink.extend(
                            text.chars()
                                .map(|c| if c == '\n' || c == '\r' { ' ' } else { c }),
                        );
                    }
                }
                false
            }
            Node::Element(element) => {
                let name = element.name();
                if is_hidden(name) || (name == "blockquote" && self.quotes.is_some()) {
                    return false;
                }
                if self.quotes == Some(false) && starts_quote(element) {
                    self.quote_block = true;
                    return false;
                }
                if is_block(name) {
                    self.line_break();
                }
                match name {
                    "br" => {
                        if let Some(sink) = self.sink() {
                            sink.push('\n');
                        }
                    }
                    "pre" => self.in_pre += 1,
                    "table" => {
                        let r = self.tables.open_table(self.budget);
                        self.check(r);
                    }
                    "tr" => {
                        let r = self.tables.start_row(self.budget);
                        self.check(r);
                    }
                    "td" | "th" => {
                        let span = |key: &str, max: u32| {
                            element
                                .attr(key)
                                .and_then(|v| v.trim().parse::<u32>().ok())
                                .unwrap_or(1)
                                .clamp(1, max)
                        };
                        let (colspan, rowspan) =
                            (span("colspan", MAX_COLSPAN), span("rowspan", MAX_ROWSPAN));
                        let r = self.tables.start_cell(colspan, rowspan, true, self.budget);
                        self.check(r);
                    }
                    _ => {}
                }
                true
            }
            Node::Document | Node::Fragment => true,
            _ => false,
        }
    }

    fn close(&mut self, node: &Node) {
        let Node::Element(element) = node else { return };
        let name = element.name();
        let result = match name {
            "table" => self.tables.close_table(self.budget),
            "tr" => self.tables.end_row(self.budget),
            "td" | "th" => self.tables.end_cell(self.budget),
            "pre" => {
                self.in_pre = self.in_pre.saturating_sub(1);
                Ok(())
            }
            _ => Ok(()),
        };
        self.check(result);
        if is_block(name) {
            self.line_break();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::ooxml::test_support::{all_text, cell, fixture, grid, mutants, text_at};
    use super::*;
    use crate::parse::grid::Cell;

    fn read_fixture(name: &str) -> Extracted {
        let bytes = fixture(name);
        read(&String::from_utf8_lossy(&bytes), &ReadLimits::default())
    }

    #[test]
    fn table_spans_placed_like_a_browser() {
        let x = read_fixture("table_spans.html");
        let t = grid(&x, "html table 1");
        assert_eq!(
            cell(t, 0, 0),
            &Cell {
                row: 0,
                col: 0,
                rowspan: 1,
                colspan: 4,
                text: "分管政务信息领导及信息员登记表".into()
            }
        );
        assert_eq!(
            cell(t, 1, 0),
            &Cell {
                row: 1,
                col: 0,
                rowspan: 3,
                colspan: 1,
                text: "联系方式".into()
            }
        );
        assert_eq!(text_at(t, 1, 1), "办 电");
        // Rows 2 and 3 start after the row-spanning cell.
        assert_eq!(text_at(t, 2, 1), "手 机");
        assert_eq!(text_at(t, 2, 2), "13957765165");
        assert_eq!(cell(t, 2, 3).rowspan, 2);
        assert_eq!(text_at(t, 3, 1), "E-mail:");
        // Row 3: col 0 and col 3 are covered, so the cell lands at col 2 after col 1.
        assert_eq!(text_at(t, 3, 2), "a@b.cn");
        assert_eq!(text_at(t, 4, 0), "简历");
        assert_eq!(text_at(t, 4, 1), "1999.09 学习\n2003.09 工作");
    }

    #[test]
    fn entities_hidden_parts_and_nested_tables() {
        let x = read_fixture("table_spans.html");
        let t = grid(&x, "html table 1");
        assert_eq!(text_at(t, 1, 2), "0577-67422869 & 分机");
        let all = all_text(&x);
        for hidden in ["color", "alert", "标题栏"] {
            assert!(!all.contains(hidden), "{hidden} in {all}");
        }
        assert_eq!(text_at(t, 5, 1), "外层\n内1\n内2");
        assert_eq!(text_at(grid(&x, "html table 1.1"), 0, 1), "内2");
        let names: Vec<&str> = x.grids.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["html table 1", "html table 1.1", "text"]);
        assert_eq!(x.meta.get("tables"), Some(&1.into()));
    }

    #[test]
    fn text_around_tables_is_lines() {
        let x = read_fixture("table_spans.html");
        let text = grid(&x, "text");
        assert_eq!(text_at(text, 0, 0), "请查收：");
        assert_eq!(text_at(text, 1, 0), "县审计局办公室");
    }

    #[test]
    fn br_lines_body() {
        let x = read_fixture("br_lines.html");
        assert_eq!(x.grids.len(), 1);
        let text = grid(&x, "text");
        let lines: Vec<&str> = text.cells.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(
            lines,
            [
                "县府办信息督查科：",
                "根据通知要求，现将我局分管政务信息领导及信息员报送如下：",
                "单位：永嘉县审计局",
                "分管领导：李松军，职务：纪检组长，手机：13957765165",
                "信息员：高胜正，职务：秘书",
                "手机：13805776240",
                "县审计局办公室",
                "2007年5月17日",
            ]
        );
        assert!(
            text.cells
                .iter()
                .enumerate()
                .all(|(i, c)| c.row == i as u32 && c.col == 0)
        );
    }

    #[test]
    fn word_paste_keeps_wrapped_source_lines_together() {
        let x = read(
            "<p class=MsoNormal>单位：永嘉县\n审计局</p><p>信息员：<span>高</span><span>胜正</span></p>",
            &ReadLimits::default(),
        );
        let lines: Vec<&str> = grid(&x, "text")
            .cells
            .iter()
            .map(|c| c.text.as_str())
            .collect();
        assert_eq!(lines, ["单位：永嘉县 审计局", "信息员：高胜正"]);
        let x = read("<pre>甲：1\n乙：2</pre>", &ReadLimits::default());
        assert_eq!(grid(&x, "text").cells.len(), 2);
    }

    #[test]
    fn cells_are_capped() {
        let html = format!(
            "<table>{}</table>",
            "<tr><td>a</td><td>b</td></tr>".repeat(100)
        );
        let x = read(
            &html,
            &ReadLimits {
                max_cells: 20,
                ..ReadLimits::default()
            },
        );
        assert!(x.grids.iter().map(|g| g.cells.len()).sum::<usize>() <= 20);
        assert_eq!(x.meta.get("truncated"), Some(&true.into()));
    }

    #[test]
    fn deep_nesting_and_huge_spans_are_bounded() {
        let html = "<div>".repeat(400) + "深" + &"<table><tr><td>".repeat(2000);
        let x = read(&html, &ReadLimits::default());
        assert!(all_text(&x).contains('深'));
        assert_eq!(
            x.meta.get("truncated"),
            Some(&true.into()),
            "cut where the tables nest too deep"
        );
        let html = "<div>".repeat(50_000) + "深";
        let x = read(&html, &ReadLimits::default());
        assert_eq!(x.meta.get("truncated"), Some(&true.into()));
        assert!(x.grids.is_empty());
        let x = read(
            "<table><tr><td rowspan=99999999 colspan=99999999>a</td><td>b</td></tr></table>",
            &ReadLimits::default(),
        );
        let t = grid(&x, "html table 1");
        assert_eq!(cell(t, 0, 0).colspan, MAX_COLSPAN);
        assert_eq!(text_at(t, 0, MAX_COLSPAN), "b");
    }

    #[test]
    fn nesting_estimate_ignores_implicitly_closed_tags() {
        assert_eq!(nesting_cut(&"<p>x<br><td>y<img src=a/>".repeat(5000)), None);
        assert_eq!(nesting_cut(&"<!-- <div> --><div></div>".repeat(5000)), None);
        assert_eq!(
            nesting_cut(&("<a>".repeat(MAX_NESTING) + "<span>")),
            Some(3 * MAX_NESTING)
        );
    }

    #[test]
    fn mutations_never_panic() {
        let limits = ReadLimits::default();
        for name in ["table_spans.html", "br_lines.html"] {
            mutants(&fixture(name), 200, |bytes| {
                let _ = read(&String::from_utf8_lossy(bytes), &limits);
            });
        }
    }
}
