//! The service around the pipeline: the raw-message archive, the sources
//! that fetch messages (IMAP, a folder), intake (archive, record, claim,
//! process, store) and the daemon loop that runs them.

pub mod archive;
pub mod daemon;
pub mod intake;
pub mod sources;
