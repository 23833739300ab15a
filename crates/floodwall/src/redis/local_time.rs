//! This instance's own time, for what it remembers between calls (denials, leases).

use std::sync::Arc;

use floodwall_core::Clock;
use tokio::time::Instant;

/// Microseconds on the store's injected clock when it has one (tests), else on tokio's
/// monotonic clock since the store was built. Only differences of these times mean anything.
#[derive(Debug)]
pub(crate) struct LocalTime {
    clock: Option<Arc<dyn Clock>>,
    epoch: Instant,
}

impl LocalTime {
    pub(crate) fn new(clock: Option<Arc<dyn Clock>>) -> Self {
        LocalTime {
            clock,
            epoch: Instant::now(),
        }
    }

    pub(crate) fn now_us(&self) -> u64 {
        match &self.clock {
            Some(clock) => clock.now_us(),
            None => u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX),
        }
    }
}
