//! Circuit breakers: a dead or hanging Redis costs one deadline per probe interval, not one per
//! request.
//!
//! There is one breaker per group of 256 hash slots (one group on a single node), so on a cluster
//! the failure of one master opens only the groups of slots it served.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::StoreError;

/// Hash slots per breaker group; 16 384 slots make 64 groups.
const SLOTS_PER_GROUP: u16 = 256;

/// What a breaker lets a call do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Healthy: call.
    Closed,
    /// Open, and this call is the one probe of the interval: call, and report how it went.
    Probe,
    /// Open: fail fast.
    Open,
}

#[derive(Debug, Default)]
struct Breaker {
    consecutive_failures: AtomicU32,
    /// Microseconds after the breakers' epoch until which the breaker stays open.
    open_until_us: AtomicU64,
    probing: AtomicBool,
}

/// The breakers of one store.
#[derive(Debug)]
pub(crate) struct Breakers {
    groups: Box<[Breaker]>,
    threshold: u32,
    probe_interval: Duration,
    epoch: Instant,
}

impl Breakers {
    /// Breakers that open after `threshold` consecutive failures and let one probe through every
    /// `probe_interval`; `cluster` splits them by slot group.
    pub(crate) fn new(cluster: bool, threshold: u32, probe_interval: Duration) -> Self {
        let groups = if cluster { 16_384 / SLOTS_PER_GROUP } else { 1 };
        Breakers {
            groups: (0..groups).map(|_| Breaker::default()).collect(),
            threshold: threshold.max(1),
            probe_interval,
            epoch: Instant::now(),
        }
    }

    /// The group of a hash slot.
    pub(crate) fn group(&self, slot: u16) -> usize {
        usize::from(slot / SLOTS_PER_GROUP) % self.groups.len()
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// How many groups are open (failing fast or probing), and how many there are.
    pub(crate) fn open_groups(&self) -> (usize, usize) {
        let open = self
            .groups
            .iter()
            .filter(|b| b.consecutive_failures.load(Ordering::Acquire) >= self.threshold)
            .count();
        (open, self.groups.len())
    }

    /// Whether `group` is closed (healthy): calls go ahead without probing.
    pub(crate) fn is_closed(&self, group: usize) -> bool {
        self.groups[group]
            .consecutive_failures
            .load(Ordering::Acquire)
            < self.threshold
    }

    /// Whether a call to `group` may go ahead.
    pub(crate) fn admit(&self, group: usize) -> Admission {
        let breaker = &self.groups[group];
        if breaker.consecutive_failures.load(Ordering::Acquire) < self.threshold {
            return Admission::Closed;
        }
        if self.now_us() < breaker.open_until_us.load(Ordering::Acquire) {
            return Admission::Open;
        }
        // The interval passed: exactly one caller probes.
        match breaker
            .probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Admission::Probe,
            Err(_) => Admission::Open,
        }
    }

    /// [`Breakers::admit`], with an open breaker as the error its caller answers.
    pub(crate) fn enter(&self, group: usize) -> Result<Admission, StoreError> {
        match self.admit(group) {
            Admission::Open => Err(self.circuit_open()),
            admission => Ok(admission),
        }
    }

    /// The error of a call an open breaker turned away.
    pub(crate) fn circuit_open(&self) -> StoreError {
        StoreError::CircuitOpen {
            probe_interval: self.probe_interval,
        }
    }

    /// Records how an admitted call to `group` went, by its outcome: a malformed reply still
    /// proves the store reachable; a timeout or a failed connection does not.
    pub(crate) fn record_outcome<T>(
        &self,
        group: usize,
        admission: Admission,
        outcome: &Result<T, StoreError>,
    ) {
        // Replicas that do not confirm in time cost every call its whole deadline, as a
        // hanging master would.
        let healthy = !matches!(
            outcome,
            Err(StoreError::Timeout { .. }
                | StoreError::Redis { .. }
                | StoreError::NotReplicated { .. })
        );
        self.record(group, admission, healthy);
    }

    /// Records how an admitted call to `group` went.
    pub(crate) fn record(&self, group: usize, admission: Admission, healthy: bool) {
        let breaker = &self.groups[group];
        if healthy {
            breaker.consecutive_failures.store(0, Ordering::Release);
        } else {
            let failures = breaker.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
            if failures >= self.threshold {
                let until = self.now_us().saturating_add(
                    u64::try_from(self.probe_interval.as_micros()).unwrap_or(u64::MAX),
                );
                breaker.open_until_us.store(until, Ordering::Release);
            }
        }
        if admission == Admission::Probe {
            breaker.probing.store(false, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_the_threshold_and_probes_once_per_interval() {
        let breakers = Breakers::new(false, 3, Duration::from_millis(250));
        for _ in 0..3 {
            assert_eq!(breakers.admit(0), Admission::Closed);
            breakers.record(0, Admission::Closed, false);
        }
        assert_eq!(breakers.admit(0), Admission::Open);
        tokio::time::advance(Duration::from_millis(250)).await;
        assert_eq!(breakers.admit(0), Admission::Probe);
        assert_eq!(breakers.admit(0), Admission::Open, "one probe at a time");
        breakers.record(0, Admission::Probe, false);
        assert_eq!(breakers.admit(0), Admission::Open, "a failed probe reopens");
        tokio::time::advance(Duration::from_millis(250)).await;
        assert_eq!(breakers.admit(0), Admission::Probe);
        breakers.record(0, Admission::Probe, true);
        assert_eq!(breakers.admit(0), Admission::Closed);
    }

    #[test]
    fn cluster_groups_are_independent() {
        let breakers = Breakers::new(true, 1, Duration::from_secs(60));
        let (a, b) = (breakers.group(0), breakers.group(16_383));
        assert_ne!(a, b);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            breakers.record(a, Admission::Closed, false);
            assert_eq!(breakers.admit(a), Admission::Open);
            assert_eq!(breakers.admit(b), Admission::Closed);
        });
    }
}
