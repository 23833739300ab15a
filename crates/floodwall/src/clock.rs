//! A clock that follows tokio's time, so that paused-time tests drive stores and sleeps together.

use floodwall_core::{Clock, SystemClock};
use tokio::time::Instant;

/// Wall time at construction, advanced by tokio's clock since.
///
/// Under `tokio::time::pause()` it stands still until the runtime auto-advances to the next timer,
/// so a test of [`Limiter::acquire`](crate::Limiter::acquire) on a [`MemoryStore`](crate::MemoryStore)
/// with this clock runs without real sleeps. Outside a runtime's paused time it behaves like
/// [`SystemClock`]. Must be created inside a tokio runtime when time is paused.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    anchor_us: u64,
    anchor: Instant,
}

impl TokioClock {
    /// A clock reading the current wall time.
    pub fn new() -> Self {
        Self::starting_at(SystemClock::new().now_us())
    }

    /// A clock reading `now_us` now.
    pub fn starting_at(now_us: u64) -> Self {
        TokioClock {
            anchor_us: now_us,
            anchor: Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now_us(&self) -> u64 {
        let elapsed = u64::try_from(self.anchor.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.anchor_us.saturating_add(elapsed)
    }
}
