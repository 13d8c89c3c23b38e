//! Reading and parsing: one raw message or bare attachment in, a
//! [`report::ParseReport`] out (envelope, attachments, registrations matched
//! to the roster, problems). `parse` prints it; the service stores it.
//!
//! Nothing here writes anywhere or touches the store: the same code is the
//! dry run and the service's processing.

pub mod compound;
pub mod container;
pub mod form;
pub mod fuzzing;
pub mod grid;
pub mod labels;
pub mod matching;
pub mod message;
pub mod normalize;
pub mod ocr;
pub mod office;
pub mod pipeline;
pub mod problems;
pub mod quote;
pub mod readers;
pub mod registration;
pub mod report;
pub mod roster;
pub mod sandbox;
pub mod sentence;
pub mod sniff;
pub mod trust;
