//! What the office reads: the status of every unit, the sources and the
//! messages waiting for a person.

pub mod status;
