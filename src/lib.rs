//! xxdc-intake: collects the 《分管政务信息领导及信息员登记表》 that every
//! township, street and county department of 永嘉县 sends to the 信息督查科
//! mailbox, reads the forms into registrations and credits them to the unit
//! roster.
//!
//! The modules follow the stages of `ARCHITECTURE.md`:
//!
//! - [`parse`]: raw bytes → what the message holds (envelope, forms read
//!   into registrations, problems, the unit); writes nothing, never touches
//!   the store;
//! - [`store`]: the database, and every SQL statement of the program;
//! - [`service`]: the archive, the sources, intake and the daemon loop;
//! - [`campaign`]: the mail we send (回执, 催报提醒, 通报);
//! - [`workspace`]: what the office reads (status);
//! - [`cli`]: the command line.

pub mod campaign;
pub mod cli;
pub mod clock;
pub mod config;
pub mod parse;
pub mod service;
pub mod store;
pub mod web;
pub mod workspace;
