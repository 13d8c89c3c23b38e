//! xxdc-intake: collects the 《分管政务信息领导及信息员登记表》 that every
//! township, street and county department of 永嘉县 sends to the 信息督查科
//! mailbox, reads the forms into registrations and credits them to the unit
//! roster.
//!
//! See `ARCHITECTURE.md` for how a message flows through these modules.

pub mod archive;
pub mod campaign;
pub mod cli;
pub mod clock;
pub mod config;
pub mod container;
pub mod daemon;
pub mod form;
pub mod grid;
pub mod intake;
pub mod labels;
pub mod mailer;
pub mod matching;
pub mod message;
pub mod normalize;
pub mod outbox;
pub mod pipeline;
pub mod problems;
pub mod readers;
pub mod registration;
pub mod reminders;
pub mod report;
pub mod roster;
pub mod sandbox;
pub mod sniff;
pub mod sources;
pub mod status;
pub mod store;
pub mod templates;
