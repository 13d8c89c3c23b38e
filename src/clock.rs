//! Time, injected: domain code takes `now` from a [`Clock`] so tests can fix
//! it.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// The source of "now", in unix seconds.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    #[default]
    System,
    /// A settable clock for tests.
    Fixed(Arc<AtomicI64>),
}

impl Clock {
    pub fn fixed(t: i64) -> Self {
        Clock::Fixed(Arc::new(AtomicI64::new(t)))
    }

    pub fn now(&self) -> i64 {
        match self {
            Clock::System => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
            Clock::Fixed(t) => t.load(Ordering::SeqCst),
        }
    }

    /// Moves a fixed clock forward; no effect on the system clock.
    pub fn advance(&self, seconds: i64) {
        if let Clock::Fixed(t) = self {
            t.fetch_add(seconds, Ordering::SeqCst);
        }
    }
}
