//! What the office reads and decides: the status of every unit, the
//! messages waiting for a person and the decisions on them, the users of
//! the workspace, and the 名册 taken out as files.

pub mod book;
pub mod decide;
pub mod export;
pub mod status;
pub mod users;

/// A problem code (or a review reason) in Chinese, for people.
pub fn problem_zh(code: &str) -> String {
    let text = match code {
        "missing_field" => "缺少必填项",
        "invalid_mobile" => "手机号码有误",
        "invalid_phone" => "电话号码有误",
        "invalid_email" => "电子邮箱有误",
        "invalid_qq" => "QQ号码有误",
        "invalid_birth" => "出生年月有误",
        "unknown_unit" => "无法确定报送单位",
        "unit_conflict" => "单位名称与发件地址不一致",
        "no_registration_found" => "邮件中没有找到登记表",
        "scanned_document" => "扫描件或传真，需人工录入",
        "unreadable_attachment" => "附件无法读取",
        "sender_unverified" => "发件人未通过验证",
        "unverified_replacement" => "非本单位邮箱发来的更新",
        "needs_review" => "需人工查看",
        crate::store::progress::CORRECTED_OLDER => "已对旧登记作过更正，收到新登记，请核对",
        other => {
            return match other.strip_prefix("failed: ") {
                Some(why) => format!("处理失败：{why}"),
                None => other.to_string(),
            };
        }
    };
    text.to_string()
}
