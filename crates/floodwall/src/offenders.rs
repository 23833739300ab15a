//! The keys denied most in the last minutes, in bounded memory: a Space-Saving summary per
//! minute, the last few kept.
//!
//! Space-Saving keeps `capacity` counters. A key already counted gains the weight; a new key
//! takes a free counter, or else the smallest one, inheriting its count as its possible
//! overcount (`error`). So any key denied more than `total / capacity` times in a minute is
//! always among the counters, and each reported count is at most `error` above the truth. It
//! was chosen over a count-min sketch because it names the keys itself (a count-min sketch
//! needs a separate list of candidates) and its bound holds for every input, a flood of
//! distinct keys included: that flood only churns the smallest counters.
//!
//! Pure: time comes in as microseconds; nothing here reads a clock.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use std::sync::Arc;

use floodwall_core::{Clock, Policy};

/// The longest key kept as it is: longer than any key the service's check API or RLS accept, so
/// that a key reported can be blocked as it is. A longer one is kept as its first bytes and a
/// marker.
pub const MAX_KEY_BYTES: usize = 64 * 1024;

/// The most key bytes one minute's summary keeps: a flood of long keys gives up counters (the
/// smallest first, as a new key does) rather than grow it. With the five minutes kept, one
/// policy's offenders hold at most 1.25 MiB of keys.
pub const MAX_SUMMARY_KEY_BYTES: usize = 256 * 1024;

/// One key among the top offenders over the window.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Offender {
    /// The client key (cut to [`MAX_KEY_BYTES`], then marked with `…`).
    pub key: Vec<u8>,
    /// Denials counted over the window: at least the true number, at most `error` more.
    pub count: u64,
    /// How much of `count` may belong to keys this one displaced.
    pub error: u64,
}

/// One minute's Space-Saving summary.
#[derive(Debug, Clone, Default)]
struct Summary {
    /// Key to (count, error).
    counters: HashMap<Vec<u8>, (u64, u64)>,
    /// The bytes of the keys counted.
    key_bytes: usize,
    /// The largest count given up to make room: the most any key absent now was counted.
    displaced: u64,
}

impl Summary {
    fn record(&mut self, key: &[u8], weight: u64, capacity: usize, key_budget: usize) {
        if let Some((count, _)) = self.counters.get_mut(key) {
            *count += weight;
            return;
        }
        // Give up the smallest counters until a counter and the key's bytes are free: a linear
        // scan each, as capacity is a few dozen. The new key may have been among those given up
        // before, so it starts at the largest count given up, marked as possible overcount.
        while self.counters.len() >= capacity
            || (!self.counters.is_empty() && self.key_bytes + key.len() > key_budget)
        {
            let smallest = self
                .counters
                .iter()
                .min_by_key(|(_, (count, _))| *count)
                .map(|(key, (count, _))| (key.clone(), *count));
            let Some((gone, count)) = smallest else {
                break;
            };
            self.counters.remove(&gone);
            self.key_bytes -= gone.len();
            self.displaced = self.displaced.max(count);
        }
        self.key_bytes += key.len();
        self.counters
            .insert(key.to_vec(), (self.displaced + weight, self.displaced));
    }

    /// The most a key absent from this summary can have been counted here.
    fn floor(&self, capacity: usize) -> u64 {
        if self.counters.len() < capacity {
            return self.displaced;
        }
        self.counters
            .values()
            .map(|(count, _)| *count)
            .min()
            .unwrap_or(0)
            .max(self.displaced)
    }
}

/// The top offenders of one policy over the last few buckets (minutes, in a [`Limiter`]).
///
/// [`Limiter`]: crate::Limiter
#[derive(Debug, Clone)]
pub struct TopOffenders {
    capacity: usize,
    key_budget: usize,
    bucket_us: u64,
    buckets: usize,
    /// (bucket start, summary), oldest first, at most `buckets`.
    summaries: VecDeque<(u64, Summary)>,
}

impl TopOffenders {
    /// Counters for `capacity` keys per bucket of `bucket_us`, over the last `buckets` buckets.
    pub fn new(capacity: usize, bucket_us: u64, buckets: usize) -> Self {
        TopOffenders {
            capacity: capacity.max(1),
            key_budget: MAX_SUMMARY_KEY_BYTES,
            bucket_us: bucket_us.max(1),
            buckets: buckets.max(1),
            summaries: VecDeque::new(),
        }
    }

    /// Counts `weight` denials of `key` at `now_us` (never earlier than the previous call).
    pub fn record(&mut self, now_us: u64, key: &[u8], weight: u64) {
        let start = now_us - now_us % self.bucket_us;
        self.expire(start);
        if self.summaries.back().is_none_or(|(at, _)| *at != start) {
            self.summaries.push_back((start, Summary::default()));
        }
        if let Some((_, summary)) = self.summaries.back_mut() {
            summary.record(&bounded(key), weight, self.capacity, self.key_budget);
        }
    }

    /// The `n` keys counted most over the buckets still in the window at `now_us`, most first
    /// (ties by key). A key's count adds each bucket's count, or that bucket's floor where it
    /// was not counted, so it is never below the truth.
    pub fn top(&mut self, now_us: u64, n: usize) -> Vec<Offender> {
        self.expire(now_us - now_us % self.bucket_us);
        let mut offenders: HashMap<&[u8], (u64, u64)> = HashMap::new();
        for (_, summary) in &self.summaries {
            for key in summary.counters.keys() {
                offenders.entry(key.as_slice()).or_default();
            }
        }
        for (key, (count, error)) in offenders.iter_mut() {
            for (_, summary) in &self.summaries {
                match summary.counters.get(*key) {
                    Some((c, e)) => {
                        *count += c;
                        *error += e;
                    }
                    None => {
                        let floor = summary.floor(self.capacity);
                        *count += floor;
                        *error += floor;
                    }
                }
            }
        }
        let mut ranked: Vec<Offender> = offenders
            .into_iter()
            .map(|(key, (count, error))| Offender {
                key: key.to_vec(),
                count,
                error,
            })
            .collect();
        ranked.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
        ranked.truncate(n);
        ranked
    }

    /// Drops the buckets that ended before the window of the bucket starting at `start`.
    fn expire(&mut self, start: u64) {
        let horizon = start.saturating_sub(self.bucket_us * (self.buckets as u64 - 1));
        while self.summaries.front().is_some_and(|(at, _)| *at < horizon) {
            self.summaries.pop_front();
        }
    }
}

/// The most policies a limiter tracks offenders for; a policy beyond them is not tracked, so
/// a program that invents policy names cannot grow the table.
pub const MAX_TRACKED_POLICIES: usize = 1024;

/// Per policy name, its top offenders: what a [`Limiter`](crate::Limiter) keeps when built with
/// [`track_offenders`](crate::LimiterBuilder::track_offenders).
#[derive(Debug)]
pub(crate) struct OffenderTable {
    capacity: usize,
    by_policy: Mutex<HashMap<String, TopOffenders>>,
    /// The limiter's wall clock, read in minutes: the table's only reading of time.
    clock: Arc<dyn Clock>,
}

/// One bucket is a minute; the window is five of them.
const BUCKET_US: u64 = 60_000_000;
const BUCKETS: usize = 5;

impl OffenderTable {
    pub(crate) fn new(capacity: usize, clock: Arc<dyn Clock>) -> Self {
        OffenderTable {
            capacity,
            by_policy: Mutex::new(HashMap::new()),
            clock,
        }
    }

    /// The window the table reports over, in seconds.
    pub(crate) const WINDOW_SECONDS: u64 = BUCKET_US / 1_000_000 * BUCKETS as u64;

    /// Counts a denial of `key` by `policy`.
    pub(crate) fn record(&self, policy: &Policy, key: &[u8]) {
        let now_us = self.clock.now_us();
        let mut by_policy = self
            .by_policy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(top) = by_policy.get_mut(policy.name()) {
            top.record(now_us, key, 1);
            return;
        }
        if by_policy.len() < MAX_TRACKED_POLICIES {
            let mut top = TopOffenders::new(self.capacity, BUCKET_US, BUCKETS);
            top.record(now_us, key, 1);
            by_policy.insert(policy.name().to_owned(), top);
        }
    }

    /// The `n` keys `policy` denied most in the window, most first.
    pub(crate) fn top(&self, policy: &str, n: usize) -> Vec<Offender> {
        let now_us = self.clock.now_us();
        let mut by_policy = self
            .by_policy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        by_policy
            .get_mut(policy)
            .map(|top| top.top(now_us, n))
            .unwrap_or_default()
    }
}

/// `key` as kept: itself up to [`MAX_KEY_BYTES`], else its first bytes and `…`.
fn bounded(key: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if key.len() <= MAX_KEY_BYTES {
        return std::borrow::Cow::Borrowed(key);
    }
    let mut cut = key[..MAX_KEY_BYTES - 3].to_vec();
    cut.extend_from_slice("…".as_bytes());
    std::borrow::Cow::Owned(cut)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MINUTE: u64 = 60_000_000;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Against exact counts over the same buckets: every reported count is at least the
        /// truth and at most its error above it, and every key denied more than its share
        /// (total / capacity in some bucket) is reported.
        #[test]
        fn counts_bound_the_truth_and_heavy_keys_are_never_missed(
            capacity in 1usize..8,
            tight in proptest::option::of(1usize..40),
            denials in proptest::collection::vec((0u64..20_000_000, 0u8..24, 1u64..4), 1..400),
        ) {
            let mut top = TopOffenders::new(capacity, MINUTE, 3);
            // Keys of 1 to 19 bytes; a tight byte budget gives up counters for long ones.
            let long = |key: u8| vec![key; 1 + usize::from(key % 7) * 3];
            if let Some(budget) = tight {
                top.key_budget = budget;
            }
            let mut exact: Vec<(u64, u8, u64)> = Vec::new();
            let mut now = 1_700_000_000_000_000u64;
            for (advance, key, weight) in denials {
                now += advance;
                top.record(now, &long(key), weight);
                exact.push((now - now % MINUTE, key, weight));
            }
            let start = now - now % MINUTE;
            let horizon = start - 2 * MINUTE;
            let in_window: Vec<_> = exact.iter().filter(|(at, _, _)| *at >= horizon).collect();
            let truth = |key: u8| in_window.iter().filter(|(_, k, _)| *k == key).map(|(_, _, w)| w).sum::<u64>();
            let reported = top.top(now, usize::MAX);
            for offender in &reported {
                let real = truth(offender.key[0]);
                prop_assert!(offender.count >= real, "{:?} under {}", offender, real);
                prop_assert!(offender.count - offender.error <= real, "{:?} over {}", offender, real);
            }
            // With room for `capacity` keys, a key above its share in any bucket of the window
            // was counted there.
            if tight.is_some() {
                return Ok(());
            }
            for bucket in [horizon, horizon + MINUTE, start] {
                let total: u64 = in_window.iter().filter(|(at, _, _)| *at == bucket).map(|(_, _, w)| w).sum();
                for key in 0u8..24 {
                    let in_bucket: u64 = in_window
                        .iter()
                        .filter(|(at, k, _)| *at == bucket && *k == key)
                        .map(|(_, _, w)| w)
                        .sum();
                    if in_bucket * capacity as u64 > total {
                        prop_assert!(reported.iter().any(|o| o.key == long(key)), "key {} missed", key);
                    }
                }
            }
        }
    }

    #[test]
    fn a_flood_of_new_keys_keeps_the_heavy_one_and_bounded_memory() {
        let mut top = TopOffenders::new(16, MINUTE, 5);
        let now = 1_700_000_000_000_000u64;
        for i in 0..100_000u64 {
            top.record(now + i, format!("flood-{i}").as_bytes(), 1);
            if i % 10 == 0 {
                top.record(now + i, b"attacker", 1);
            }
        }
        let reported = top.top(now + 100_000, 3);
        assert_eq!(reported[0].key, b"attacker");
        assert!(reported[0].count >= 10_000);
        let kept: usize = top.summaries.iter().map(|(_, s)| s.counters.len()).sum();
        assert!(kept <= 16);
    }

    #[test]
    fn a_flood_of_long_keys_stays_within_the_byte_budget() {
        let mut top = TopOffenders::new(64, MINUTE, 5);
        let now = 1_700_000_000_000_000u64;
        for i in 0..2_000u64 {
            let mut key = vec![b'k'; 60_000];
            key.extend_from_slice(&i.to_le_bytes());
            top.record(now + i, &key, 1);
            if i % 4 == 0 {
                top.record(now + i, b"attacker", 1);
            }
        }
        let bytes: usize = top.summaries.iter().map(|(_, s)| s.key_bytes).sum();
        assert!(bytes <= MAX_SUMMARY_KEY_BYTES, "{bytes}");
        let reported = top.top(now + 2_000, 1);
        assert_eq!(reported[0].key, b"attacker");
        assert!(reported[0].count >= 500);
    }

    #[test]
    fn old_minutes_leave_the_window_and_long_keys_are_cut() {
        let mut top = TopOffenders::new(4, MINUTE, 2);
        let now = 1_700_000_000_000_000u64 - 1_700_000_000_000_000u64 % MINUTE;
        top.record(now, b"early", 5);
        top.record(now + MINUTE, &[b'x'; 1000], 1);
        top.record(now + MINUTE, &vec![b'y'; MAX_KEY_BYTES + 1], 1);
        let reported = top.top(now + MINUTE, 10);
        assert_eq!(reported.len(), 3);
        assert!(reported.iter().any(|o| o.key == [b'x'; 1000]), "kept whole");
        assert!(reported.iter().all(|o| o.key.len() <= MAX_KEY_BYTES));
        assert!(
            top.top(now + 2 * MINUTE, 10)
                .iter()
                .all(|o| o.key != b"early")
        );
    }
}
