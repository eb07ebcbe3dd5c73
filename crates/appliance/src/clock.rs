//! Time source of the appliance: the wall clock, or a hand-driven one so tests can
//! play days of a therapy cycle in milliseconds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub trait Clock: Send + Sync {
    /// Seconds since an arbitrary, fixed start.
    fn now_s(&self) -> f64;
}

/// The real monotonic clock.
pub struct SystemClock {
    start: std::time::Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock {
            start: std::time::Instant::now(),
        }
    }
}

impl Clock for SystemClock {
    fn now_s(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }
}

/// A clock that moves only when told to.
#[derive(Clone, Default)]
pub struct ManualClock {
    bits: Arc<AtomicU64>,
}

impl ManualClock {
    pub fn advance(&self, seconds: f64) {
        let now = self.now_s() + seconds;
        self.bits.store(now.to_bits(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_s(&self) -> f64 {
        f64::from_bits(self.bits.load(Ordering::SeqCst))
    }
}
