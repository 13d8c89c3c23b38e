//! Closed sets of values kept as text in the database: the only place where
//! they become text and back. Text that names no value is an error naming
//! the row ([`super::StoreError::Corrupt`]).

use super::outbox::MailKind;
use super::{Result, StoreError};
use crate::parse::message::MessageKind;

/// A closed set of values stored as text.
pub(super) trait StoredText: Sized + Copy + 'static {
    const ALL: &'static [Self];

    fn as_text(self) -> &'static str;

    /// Decodes stored text; `key` and `column` name the row for the error.
    fn decode(text: &str, table: &'static str, key: &str, column: &'static str) -> Result<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|v| v.as_text() == text)
            .ok_or_else(|| StoreError::corrupt(table, key, column, format!("未知的值“{text}”")))
    }
}

/// Where a message is in processing (`message.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MessageState {
    /// Recorded, not processed yet.
    Pending,
    /// Claimed by a worker.
    Processing,
    /// A transient failure, tried again from `retry_at`.
    Retry,
    Done,
    /// A permanent failure, with its reason.
    Failed,
}

impl MessageState {
    pub fn as_str(self) -> &'static str {
        self.as_text()
    }
}

impl StoredText for MessageState {
    const ALL: &'static [Self] = &[
        Self::Pending,
        Self::Processing,
        Self::Retry,
        Self::Done,
        Self::Failed,
    ];

    fn as_text(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::Retry => "retry",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }
}

impl StoredText for MessageKind {
    const ALL: &'static [Self] = &[Self::Submission, Self::Bounce, Self::AutoReply];

    fn as_text(self) -> &'static str {
        self.as_str()
    }
}

impl StoredText for MailKind {
    const ALL: &'static [Self] = &MailKind::ALL;

    fn as_text(self) -> &'static str {
        self.stem()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T: StoredText + PartialEq + std::fmt::Debug>() {
        for v in T::ALL {
            assert_eq!(T::decode(v.as_text(), "t", "k", "c").ok(), Some(*v));
        }
        assert!(matches!(
            T::decode("nonsense", "t", "k", "c"),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn every_value_round_trips_and_unknown_text_is_an_error() {
        round_trip::<MessageState>();
        round_trip::<MessageKind>();
        round_trip::<MailKind>();
    }
}
