//! The 名册 taken out of the service: xlsx, CSV and vCard files of every
//! roster unit's 分管领导 and 信息员, written from a [`Book`] that the
//! workspace builds from the units' progress.

use crate::parse::registration::Field;

/// The 名册 as it stands: one row per roster unit, in roster order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Book {
    pub title: String,
    pub rows: Vec<BookRow>,
}

/// One roster unit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BookRow {
    pub unit_id: String,
    /// The unit's name as in the roster.
    pub unit_name: String,
    pub category: String,
    /// `registered`, `needs_review`, `missing`.
    pub state: String,
    /// In Chinese: 已登记, 待人工处理, 未报送.
    pub state_zh: String,
    /// `2007-05-17 15:40` in the campaign's time zone, when something arrived.
    pub received_at: Option<String>,
    /// Every field of the unit's current registration as text (a party
    /// member flag as 是/否); absent when empty.
    pub fields: std::collections::BTreeMap<Field, String>,
    /// What the office should know (problems in Chinese, corrections).
    pub note: String,
    pub reminders_sent: i64,
    pub last_reminder_at: Option<String>,
}

use std::borrow::Cow;
use std::fmt::Write as _;

use rust_xlsxwriter::{
    DocProperties, Format, FormatAlign, FormatBorder, IgnoreError, Workbook, Worksheet, XlsxError,
};
use unicode_width::UnicodeWidthStr;

/// What can go wrong while writing the 名册.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("生成 Excel 名册失败：{0}")]
    Xlsx(#[from] XlsxError),
}

/// The state of a unit whose registration is complete.
const REGISTERED: &str = "registered";

/// Name of the summary sheet.
const SHEET_SUMMARY: &str = "汇总表";
/// Name of the sheet of units that are not registered yet.
const SHEET_PENDING: &str = "未报送";

/// Column widths, in Excel character units.
const MIN_WIDTH: usize = 8;
const MAX_WIDTH: usize = 40;
/// Long free-text columns wrap inside this width.
const MAX_WRAP_WIDTH: usize = 50;
/// Excel refuses cells longer than 32,767 UTF-16 code units.
const MAX_CELL_UTF16: usize = 32_767;

/// One column of a sheet: its header and how to take its text from a row.
struct Column {
    header: &'static str,
    value: fn(&BookRow, Option<Field>) -> Option<String>,
    field: Option<Field>,
    /// Free text that should wrap rather than widen the column.
    long_text: bool,
}

impl Column {
    fn text(&self, row: &BookRow) -> String {
        (self.value)(row, self.field).unwrap_or_default()
    }
}

fn field_value(row: &BookRow, field: Option<Field>) -> Option<String> {
    field.and_then(|f| row.fields.get(&f)).cloned()
}

/// The columns of 汇总表 (and of the CSV): 单位, every field but the unit
/// name (the roster's name is already in 单位), 状态, 报送时间, 备注.
fn summary_columns() -> Vec<Column> {
    let mut columns = vec![Column {
        header: "单位",
        value: |row, _| Some(row.unit_name.clone()),
        field: None,
        long_text: false,
    }];
    columns.extend(
        Field::ALL
            .into_iter()
            .filter(|f| *f != Field::UnitName)
            .map(|f| Column {
                header: f.label_zh(),
                value: field_value,
                field: Some(f),
                long_text: matches!(
                    f,
                    Field::UnitAddress | Field::LeaderDuties | Field::OfficerResume
                ),
            }),
    );
    columns.extend([
        Column {
            header: "状态",
            value: |row, _| Some(row.state_zh.clone()),
            field: None,
            long_text: false,
        },
        Column {
            header: "报送时间",
            value: |row, _| row.received_at.clone(),
            field: None,
            long_text: false,
        },
        Column {
            header: "备注",
            value: |row, _| Some(row.note.clone()),
            field: None,
            long_text: true,
        },
    ]);
    columns
}

/// The columns of 未报送.
fn pending_columns() -> Vec<Column> {
    vec![
        Column {
            header: "单位",
            value: |row, _| Some(row.unit_name.clone()),
            field: None,
            long_text: false,
        },
        Column {
            header: "类别",
            value: |row, _| Some(row.category.clone()),
            field: None,
            long_text: false,
        },
        Column {
            header: "状态",
            value: |row, _| Some(row.state_zh.clone()),
            field: None,
            long_text: false,
        },
        Column {
            header: "已发提醒次数",
            value: |row, _| Some(row.reminders_sent.to_string()),
            field: None,
            long_text: false,
        },
        Column {
            header: "最近提醒时间",
            value: |row, _| row.last_reminder_at.clone(),
            field: None,
            long_text: false,
        },
        Column {
            header: "备注",
            value: |row, _| Some(row.note.clone()),
            field: None,
            long_text: true,
        },
    ]
}

/// The display width of a cell's text (CJK counts 2): its longest line.
fn display_width(text: &str) -> usize {
    text.lines().map(UnicodeWidthStr::width).max().unwrap_or(0)
}

/// Excel's limit on a cell's length, applied by cutting the text short
/// rather than failing the whole export for one overlong value.
fn fit_cell(text: &str) -> Cow<'_, str> {
    if text.encode_utf16().count() <= MAX_CELL_UTF16 {
        return Cow::Borrowed(text);
    }
    const MARK: &str = "…（已截断）";
    let budget = MAX_CELL_UTF16 - MARK.encode_utf16().count();
    let mut used = 0;
    let mut out = String::new();
    for c in text.chars() {
        used += c.len_utf16();
        if used > budget {
            break;
        }
        out.push(c);
    }
    out.push_str(MARK);
    Cow::Owned(out)
}

/// Writes one formatted table (header in row 0, then `rows`) to `sheet`.
///
/// Every cell goes through `write_string`, which stores a shared string and
/// never a number or a formula: phone numbers keep their leading zeros and
/// a value such as `=1+1` taken from a mail stays inert text, so the
/// formula-injection guard the CSV needs is not needed here.
fn write_table(
    sheet: &mut Worksheet,
    name: &str,
    columns: &[Column],
    rows: &[&BookRow],
) -> Result<(), ExportError> {
    let border = FormatBorder::Thin;
    let header_format = Format::new()
        .set_bold()
        .set_background_color(0xDDEBF7)
        .set_border(border)
        .set_align(FormatAlign::Center)
        .set_align(FormatAlign::VerticalCenter)
        .set_text_wrap();
    let cell_format = Format::new().set_border(border).set_align(FormatAlign::Top);
    let wrap_format = cell_format.clone().set_text_wrap();

    sheet.set_name(name)?;
    let last_col = u16::try_from(columns.len().saturating_sub(1)).unwrap_or(u16::MAX);
    let last_row = u32::try_from(rows.len()).unwrap_or(u32::MAX);

    for (c, column) in columns.iter().enumerate() {
        let col = c as u16;
        sheet.write_string_with_format(0, col, column.header, &header_format)?;

        let texts: Vec<String> = rows.iter().map(|row| column.text(row)).collect();
        let natural = texts
            .iter()
            .map(|t| display_width(t))
            .chain([display_width(column.header)])
            .max()
            .unwrap_or(0)
            + 2;
        let max = if column.long_text {
            MAX_WRAP_WIDTH
        } else {
            MAX_WIDTH
        };
        let width = natural.clamp(MIN_WIDTH, max);
        // Wrap the known free-text columns, and any column whose text would
        // not fit in the capped width or runs over several lines.
        let wraps = column.long_text || natural > max || texts.iter().any(|t| t.contains('\n'));
        let format = if wraps { &wrap_format } else { &cell_format };
        sheet.set_column_width(col, width as f64)?;

        for (r, text) in texts.iter().enumerate() {
            if text.is_empty() {
                continue;
            }
            let row = u32::try_from(r + 1).unwrap_or(u32::MAX);
            sheet.write_string_with_format(row, col, fit_cell(text), format)?;
        }
    }

    if last_row > 0 {
        // The digit strings are text on purpose; keep Excel's green
        // "number stored as text" triangles away.
        sheet.ignore_error_range(1, 0, last_row, last_col, IgnoreError::NumberStoredAsText)?;
    }
    sheet.set_freeze_panes(1, 1)?;
    sheet.autofilter(0, 0, last_row, last_col)?;
    sheet.set_landscape();
    sheet.set_paper_size(9); // A4
    sheet.set_print_fit_to_pages(1, 0);
    sheet.set_repeat_rows(0, 0)?;
    Ok(())
}

/// The 名册 as an xlsx workbook: 汇总表 with every unit, 未报送 with the
/// units not registered yet.
pub fn write_xlsx(book: &Book) -> Result<Vec<u8>, ExportError> {
    let mut workbook = Workbook::new();
    if !book.title.is_empty() {
        workbook.set_properties(&DocProperties::new().set_title(&book.title));
    }

    let all: Vec<&BookRow> = book.rows.iter().collect();
    write_table(
        workbook.add_worksheet(),
        SHEET_SUMMARY,
        &summary_columns(),
        &all,
    )?;

    let pending: Vec<&BookRow> = book.rows.iter().filter(|r| r.state != REGISTERED).collect();
    write_table(
        workbook.add_worksheet(),
        SHEET_PENDING,
        &pending_columns(),
        &pending,
    )?;

    Ok(workbook.save_to_buffer()?)
}

/// Neutralises a CSV cell that a spreadsheet would run as a formula.
///
/// The CSV is opened in Excel or WPS by office staff and its values come
/// from mail anyone can send, so a cell starting with `=`, `+`, `-`, `@`,
/// a tab or a carriage return gets a leading `'` and is shown as text.
fn guard_csv_cell(text: &str) -> Cow<'_, str> {
    match text.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => Cow::Owned(format!("'{text}")),
        _ => Cow::Borrowed(text),
    }
}

/// The 汇总表 as CSV: UTF-8 with a BOM (so Excel and WPS read the Chinese
/// right), CRLF line ends, same columns and rows as the xlsx.
///
/// A spreadsheet opening a CSV may still turn digit strings into numbers
/// (dropping a phone number's leading zero); the xlsx keeps them as text.
pub fn write_csv(book: &Book) -> Vec<u8> {
    let columns = summary_columns();
    let mut out = vec![0xEF, 0xBB, 0xBF];
    {
        let mut writer = csv::WriterBuilder::new()
            .terminator(csv::Terminator::CRLF)
            .from_writer(&mut out);
        // Writing to a Vec cannot fail, and every record has the same length.
        let _ = writer.write_record(
            columns
                .iter()
                .map(|c| guard_csv_cell(c.header).into_owned()),
        );
        for row in &book.rows {
            let _ = writer.write_record(
                columns
                    .iter()
                    .map(|c| guard_csv_cell(&c.text(row)).into_owned()),
            );
        }
        let _ = writer.flush();
    }
    out
}

/// Two-character family names, so that 欧阳修 files under 欧阳.
const COMPOUND_SURNAMES: [&str; 24] = [
    "欧阳", "司马", "上官", "诸葛", "东方", "皇甫", "尉迟", "公孙", "慕容", "长孙", "宇文", "司徒",
    "夏侯", "令狐", "端木", "澹台", "南宫", "独孤", "西门", "闻人", "轩辕", "万俟", "申屠", "呼延",
];

/// Splits a name into (family, given) for the vCard `N` property: a
/// Chinese name's family name is its first character (or a known
/// two-character family name), a western name's is its last word.
fn split_name(name: &str) -> (String, String) {
    let name = name.trim();
    if name.contains(['·', '•']) {
        // Transliterated names (e.g. 买买提·艾力) have no family part to split.
        return (String::new(), name.to_string());
    }
    if name.is_ascii() {
        return match name.rsplit_once(char::is_whitespace) {
            Some((given, family)) => (family.trim().to_string(), given.trim().to_string()),
            None => (name.to_string(), String::new()),
        };
    }
    // A Chinese name typed with spaces (王 小明) is still one name.
    let name: String = name.chars().filter(|c| !c.is_whitespace()).collect();
    let family_len = COMPOUND_SURNAMES
        .iter()
        .find(|s| name.starts_with(**s) && name.len() > s.len())
        .map(|s| s.len())
        .or_else(|| name.chars().next().map(char::len_utf8))
        .unwrap_or(0);
    let (family, given) = name.split_at(family_len);
    (family.to_string(), given.to_string())
}

/// Escapes a vCard text value (RFC 2426 §5, RFC 6350 §3.4).
fn escape_vcard(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push_str("\\\\"),
            ',' => out.push_str("\\,"),
            ';' => out.push_str("\\;"),
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push_str("\\n");
            }
            '\n' => out.push_str("\\n"),
            _ => out.push(c),
        }
    }
    out
}

/// A value that is not text (a phone number, an address): line breaks,
/// which would start a new property, become spaces.
fn flatten_vcard(text: &str) -> String {
    text.trim()
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect()
}

/// Appends a content line, folded at 75 octets on character boundaries
/// (each continuation line starts with a space), ended by CRLF.
fn push_folded(out: &mut String, line: &str) {
    const LIMIT: usize = 75;
    let mut used = 0;
    for c in line.chars() {
        if used + c.len_utf8() > LIMIT {
            out.push_str("\r\n ");
            used = 1;
        }
        out.push(c);
        used += c.len_utf8();
    }
    out.push_str("\r\n");
}

/// The fields of one person on the form.
struct Person {
    name: Field,
    title: Field,
    mobile: Field,
    office_phone: Field,
    home_phone: Field,
    email: Field,
    gov_net: Field,
    qq: Option<Field>,
    duties: Option<Field>,
    default_title: &'static str,
    role: &'static str,
}

const LEADER: Person = Person {
    name: Field::LeaderName,
    title: Field::LeaderTitle,
    mobile: Field::LeaderMobile,
    office_phone: Field::LeaderOfficePhone,
    home_phone: Field::LeaderHomePhone,
    email: Field::LeaderEmail,
    gov_net: Field::LeaderGovNet,
    qq: None,
    duties: Some(Field::LeaderDuties),
    default_title: "分管领导",
    role: "分管政务信息领导",
};

const OFFICER: Person = Person {
    name: Field::OfficerName,
    title: Field::OfficerTitle,
    mobile: Field::OfficerMobile,
    office_phone: Field::OfficerOfficePhone,
    home_phone: Field::OfficerHomePhone,
    email: Field::OfficerEmail,
    gov_net: Field::OfficerGovNet,
    qq: Some(Field::OfficerQq),
    duties: None,
    default_title: "信息员",
    role: "政务信息员",
};

fn push_vcard(out: &mut String, row: &BookRow, person: &Person) {
    let get = |f: Field| {
        row.fields
            .get(&f)
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
    };
    let Some(name) = get(person.name) else {
        return;
    };
    let (family, given) = split_name(name);

    push_folded(out, "BEGIN:VCARD");
    push_folded(out, "VERSION:3.0");
    push_folded(
        out,
        &format!("N:{};{};;;", escape_vcard(&family), escape_vcard(&given)),
    );
    push_folded(out, &format!("FN:{}", escape_vcard(name)));
    if !row.unit_name.trim().is_empty() {
        push_folded(out, &format!("ORG:{}", escape_vcard(row.unit_name.trim())));
    }
    let title = get(person.title).unwrap_or(person.default_title);
    push_folded(out, &format!("TITLE:{}", escape_vcard(title)));
    for (field, kind) in [
        (person.mobile, "CELL"),
        (person.office_phone, "WORK"),
        (person.home_phone, "HOME"),
    ] {
        if let Some(number) = get(field) {
            push_folded(out, &format!("TEL;TYPE={kind}:{}", flatten_vcard(number)));
        }
    }
    if let Some(email) = get(person.email) {
        push_folded(
            out,
            &format!("EMAIL;TYPE=INTERNET:{}", flatten_vcard(email)),
        );
    }

    let mut note = String::from(person.role);
    if let Some(duties) = person.duties.and_then(get) {
        let _ = write!(note, "；分管工作：{duties}");
    }
    if let Some(gov_net) = get(person.gov_net) {
        let _ = write!(note, "；机关网号：{gov_net}");
    }
    if let Some(qq) = person.qq.and_then(get) {
        let _ = write!(note, "；QQ：{qq}");
    }
    push_folded(out, &format!("NOTE:{}", escape_vcard(&note)));
    push_folded(out, "END:VCARD");
}

/// Every 分管领导 and 信息员 of the 名册 as vCard 3.0 contacts, for a phone
/// or a mail client: one card per named person, rows in order, the leader
/// before the officer. CRLF line ends.
pub fn write_vcf(book: &Book) -> String {
    let mut out = String::new();
    for row in &book.rows {
        push_vcard(&mut out, row, &LEADER);
        push_vcard(&mut out, row, &OFFICER);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use calamine::{Data, Reader};
    use std::collections::BTreeMap;
    use std::io::Read as _;

    const DUTIES: &str = "分管办公室、政务信息、信访、保密、档案、机要、政务公开、电子政务和机关后勤工作，联系县府办综合科，协助主要领导抓好全局日常工作";

    fn book() -> Book {
        let full: BTreeMap<Field, String> = [
            (Field::UnitName, "永嘉县发展和改革局"),
            (Field::UnitAddress, "永嘉县上塘镇县前路1号"),
            (Field::UnitOfficePhone, "057767121553"),
            (Field::UnitFax, "057767121554"),
            (Field::LeaderName, "王建国"),
            (Field::LeaderTitle, "副局长"),
            (Field::LeaderDuties, "分管办公室、政务信息"),
            (Field::LeaderOfficePhone, "057767121553"),
            (Field::LeaderMobile, "13905771234"),
            (Field::LeaderHomePhone, "057767220001"),
            (Field::LeaderGovNet, "661234"),
            (Field::LeaderEmail, "wjg@yj.gov.cn"),
            (Field::OfficerName, "欧阳小明"),
            (Field::OfficerGender, "男"),
            (Field::OfficerTitle, "办公室科员"),
            (Field::OfficerBirth, "1980.05"),
            (Field::OfficerNativePlace, "浙江永嘉"),
            (Field::OfficerPartyMember, "是"),
            (Field::OfficerOfficePhone, "057767121555"),
            (Field::OfficerMobile, "13857700001"),
            (Field::OfficerHomePhone, "057767330002"),
            (Field::OfficerGovNet, "665678"),
            (Field::OfficerQq, "012345678"),
            (Field::OfficerEmail, "oyxm@yj.gov.cn"),
            (
                Field::OfficerResume,
                "1998.09—2002.07 浙江大学学习\n2002.08— 县发改局工作",
            ),
        ]
        .into_iter()
        .map(|(f, v)| (f, v.to_string()))
        .collect();
        let partial: BTreeMap<Field, String> = [
            (Field::LeaderName, "李四"),
            (Field::LeaderTitle, "a,b;c"),
            (Field::LeaderDuties, DUTIES),
            (Field::LeaderMobile, "1380000000"),
            (Field::OfficerTitle, "=1+1"),
        ]
        .into_iter()
        .map(|(f, v)| (f, v.to_string()))
        .collect();
        Book {
            title: "永嘉县分管政务信息领导及信息员名册".into(),
            rows: vec![
                BookRow {
                    unit_id: "u01".into(),
                    unit_name: "县发改局".into(),
                    category: "县级部门".into(),
                    state: "registered".into(),
                    state_zh: "已登记".into(),
                    received_at: Some("2007-05-17 15:40".into()),
                    fields: full,
                    note: String::new(),
                    reminders_sent: 0,
                    last_reminder_at: None,
                },
                BookRow {
                    unit_id: "u02".into(),
                    unit_name: "县教育局".into(),
                    category: "县级部门".into(),
                    state: "needs_review".into(),
                    state_zh: "待人工处理".into(),
                    received_at: Some("2007-05-18 09:05".into()),
                    fields: partial,
                    note: "分管领导手机号码位数不对".into(),
                    reminders_sent: 1,
                    last_reminder_at: Some("2007-05-16 08:30".into()),
                },
                BookRow {
                    unit_id: "u03".into(),
                    unit_name: "瓯北镇".into(),
                    category: "乡镇".into(),
                    state: "missing".into(),
                    state_zh: "未报送".into(),
                    received_at: None,
                    fields: BTreeMap::new(),
                    note: String::new(),
                    reminders_sent: 2,
                    last_reminder_at: Some("2007-05-20 09:00".into()),
                },
            ],
        }
    }

    fn expected_header() -> Vec<String> {
        let mut header = vec!["单位".to_string()];
        header.extend(
            Field::ALL
                .into_iter()
                .filter(|f| *f != Field::UnitName)
                .map(|f| f.label_zh().to_string()),
        );
        header.extend(["状态", "报送时间", "备注"].map(String::from));
        header
    }

    fn cell(range: &calamine::Range<Data>, row: u32, col: u32) -> Data {
        range.get_value((row, col)).cloned().unwrap_or(Data::Empty)
    }

    fn column_of(label: &str) -> u32 {
        expected_header().iter().position(|h| h == label).unwrap() as u32
    }

    #[test]
    fn xlsx_sheets_headers_and_text_cells() {
        let bytes = write_xlsx(&book()).unwrap();
        let mut wb =
            calamine::open_workbook_from_rs::<calamine::Xlsx<_>, _>(std::io::Cursor::new(&bytes))
                .unwrap();
        assert_eq!(wb.sheet_names(), vec!["汇总表", "未报送"]);

        let summary = wb.worksheet_range("汇总表").unwrap();
        let header = expected_header();
        assert_eq!(header.len(), 28);
        assert_eq!(summary.get_size(), (4, 28));
        for (c, h) in header.iter().enumerate() {
            assert_eq!(cell(&summary, 0, c as u32), Data::String(h.clone()));
        }
        assert_eq!(header[1], "单位地址");
        assert_eq!(header[25..], ["状态", "报送时间", "备注"]);

        let phone = column_of("分管领导办公电话");
        assert_eq!(
            cell(&summary, 1, phone),
            Data::String("057767121553".into())
        );
        assert_eq!(
            cell(&summary, 1, column_of("信息员QQ号码")),
            Data::String("012345678".into())
        );
        assert_eq!(
            cell(&summary, 1, column_of("信息员是否党员")),
            Data::String("是".into())
        );
        assert_eq!(
            cell(&summary, 1, column_of("信息员手机号码")),
            Data::String("13857700001".into())
        );
        // Row order and state text.
        let units: Vec<Data> = (1..=3).map(|r| cell(&summary, r, 0)).collect();
        assert_eq!(
            units,
            ["县发改局", "县教育局", "瓯北镇"].map(|s| Data::String(s.into()))
        );
        assert_eq!(
            cell(&summary, 2, column_of("状态")),
            Data::String("待人工处理".into())
        );
        // A formula-looking value stays text; empty cells stay blank.
        assert_eq!(
            cell(&summary, 2, column_of("信息员职务")),
            Data::String("=1+1".into())
        );
        assert_eq!(cell(&summary, 3, column_of("报送时间")), Data::Empty);
        assert_eq!(cell(&summary, 3, column_of("分管领导姓名")), Data::Empty);

        let pending = wb.worksheet_range("未报送").unwrap();
        assert_eq!(pending.get_size(), (3, 6));
        let rows: Vec<Vec<Data>> = pending.rows().map(|r| r.to_vec()).collect();
        let s = |v: &str| Data::String(v.into());
        assert_eq!(
            rows[0],
            [
                "单位",
                "类别",
                "状态",
                "已发提醒次数",
                "最近提醒时间",
                "备注"
            ]
            .map(s)
        );
        assert_eq!(
            rows[1],
            vec![
                s("县教育局"),
                s("县级部门"),
                s("待人工处理"),
                s("1"),
                s("2007-05-16 08:30"),
                s("分管领导手机号码位数不对"),
            ]
        );
        assert_eq!(
            rows[2],
            vec![
                s("瓯北镇"),
                s("乡镇"),
                s("未报送"),
                s("2"),
                s("2007-05-20 09:00"),
                Data::Empty,
            ]
        );

        // Freeze panes, autofilter, print setup and the title, from the XML.
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(&bytes)).unwrap();
        let mut read = |name: &str| {
            let mut text = String::new();
            zip.by_name(name)
                .unwrap()
                .read_to_string(&mut text)
                .unwrap();
            text
        };
        let sheet1 = read("xl/worksheets/sheet1.xml");
        assert!(
            sheet1.contains(r#"<pane xSplit="1" ySplit="1""#),
            "{sheet1}"
        );
        assert!(sheet1.contains(r#"<autoFilter ref="A1:AB4"/>"#), "{sheet1}");
        assert!(sheet1.contains(r#"orientation="landscape""#));
        assert!(read("xl/worksheets/sheet2.xml").contains(r#"<autoFilter ref="A1:F3"/>"#));
        assert!(read("docProps/core.xml").contains("永嘉县分管政务信息领导及信息员名册"));
        assert!(read("xl/workbook.xml").contains("_xlnm.Print_Titles"));
    }

    #[test]
    fn column_widths_count_cjk_double_and_are_clamped() {
        assert_eq!(display_width("abc"), 3);
        assert_eq!(display_width("单位"), 4);
        assert_eq!(display_width("短\n很长的一行"), 10);
        let columns = summary_columns();
        assert!(
            columns
                .iter()
                .any(|c| c.long_text && c.header == "信息员个人简历")
        );
        assert!(
            columns
                .iter()
                .any(|c| c.long_text && c.header == "分管工作")
        );
        // An overlong cell is cut to Excel's limit instead of failing.
        let long = "长".repeat(40_000);
        let cut = fit_cell(&long);
        assert!(cut.encode_utf16().count() <= MAX_CELL_UTF16);
        assert!(cut.ends_with("（已截断）"));
        let mut b = book();
        b.rows[0].fields.insert(Field::OfficerResume, long.clone());
        assert!(write_xlsx(&b).is_ok());
    }

    #[test]
    fn csv_has_bom_crlf_and_guards_formulas() {
        let bytes = write_csv(&book());
        assert_eq!(&bytes[..3], b"\xEF\xBB\xBF");
        let text = std::str::from_utf8(&bytes[3..]).unwrap();
        assert!(text.contains("\r\n"));
        assert!(!text.replace("\r\n", "").contains('\r'));

        let mut reader = csv::ReaderBuilder::new().from_reader(&bytes[3..]);
        let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
        assert_eq!(header, expected_header());
        let records: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
        assert_eq!(records.len(), 3);
        let col = |label: &str| column_of(label) as usize;
        assert_eq!(&records[0][0], "县发改局");
        assert_eq!(&records[1][0], "县教育局");
        assert_eq!(&records[2][0], "瓯北镇");
        assert_eq!(&records[0][col("分管领导办公电话")], "057767121553");
        assert_eq!(&records[0][col("信息员是否党员")], "是");
        assert_eq!(
            &records[0][col("信息员个人简历")],
            "1998.09—2002.07 浙江大学学习\n2002.08— 县发改局工作"
        );
        assert_eq!(&records[1][col("信息员职务")], "'=1+1");
        assert_eq!(&records[1][col("状态")], "待人工处理");
        assert_eq!(&records[2][col("报送时间")], "");

        for bad in ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(guard_csv_cell(bad), format!("'{bad}"));
        }
        assert_eq!(guard_csv_cell("057767121553"), "057767121553");
        assert_eq!(guard_csv_cell(""), "");
    }

    /// Undoes line folding: CRLF followed by a space joins the lines.
    fn unfold(text: &str) -> Vec<String> {
        text.replace("\r\n ", "")
            .split("\r\n")
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    }

    #[test]
    fn vcf_cards_escaping_and_folding() {
        let vcf = write_vcf(&book());
        assert!(vcf.ends_with("\r\n"));
        assert!(!vcf.replace("\r\n", "").contains(['\r', '\n']));
        for line in vcf.split("\r\n") {
            assert!(line.len() <= 75, "line too long: {line:?}");
        }
        let lines = unfold(&vcf);
        let cards: Vec<&[String]> = lines
            .split(|l| l == "END:VCARD")
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(cards.len(), 3);
        assert_eq!(lines.iter().filter(|l| *l == "BEGIN:VCARD").count(), 3);

        let leader = cards[0];
        assert_eq!(
            leader,
            [
                "BEGIN:VCARD",
                "VERSION:3.0",
                "N:王;建国;;;",
                "FN:王建国",
                "ORG:县发改局",
                "TITLE:副局长",
                "TEL;TYPE=CELL:13905771234",
                "TEL;TYPE=WORK:057767121553",
                "TEL;TYPE=HOME:057767220001",
                "EMAIL;TYPE=INTERNET:wjg@yj.gov.cn",
                "NOTE:分管政务信息领导；分管工作：分管办公室、政务信息；机关网号：661234",
            ]
        );
        let officer = cards[1];
        assert!(officer.contains(&"N:欧阳;小明;;;".to_string()));
        assert!(officer.contains(&"TITLE:办公室科员".to_string()));
        assert!(officer.contains(&"TEL;TYPE=CELL:13857700001".to_string()));
        assert!(officer.contains(&"NOTE:政务信息员；机关网号：665678；QQ：012345678".to_string()));

        // Row 2 has a leader only; row 3 has nobody.
        let second = cards[2];
        assert!(second.contains(&"FN:李四".to_string()));
        assert!(second.contains(&"TITLE:a\\,b\\;c".to_string()));
        assert!(!vcf.contains("瓯北镇"));
        let note = format!("NOTE:分管政务信息领导；分管工作：{}", escape_vcard(DUTIES));
        assert!(second.contains(&note));
        // That note was long enough to be folded, and unfolds to itself.
        let raw_third = vcf.split("END:VCARD\r\n").nth(2).unwrap();
        let continuations = raw_third
            .split("\r\n")
            .skip_while(|l| !l.starts_with("NOTE:"))
            .skip(1)
            .take_while(|l| l.starts_with(' '))
            .count();
        assert!(continuations >= 2, "{raw_third}");
    }

    #[test]
    fn vcard_helpers() {
        assert_eq!(escape_vcard("a,b;c"), "a\\,b\\;c");
        assert_eq!(escape_vcard("a\\b\r\nc\nd"), "a\\\\b\\nc\\nd");
        assert_eq!(split_name("王小明"), ("王".into(), "小明".into()));
        assert_eq!(split_name("王 小明"), ("王".into(), "小明".into()));
        assert_eq!(split_name("司马光"), ("司马".into(), "光".into()));
        assert_eq!(split_name("John Smith"), ("Smith".into(), "John".into()));

        let long = format!("TITLE:{}", "简历一二三ab".repeat(20));
        let mut out = String::new();
        push_folded(&mut out, &long);
        let physical: Vec<&str> = out.trim_end_matches("\r\n").split("\r\n").collect();
        assert!(physical.len() > 3);
        for (i, line) in physical.iter().enumerate() {
            assert!(line.len() <= 75);
            assert_eq!(i > 0, line.starts_with(' '));
            if i + 1 < physical.len() {
                // Folded as late as a character boundary allows.
                assert!(line.len() > 75 - 4, "{line:?}");
            }
        }
        assert_eq!(unfold(&out), vec![long]);
        let mut short = String::new();
        push_folded(&mut short, "FN:王小明");
        assert_eq!(short, "FN:王小明\r\n");
    }
}
