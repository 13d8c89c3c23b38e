//! Plain text and HTML typed by a person — a message body, or a `.txt`
//! attachment — to grids. Each line becomes one cell; the form extractor
//! splits `标签：值` pairs inside it. HTML goes to `readers::html`, which
//! keeps its tables as tables.

use crate::parse::grid::{Cell, Extracted, Grid, ReadLimits};

/// Reads text of unknown encoding (UTF-8 or GB18030).
pub fn read(bytes: &[u8], limits: &ReadLimits) -> Extracted {
    let text = crate::parse::sniff::decode_text(bytes);
    if looks_like_html(&text) {
        super::html::read(&text, limits)
    } else {
        read_str(&text, limits)
    }
}

/// Reads decoded plain text: one cell per non-empty line.
pub fn read_str(text: &str, limits: &ReadLimits) -> Extracted {
    Extracted {
        grids: vec![lines_grid("body", text, limits)],
        ..Extracted::default()
    }
}

/// One row per non-empty line, at most `limits.max_cells` cells. A line
/// with tabs — spreadsheet cells copied into a mail — keeps one cell per
/// tab-separated column, so the form keeps its columns.
pub fn lines_grid(name: &str, text: &str, limits: &ReadLimits) -> Grid {
    let mut grid = Grid::new(name);
    let lines = text.lines().filter(|l| !l.trim().is_empty());
    for (row, line) in lines.enumerate() {
        let row = u32::try_from(row).unwrap_or(u32::MAX);
        for (col, cell) in line.split('\t').enumerate() {
            if grid.cells.len() >= limits.max_cells {
                return grid;
            }
            grid.push(Cell::new(
                row,
                u32::try_from(col).unwrap_or(u32::MAX),
                crate::parse::grid::clean_text(cell),
            ));
        }
    }
    grid
}

fn looks_like_html(text: &str) -> bool {
    let head: String = text
        .chars()
        .take(2048)
        .collect::<String>()
        .to_ascii_lowercase();
    head.contains("<html")
        || head.contains("<table")
        || head.contains("<body")
        || head.contains("<br")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tabs_from_a_copied_sheet_keep_their_columns() {
        let e = read_str(
            "联系方式\t办电\t67672148\t手机\t13857712669\n\t宅电\t\t机关网\t601567\n",
            &ReadLimits::default(),
        );
        let cells: Vec<(u32, u32, &str)> = e.grids[0]
            .cells
            .iter()
            .map(|c| (c.row, c.col, c.text.as_str()))
            .collect();
        assert_eq!(cells[2], (0, 2, "67672148"));
        assert_eq!(cells[7], (1, 4, "601567"));
    }

    #[test]
    fn lines_become_rows() {
        let (gbk, _, _) = encoding_rs::GBK.encode("单位：桥头镇\r\n\r\n  信息员姓名：张三  \n");
        let e = read(&gbk, &ReadLimits::default());
        let texts: Vec<&str> = e.grids[0].cells.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts, vec!["单位：桥头镇", "信息员姓名：张三"]);
        assert_eq!(e.grids[0].cells[1].row, 1);
    }
}
