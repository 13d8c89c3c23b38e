//! The registration (登记) a unit sends: its 分管领导 (leader in charge of
//! government information) and its 信息员 (information officer), as the
//! parse contract names the fields.
//!
//! This module owns the field list and the output shape; extracting values
//! is `crate::parse::form`, normalising and checking them is `crate::parse::normalize`.

use serde::Serialize;

/// Whose part of the form a field belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Section {
    Unit,
    Leader,
    Officer,
}

/// One of the 25 fields of the contract, e.g. `officer.mobile`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    UnitName,
    UnitAddress,
    UnitOfficePhone,
    UnitFax,
    LeaderName,
    LeaderTitle,
    LeaderDuties,
    LeaderOfficePhone,
    LeaderMobile,
    LeaderHomePhone,
    LeaderGovNet,
    LeaderEmail,
    OfficerName,
    OfficerGender,
    OfficerTitle,
    OfficerBirth,
    OfficerNativePlace,
    OfficerPartyMember,
    OfficerOfficePhone,
    OfficerMobile,
    OfficerHomePhone,
    OfficerGovNet,
    OfficerQq,
    OfficerEmail,
    OfficerResume,
}

/// What kind of value a field holds, which decides its normalisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Names, titles, unit name, native place: CJK spacing removed.
    Name,
    /// Address, duties, resume: text as written.
    Text,
    Phone,
    Mobile,
    GovNet,
    Qq,
    Email,
    Birth,
    Gender,
    PartyMember,
}

impl Field {
    pub const ALL: [Field; 25] = [
        Field::UnitName,
        Field::UnitAddress,
        Field::UnitOfficePhone,
        Field::UnitFax,
        Field::LeaderName,
        Field::LeaderTitle,
        Field::LeaderDuties,
        Field::LeaderOfficePhone,
        Field::LeaderMobile,
        Field::LeaderHomePhone,
        Field::LeaderGovNet,
        Field::LeaderEmail,
        Field::OfficerName,
        Field::OfficerGender,
        Field::OfficerTitle,
        Field::OfficerBirth,
        Field::OfficerNativePlace,
        Field::OfficerPartyMember,
        Field::OfficerOfficePhone,
        Field::OfficerMobile,
        Field::OfficerHomePhone,
        Field::OfficerGovNet,
        Field::OfficerQq,
        Field::OfficerEmail,
        Field::OfficerResume,
    ];

    /// The contract's path, e.g. `leader.gov_net`.
    pub fn path(self) -> &'static str {
        match self {
            Field::UnitName => "unit.name",
            Field::UnitAddress => "unit.address",
            Field::UnitOfficePhone => "unit.office_phone",
            Field::UnitFax => "unit.fax",
            Field::LeaderName => "leader.name",
            Field::LeaderTitle => "leader.title",
            Field::LeaderDuties => "leader.duties",
            Field::LeaderOfficePhone => "leader.office_phone",
            Field::LeaderMobile => "leader.mobile",
            Field::LeaderHomePhone => "leader.home_phone",
            Field::LeaderGovNet => "leader.gov_net",
            Field::LeaderEmail => "leader.email",
            Field::OfficerName => "officer.name",
            Field::OfficerGender => "officer.gender",
            Field::OfficerTitle => "officer.title",
            Field::OfficerBirth => "officer.birth",
            Field::OfficerNativePlace => "officer.native_place",
            Field::OfficerPartyMember => "officer.party_member",
            Field::OfficerOfficePhone => "officer.office_phone",
            Field::OfficerMobile => "officer.mobile",
            Field::OfficerHomePhone => "officer.home_phone",
            Field::OfficerGovNet => "officer.gov_net",
            Field::OfficerQq => "officer.qq",
            Field::OfficerEmail => "officer.email",
            Field::OfficerResume => "officer.resume",
        }
    }

    pub fn from_path(path: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.path() == path)
    }

    pub fn section(self) -> Section {
        match self.path().split_once('.').map(|(s, _)| s) {
            Some("unit") => Section::Unit,
            Some("leader") => Section::Leader,
            _ => Section::Officer,
        }
    }

    pub fn kind(self) -> Kind {
        use Field::*;
        match self {
            UnitName | LeaderName | LeaderTitle | OfficerName | OfficerTitle
            | OfficerNativePlace => Kind::Name,
            UnitAddress | LeaderDuties | OfficerResume => Kind::Text,
            UnitOfficePhone | UnitFax | LeaderOfficePhone | LeaderHomePhone
            | OfficerOfficePhone | OfficerHomePhone => Kind::Phone,
            LeaderMobile | OfficerMobile => Kind::Mobile,
            LeaderGovNet | OfficerGovNet => Kind::GovNet,
            OfficerQq => Kind::Qq,
            LeaderEmail | OfficerEmail => Kind::Email,
            OfficerBirth => Kind::Birth,
            OfficerGender => Kind::Gender,
            OfficerPartyMember => Kind::PartyMember,
        }
    }

    /// How the field is named to office staff, e.g. `信息员手机号码`.
    pub fn label_zh(self) -> &'static str {
        match self {
            Field::UnitName => "单位名称",
            Field::UnitAddress => "单位地址",
            Field::UnitOfficePhone => "办公室电话",
            Field::UnitFax => "传真",
            Field::LeaderName => "分管领导姓名",
            Field::LeaderTitle => "分管领导职务",
            Field::LeaderDuties => "分管工作",
            Field::LeaderOfficePhone => "分管领导办公电话",
            Field::LeaderMobile => "分管领导手机号码",
            Field::LeaderHomePhone => "分管领导宅电",
            Field::LeaderGovNet => "分管领导机关网号码",
            Field::LeaderEmail => "分管领导电子邮箱",
            Field::OfficerName => "信息员姓名",
            Field::OfficerGender => "信息员性别",
            Field::OfficerTitle => "信息员职务",
            Field::OfficerBirth => "信息员出生年月",
            Field::OfficerNativePlace => "信息员籍贯",
            Field::OfficerPartyMember => "信息员是否党员",
            Field::OfficerOfficePhone => "信息员办公电话",
            Field::OfficerMobile => "信息员手机号码",
            Field::OfficerHomePhone => "信息员宅电",
            Field::OfficerGovNet => "信息员机关网号码",
            Field::OfficerQq => "信息员QQ号码",
            Field::OfficerEmail => "信息员电子邮箱",
            Field::OfficerResume => "信息员个人简历",
        }
    }
}

/// A normalised value: text, or the boolean of `party_member`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Value {
    Text(String),
    Bool(bool),
}

/// The unit a registration or sender was credited to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnitMatch {
    pub unit_id: String,
    pub unit_name: String,
    /// `form`, `sender`, `subject` or `filename`.
    pub by: &'static str,
    pub confidence: f64,
}

/// One registration as the contract prints it. Fields are kept in a fixed
/// order map; `None` prints as `null`.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    /// The attachment's file name, or `body`.
    pub source: String,
    pub values: std::collections::BTreeMap<Field, Value>,
    pub unit_match: Option<UnitMatch>,
    /// Read by OCR from a scan (`"ocr": true` in the JSON).
    pub ocr: bool,
}

impl Registration {
    pub fn text(&self, field: Field) -> Option<&str> {
        match self.values.get(&field) {
            Some(Value::Text(s)) => Some(s),
            _ => None,
        }
    }

    /// The contract's JSON shape: `unit`, `leader`, `officer` objects with
    /// every field present.
    pub fn to_json(&self) -> serde_json::Value {
        let mut unit = serde_json::Map::new();
        let mut leader = serde_json::Map::new();
        let mut officer = serde_json::Map::new();
        for field in Field::ALL {
            let (section, key) = field.path().split_once('.').unwrap_or(("", field.path()));
            let value = match self.values.get(&field) {
                Some(Value::Text(s)) => serde_json::Value::String(s.clone()),
                Some(Value::Bool(b)) => serde_json::Value::Bool(*b),
                None => serde_json::Value::Null,
            };
            let target = match section {
                "unit" => &mut unit,
                "leader" => &mut leader,
                _ => &mut officer,
            };
            target.insert(key.to_string(), value);
        }
        let mut value = serde_json::json!({
            "source": self.source,
            "unit": unit,
            "leader": leader,
            "officer": officer,
            "unit_match": self.unit_match,
        });
        if self.ocr {
            value["ocr"] = serde_json::Value::Bool(true);
        }
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip_and_sections() {
        for f in Field::ALL {
            assert_eq!(Field::from_path(f.path()), Some(f));
        }
        assert_eq!(Field::LeaderGovNet.section(), Section::Leader);
        assert_eq!(Field::UnitFax.section(), Section::Unit);
        assert_eq!(Field::OfficerQq.section(), Section::Officer);
    }
}
