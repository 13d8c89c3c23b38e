//! Problems found in a submission, reported as data with the contract's
//! codes and a Chinese sentence for the office staff.

use serde::Serialize;

use crate::parse::registration::Field;

/// The contract's problem codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    MissingField,
    InvalidMobile,
    InvalidPhone,
    InvalidEmail,
    InvalidQq,
    InvalidBirth,
    UnknownUnit,
    UnitConflict,
    NoRegistrationFound,
    ScannedDocument,
    UnreadableAttachment,
    /// The receiving server's checks of the sender (SPF, DKIM, DMARC)
    /// failed: not credited until a person confirms.
    SenderUnverified,
    /// From an address that is not the unit's, replacing a registration
    /// that came from the unit's own address: not credited until a person
    /// confirms.
    UnverifiedReplacement,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::MissingField => "missing_field",
            Code::InvalidMobile => "invalid_mobile",
            Code::InvalidPhone => "invalid_phone",
            Code::InvalidEmail => "invalid_email",
            Code::InvalidQq => "invalid_qq",
            Code::InvalidBirth => "invalid_birth",
            Code::UnknownUnit => "unknown_unit",
            Code::UnitConflict => "unit_conflict",
            Code::NoRegistrationFound => "no_registration_found",
            Code::ScannedDocument => "scanned_document",
            Code::UnreadableAttachment => "unreadable_attachment",
            Code::SenderUnverified => "sender_unverified",
            Code::UnverifiedReplacement => "unverified_replacement",
        }
    }
}

/// One problem: the field it concerns (if any), its code and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub field: Option<Field>,
    pub code: Code,
    pub message: String,
}

impl Problem {
    pub fn new(field: Option<Field>, code: Code, message: impl Into<String>) -> Self {
        Self {
            field,
            code,
            message: message.into(),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "field": self.field.map(Field::path),
            "code": self.code.as_str(),
            "message": self.message,
        })
    }
}
