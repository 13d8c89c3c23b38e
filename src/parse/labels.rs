//! The words a 登记表 uses for its labels, and what each one means.
//!
//! Real forms pad labels (`单 位`), use full-width characters
//! (`Ｅ－ｍａｉｌ：`), other wordings (办公电话 for 办电, 邮箱 for E-mail)
//! and add colons or `*` marks. [`classify`] maps any such spelling to a
//! [`Label`]. Which person a label belongs to is not decided here: the same
//! word (职务, 手机 …) appears in both the leader's and the officer's part,
//! and `crate::parse::form` decides by position.

use unicode_normalization::UnicodeNormalization;

use crate::parse::registration::{Field, Section};

/// What a field label asks for, before its section is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key {
    UnitName,
    Address,
    /// 办公室电话: the unit's number in the unit part, else the person's.
    UnitPhone,
    Fax,
    Name,
    Title,
    Duties,
    OfficePhone,
    Mobile,
    HomePhone,
    GovNet,
    Email,
    Qq,
    Gender,
    Birth,
    NativePlace,
    Party,
    Resume,
}

/// What a label cell is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    /// A field label such as 手机 or 出生年月.
    Field(Key),
    /// 分管领导 / 信息员: starts a person's part. `named` when the label also
    /// asks for the name (分管领导姓名, 信息员姓名).
    Anchor { section: Section, named: bool },
    /// Structure without a value of its own: 联系方式, 项目, 类别.
    Context,
    /// A label that is not ours: 意见, 盖章, 备注, 填表日期 …; the cell next to
    /// it is not a value of any field.
    Other,
    /// The form's title (…登记表).
    Title,
}

const FIELD_WORDS: &[(Key, &[&str])] = &[
    (
        Key::UnitName,
        &[
            "单位",
            "单位名称",
            "填报单位",
            "报送单位",
            "单位全称",
            "工作单位",
            "所在单位",
            "部门名称",
            "报送部门",
            "乡镇部门",
            "乡镇(部门)",
            "乡镇(街道)",
        ],
    ),
    (
        Key::Address,
        &[
            "地址",
            "单位地址",
            "通讯地址",
            "通信地址",
            "详细地址",
            "办公地址",
            "联系地址",
            "邮寄地址",
        ],
    ),
    (
        Key::UnitPhone,
        &["办公室电话", "单位电话", "办公室电话号码", "单位办公室电话"],
    ),
    (
        Key::Fax,
        &["传真", "传真号码", "传真电话", "单位传真", "传真号", "fax"],
    ),
    (Key::Name, &["姓名", "名字"]),
    (
        Key::Title,
        &[
            "职务",
            "职务职称",
            "职称",
            "现任职务",
            "行政职务",
            "职务(职称)",
            "职务/职称",
            "职位",
            "现职务",
            "职级",
        ],
    ),
    (
        Key::Duties,
        &[
            "分管工作",
            "分管范围",
            "分管内容",
            "分管业务",
            "分管领域",
            "分工",
            "分管事项",
            "分管职责",
            "工作分工",
            "具体分工",
            "负责工作",
        ],
    ),
    (
        Key::OfficePhone,
        &[
            "办电",
            "办公电话",
            "电话",
            "联系电话",
            "固定电话",
            "座机",
            "办公电话号码",
            "单位电话号码",
            "办公号码",
            "固话",
            "电话号码",
            "工作电话",
            "办公座机",
            "座机号码",
        ],
    ),
    (
        Key::Mobile,
        &[
            "手机",
            "手机号",
            "手机号码",
            "移动电话",
            "手提",
            "移动电话号码",
            "联系手机",
            "手机电话",
            "移动号码",
            "mobile",
        ],
    ),
    (
        Key::HomePhone,
        &[
            "宅电",
            "住宅电话",
            "家庭电话",
            "宅电号码",
            "家庭号码",
            "住宅",
            "家庭住宅电话",
            "住宅号码",
            "家里电话",
            "家电",
            "住宅固话",
        ],
    ),
    (
        Key::GovNet,
        &[
            "机关网",
            "机关网号码",
            "机关网电话",
            "机关短号",
            "虚拟网",
            "短号",
            "机关网短号",
            "内网电话",
            "机关网号",
            "政务网",
            "政务网号",
            "虚拟网号",
            "虚拟网短号",
            "集团短号",
            "短号码",
        ],
    ),
    (
        Key::Email,
        &[
            "e-mail",
            "email",
            "e_mail",
            "电子邮箱",
            "邮箱",
            "电子邮件",
            "e-mail地址",
            "邮件",
            "mail",
            "电子信箱",
            "邮箱地址",
            "电邮",
            "电子邮件地址",
            "邮箱号",
        ],
    ),
    (
        Key::Qq,
        &["qq", "qq号码", "qq号", "qq号码(选填)", "qq账号", "qq帐号"],
    ),
    (Key::Gender, &["性别"]),
    (
        Key::Birth,
        &[
            "出生年月",
            "出生日期",
            "出生年月日",
            "生日",
            "出生时间",
            "出生年份",
            "出生",
        ],
    ),
    (Key::NativePlace, &["籍贯", "出生地", "祖籍"]),
    (
        Key::Party,
        &[
            "是否党员",
            "政治面貌",
            "是否中共党员",
            "党派",
            "是否为党员",
            "党员否",
            "政治身份",
        ],
    ),
    (
        Key::Resume,
        &[
            "个人简历",
            "信息员个人简历",
            "简历",
            "工作简历",
            "信息员简历",
            "主要简历",
            "个人履历",
            "个人简介",
            "工作经历",
            "学习工作简历",
            "主要经历",
            "工作履历",
            "简介",
        ],
    ),
];

const LEADER_WORDS: &[&str] = &[
    "分管领导",
    "分管政务信息领导",
    "分管信息领导",
    "分管信息工作领导",
    "分管政务信息工作领导",
    "分管领导信息",
    "信息分管领导",
];
const OFFICER_WORDS: &[&str] = &[
    "信息员",
    "政务信息员",
    "信息联络员",
    "联络员",
    "信息工作人员",
];
const CONTEXT_WORDS: &[&str] = &[
    "联系方式",
    "联系电话方式",
    "通讯方式",
    "项目",
    "类别",
    "人员",
    "序号",
    "身份",
    "人员类别",
];
const OTHER_FRAGMENTS: &[&str] = &[
    "意见",
    "盖章",
    "备注",
    "填表",
    "审核",
    "签字",
    "签名",
    "说明",
    "附件",
    "年月日",
    "日期",
    "注:",
];

/// Normalises label text: full-width to ASCII (NFKC), lower case, no white
/// space, no `*` marks, no trailing colon, no trailing `(…)` remark.
pub fn normalize(text: &str) -> String {
    let mut s: String = text
        .nfkc()
        .flat_map(char::to_lowercase)
        .filter(|c| !c.is_whitespace() && !matches!(c, '*' | '＊' | '※' | '·'))
        .collect();
    while let Some(stripped) = s.strip_suffix([':', '：', '︰', '.']) {
        s = stripped.to_string();
    }
    if let Some(rest) = strip_enumerator(&s) {
        s = rest.to_string();
    }
    // A speck a fax or scan leaves inside a Chinese label (`单.位`, read by
    // OCR); labels with letters or digits (`e.mail`) keep their dots.
    if !s.chars().any(|c| c.is_ascii_alphanumeric()) {
        s.retain(|c| c != '.');
    }
    s
}

/// A heading's number taken off (`一、分管领导`, `(二)信息员`, `2.信息员`,
/// `第一部分`), when something follows it.
fn strip_enumerator(s: &str) -> Option<&str> {
    let numeral = |c: char| "一二三四五六七八九十".contains(c) || c.is_ascii_digit();
    let rest = if let Some(inner) = s.strip_prefix('(') {
        let close = inner.find(')')?;
        (close > 0 && inner[..close].chars().all(numeral)).then(|| &inner[close + 1..])?
    } else if let Some(inner) = s.strip_prefix('第') {
        let end = inner.find(|c: char| !numeral(c))?;
        ["部分", "项", "、"]
            .iter()
            .find_map(|w| inner[end..].strip_prefix(w))
            .filter(|_| end > 0)?
    } else {
        let end = s.find(|c: char| !numeral(c))?;
        if end == 0 {
            return None;
        }
        let rest = &s[end..];
        let sep = rest.chars().next()?;
        // `1.` only before a Chinese heading: `1.5` is a number.
        let chinese_next = rest[sep.len_utf8()..]
            .chars()
            .next()
            .is_some_and(|c| !c.is_ascii());
        if sep == '、' || (matches!(sep, '.' | '．') && chinese_next) {
            &rest[sep.len_utf8()..]
        } else {
            return None;
        }
    };
    let rest = rest.trim_start_matches(['、', '.', '．']);
    (!rest.is_empty()).then_some(rest)
}

/// Classifies a cell's whole text as a label, or `None` for a value.
pub fn classify(text: &str) -> Option<Label> {
    let norm = normalize(text);
    if norm.is_empty() || norm.chars().count() > 16 {
        return None;
    }
    classify_normalized(&norm).or_else(|| {
        // A trailing remark: 手机(必填), 出生年月(1980.01).
        let (head, _) = norm.split_once(['(', '（', '['])?;
        (!head.is_empty())
            .then(|| classify_normalized(head))
            .flatten()
    })
}

fn classify_normalized(norm: &str) -> Option<Label> {
    if let Some((key, _)) = FIELD_WORDS.iter().find(|(_, words)| words.contains(&norm)) {
        return Some(Label::Field(*key));
    }
    // Section title rows: 分管领导情况, 信息员基本情况.
    let bare = ["基本情况", "情况", "基本信息"]
        .iter()
        .find_map(|s| norm.strip_suffix(s))
        .unwrap_or(norm);
    for (section, words) in [
        (Section::Leader, LEADER_WORDS),
        (Section::Officer, OFFICER_WORDS),
    ] {
        for w in words {
            if norm == *w || bare == *w {
                return Some(Label::Anchor {
                    section,
                    named: false,
                });
            }
            if norm
                .strip_prefix(w)
                .is_some_and(|rest| rest == "姓名" || rest == "名字")
            {
                return Some(Label::Anchor {
                    section,
                    named: true,
                });
            }
        }
    }
    if CONTEXT_WORDS.contains(&norm) {
        return Some(Label::Context);
    }
    if norm.contains("登记表") || norm.contains("登记") && norm.chars().count() >= 6 {
        return Some(Label::Title);
    }
    // `出生日期：198004` is a label and its value, not a remark about a
    // date: text with a colon inside is split by the extractor instead.
    let pair = norm.contains(':') && !norm.starts_with("注:");
    if !pair && OTHER_FRAGMENTS.iter().any(|f| norm.contains(f)) && norm.chars().count() <= 12 {
        return Some(Label::Other);
    }
    None
}

/// The contract field a key stands for in a section, if any: 职务 in the
/// leader's part is `leader.title`; 性别 only exists for the officer.
pub fn field_for(key: Key, section: Section) -> Option<Field> {
    use Section::*;
    Some(match (key, section) {
        (Key::UnitName, _) => Field::UnitName,
        (Key::Address, _) => Field::UnitAddress,
        (Key::Fax, _) => Field::UnitFax,
        (Key::UnitPhone | Key::OfficePhone, Unit) => Field::UnitOfficePhone,
        (Key::UnitPhone | Key::OfficePhone, Leader) => Field::LeaderOfficePhone,
        (Key::UnitPhone | Key::OfficePhone, Officer) => Field::OfficerOfficePhone,
        (Key::Name, Leader) => Field::LeaderName,
        (Key::Name, Officer) => Field::OfficerName,
        (Key::Title, Leader) => Field::LeaderTitle,
        (Key::Title, Officer) => Field::OfficerTitle,
        (Key::Duties, Leader | Unit) => Field::LeaderDuties,
        (Key::Mobile, Leader) => Field::LeaderMobile,
        (Key::Mobile, Officer) => Field::OfficerMobile,
        (Key::HomePhone, Leader) => Field::LeaderHomePhone,
        (Key::HomePhone, Officer) => Field::OfficerHomePhone,
        (Key::GovNet, Leader) => Field::LeaderGovNet,
        (Key::GovNet, Officer) => Field::OfficerGovNet,
        (Key::Email, Leader) => Field::LeaderEmail,
        (Key::Email, Officer) => Field::OfficerEmail,
        (Key::Qq, Officer) => Field::OfficerQq,
        (Key::Gender, Officer) => Field::OfficerGender,
        (Key::Birth, Officer) => Field::OfficerBirth,
        (Key::NativePlace, Officer) => Field::OfficerNativePlace,
        (Key::Party, Officer) => Field::OfficerPartyMember,
        (Key::Resume, _) => Field::OfficerResume,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_headings_are_their_labels() {
        for (text, section) in [
            ("一、分管政务信息领导", Section::Leader),
            ("二、信息员", Section::Officer),
            ("（二）信息员情况", Section::Officer),
            ("2.信息员", Section::Officer),
            ("1、分管领导", Section::Leader),
        ] {
            assert_eq!(
                classify(text),
                Some(Label::Anchor {
                    section,
                    named: false
                }),
                "{text}"
            );
        }
        assert_eq!(classify("1.5"), None);
        assert_eq!(classify("出生日期：198004"), None);
        assert_eq!(classify("填表日期"), Some(Label::Other));
        assert_eq!(classify("一、"), None);
    }

    #[test]
    fn padded_full_width_and_colon_labels() {
        assert_eq!(classify("单 位"), Some(Label::Field(Key::UnitName)));
        assert_eq!(classify("Ｅ－ｍａｉｌ："), Some(Label::Field(Key::Email)));
        assert_eq!(classify("E-mail:"), Some(Label::Field(Key::Email)));
        assert_eq!(classify("QQ 号码"), Some(Label::Field(Key::Qq)));
        // A scan's speck read inside a label.
        assert_eq!(classify("单.位"), Some(Label::Field(Key::UnitName)));
        assert_eq!(classify("联 系 方 式"), Some(Label::Context));
        assert_eq!(classify("手机（必填）"), Some(Label::Field(Key::Mobile)));
        assert_eq!(
            classify("信息员\n个人简历"),
            Some(Label::Field(Key::Resume))
        );
        assert_eq!(
            classify("分管领导姓名"),
            Some(Label::Anchor {
                section: Section::Leader,
                named: true
            })
        );
        assert_eq!(
            classify("信息员："),
            Some(Label::Anchor {
                section: Section::Officer,
                named: false
            })
        );
        assert_eq!(
            classify("分管政务信息领导及信息员登记表"),
            Some(Label::Title)
        );
        assert_eq!(classify("单位主要\n领导意见"), Some(Label::Other));
        assert_eq!(
            classify("信息员基本情况"),
            Some(Label::Anchor {
                section: Section::Officer,
                named: false
            })
        );
    }

    /// Wordings units type when they retype the form: each is read as the
    /// field it means (padding, colons and full-width letters as anywhere).
    #[test]
    fn retyped_wordings_mean_their_field() {
        let cases: &[(&str, Key)] = &[
            ("部门名称", Key::UnitName),
            ("乡镇（街道）", Key::UnitName),
            ("联系地址", Key::Address),
            ("传真号", Key::Fax),
            ("Fax", Key::Fax),
            ("职务/职称", Key::Title),
            ("职 位", Key::Title),
            ("分管领域", Key::Duties),
            ("分工", Key::Duties),
            ("分管事项", Key::Duties),
            ("工作分工", Key::Duties),
            ("办公电话", Key::OfficePhone),
            ("联系电话", Key::OfficePhone),
            ("办电", Key::OfficePhone),
            ("固话", Key::OfficePhone),
            ("电话号码", Key::OfficePhone),
            ("移动电话", Key::Mobile),
            ("手机号码", Key::Mobile),
            ("联系手机", Key::Mobile),
            ("住宅电话", Key::HomePhone),
            ("家庭电话", Key::HomePhone),
            ("家庭住宅电话", Key::HomePhone),
            ("机关网号", Key::GovNet),
            ("机关网号码", Key::GovNet),
            ("政务网号", Key::GovNet),
            ("虚拟网短号", Key::GovNet),
            ("电子邮箱", Key::Email),
            ("电子信箱：", Key::Email),
            ("E-mail", Key::Email),
            ("Email", Key::Email),
            ("电邮", Key::Email),
            ("QQ账号", Key::Qq),
            ("出生年月", Key::Birth),
            ("出生日期", Key::Birth),
            ("祖籍", Key::NativePlace),
            ("政治面貌", Key::Party),
            ("是否党员", Key::Party),
            ("是否为党员", Key::Party),
            ("个人简历", Key::Resume),
            ("工作简历", Key::Resume),
            ("简历", Key::Resume),
            ("工作经历", Key::Resume),
        ];
        for (text, key) in cases {
            assert_eq!(classify(text), Some(Label::Field(*key)), "{text}");
        }
        // Answers are not labels, even short ones next to these wordings.
        for value in ["党员", "中共党员", "群众", "是", "否", "男", "女", "科员"] {
            assert_eq!(classify(value), None, "{value}");
        }
    }

    #[test]
    fn values_are_not_labels() {
        for v in [
            "张三",
            "男",
            "党员",
            "群众",
            "浙江 永嘉",
            "13805771234",
            "党政办科员",
            "是",
            "办公室、文秘、信息",
        ] {
            assert_eq!(classify(v), None, "{v}");
        }
    }

    #[test]
    fn sections_decide_fields() {
        assert_eq!(
            field_for(Key::Mobile, Section::Leader),
            Some(Field::LeaderMobile)
        );
        assert_eq!(
            field_for(Key::OfficePhone, Section::Unit),
            Some(Field::UnitOfficePhone)
        );
        assert_eq!(field_for(Key::Gender, Section::Leader), None);
        assert_eq!(field_for(Key::Name, Section::Unit), None);
    }
}
