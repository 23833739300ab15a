//! Where time comes from: the only module that reads the system clock.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of the current time in whole microseconds since the Unix epoch.
///
/// Implementations must never go backwards: the algorithms tolerate it (stored times in the
/// future are clamped), but a clock that steps back makes windows repeat.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Microseconds since the Unix epoch. Always below 2^53.
    fn now_us(&self) -> u64;
}

/// The wall clock as read once at construction, advanced by a monotonic clock since.
///
/// Window boundaries therefore agree with other hosts' Unix time (to within their NTP offset at
/// start), and a later step of the wall clock (NTP, an operator) neither repeats a window nor locks
/// a client out.
///
/// The monotonic clock is `quanta`'s calibrated TSC where the CPU has a stable one (falling back
/// to the OS monotonic clock otherwise): about 12 ns a read against 33 ns for `Instant::now` on
/// a KVM guest, which is a quarter of an in-memory decision.
#[derive(Debug, Clone)]
pub struct SystemClock {
    anchor_us: u64,
    anchor_raw: u64,
    /// Microseconds per 2^[`SCALE_SHIFT`] raw ticks: the monotonic clock's calibration and the
    /// nanoseconds-to-microseconds step folded into one multiplication.
    us_per_ticks: u64,
    monotonic: quanta::Clock,
}

/// Raw ticks are scaled by `us_per_ticks >> SCALE_SHIFT`: 2^40 ticks of a GHz counter are
/// minutes, so the factor carries about nine significant digits (a drift under a millisecond a
/// day against the calibration itself).
const SCALE_SHIFT: u32 = 40;

impl SystemClock {
    /// Reads the wall clock and the monotonic clock once (the first clock in a process also
    /// calibrates the TSC, which takes a few milliseconds).
    #[allow(clippy::disallowed_methods)] // the one place the system clock is read
    pub fn new() -> Self {
        let anchor_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        let monotonic = quanta::Clock::new();
        let us_per_ticks = (monotonic.delta_as_nanos(0, 1 << SCALE_SHIFT) / 1_000).max(1);
        SystemClock {
            anchor_us,
            anchor_raw: monotonic.raw(),
            us_per_ticks,
            monotonic,
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl SystemClock {
    /// `ticks` of the monotonic clock in whole microseconds.
    #[inline]
    fn ticks_to_us(&self, ticks: u64) -> u64 {
        let us = (u128::from(ticks) * u128::from(self.us_per_ticks)) >> SCALE_SHIFT;
        u64::try_from(us).unwrap_or(u64::MAX)
    }
}

impl Clock for SystemClock {
    #[inline]
    fn now_us(&self) -> u64 {
        // One multiplication from ticks to µs (through nanoseconds it took two), and a counter
        // read on another core that lags the anchor counts as no time at all.
        let ticks = self.monotonic.raw().saturating_sub(self.anchor_raw);
        self.anchor_us.saturating_add(self.ticks_to_us(ticks))
    }
}

/// A clock that moves only when told to; clones share one time. For tests and simulations.
///
/// ```
/// use std::time::Duration;
/// use floodwall_core::{Clock, ManualClock};
///
/// let clock = ManualClock::new(1_000);
/// let shared = clock.clone();
/// clock.advance(Duration::from_millis(2));
/// assert_eq!(shared.now_us(), 3_000);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    now_us: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock reading `now_us` microseconds since the Unix epoch.
    pub fn new(now_us: u64) -> Self {
        ManualClock {
            now_us: Arc::new(AtomicU64::new(now_us)),
        }
    }

    /// Moves every clone of this clock forward by `by` (saturating, whole microseconds).
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_micros()).unwrap_or(u64::MAX);
        self.advance_us(by);
    }

    /// Moves every clone of this clock forward by `by_us` microseconds.
    pub fn advance_us(&self, by_us: u64) {
        // fetch_update never fails with a closure that always returns Some.
        let _ = self
            .now_us
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| {
                Some(t.saturating_add(by_us))
            });
    }

    /// Sets every clone of this clock to `now_us`, even backwards (to test clock steps).
    pub fn set_us(&self, now_us: u64) {
        self.now_us.store(now_us, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_us(&self) -> u64 {
        self.now_us.load(Ordering::SeqCst)
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now_us(&self) -> u64 {
        (**self).now_us()
    }
}

impl<C: Clock + ?Sized> Clock for &C {
    fn now_us(&self) -> u64 {
        (**self).now_us()
    }
}

/// Converts a duration to whole microseconds, rounding up so that waiting for the result is
/// never too short, saturating at `u64::MAX`.
pub fn ceil_micros(d: Duration) -> u64 {
    let nanos = d.as_nanos();
    u64::try_from(nanos.div_ceil(1_000)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wall clock, read directly, in µs since the epoch.
    #[allow(clippy::disallowed_methods)] // the reference the clock under test must agree with
    fn wall_us() -> u64 {
        let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        u64::try_from(since.as_micros()).unwrap()
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // a real pause, for a real clock
    fn the_system_clock_follows_the_wall_clock() {
        let clock = SystemClock::new();
        std::thread::sleep(Duration::from_millis(300));
        let (ours, wall) = (clock.now_us(), wall_us());
        // Read back to back: far closer than the 300 ms a clock that stood still would lag.
        assert!(ours.abs_diff(wall) < 100_000, "{ours} vs {wall}");
    }

    /// The folded scaling agrees with the monotonic clock's own calibration to a part in 10^8,
    /// from a microsecond's ticks to a year's.
    #[test]
    fn the_system_clock_scales_ticks_as_its_calibration_does() {
        let clock = SystemClock::new();
        for ticks in [1_u64 << 12, 1 << 24, 1 << 36, 1 << 48, 1 << 56] {
            let ours = clock.ticks_to_us(ticks);
            let calibrated = clock.monotonic.delta_as_nanos(0, ticks) / 1_000;
            assert!(
                ours.abs_diff(calibrated) <= 1 + calibrated / 100_000_000,
                "{ticks} ticks: {ours} µs against {calibrated} µs"
            );
        }
    }

    #[test]
    fn a_manual_clock_is_shared_and_may_step_back() {
        let clock = ManualClock::new(5_000);
        let shared = Arc::new(clock.clone());
        clock.set_us(1_000);
        // Through the impls for references and Arcs, as generic callers see it.
        fn read(clock: impl Clock) -> u64 {
            clock.now_us()
        }
        assert_eq!(read(&clock), 1_000);
        assert_eq!(read(Arc::clone(&shared)), 1_000);
        assert_eq!(shared.now_us(), 1_000);
        clock.advance(Duration::from_micros(1_500));
        assert_eq!(shared.now_us(), 2_500);
        clock.advance_us(u64::MAX);
        assert_eq!(clock.now_us(), u64::MAX);
    }

    #[test]
    fn durations_round_up_to_whole_microseconds() {
        assert_eq!(ceil_micros(Duration::ZERO), 0);
        assert_eq!(ceil_micros(Duration::from_nanos(1)), 1);
        assert_eq!(ceil_micros(Duration::from_nanos(1_000)), 1);
        assert_eq!(ceil_micros(Duration::from_nanos(1_001)), 2);
        assert_eq!(ceil_micros(Duration::from_secs(3)), 3_000_000);
        assert_eq!(ceil_micros(Duration::MAX), u64::MAX);
    }
}
