//! Shares of one (policy, client key) among the proxies that enforce it themselves (Envoy's
//! rate-limit-quota filter): each reports the requests it saw, each is assigned a token bucket,
//! and the buckets assigned together never exceed the policy.
//!
//! The guarantee, at every instant, over the shares that have not expired:
//! `Σ per_period ≤ limit` and `Σ max ≤ burst`. It holds because a reporter is granted only what
//! the others do not hold now, not what a fair division says it should have: a share that must
//! shrink shrinks when its holder next reports (or expires), and only then can another grow.
//!
//! What a reporter should have (its target) is a max-min fair division of the pool by demand:
//! - the pool is the limit less a reserve (an eighth), so that a reporter seen for the first
//!   time is granted something at once, whatever the others hold;
//! - each reporter wants its demand (requests per period, from its last report), and at least a
//!   floor (a quarter of an even split), so that an idle one can still serve a few requests
//!   before it reports again;
//! - wants that fit are met; the rest split what is left evenly (the remainder to the lowest
//!   ids); when every want is met, the surplus is split evenly too, so that a reporter can absorb
//!   growth between reports.
//!
//! Nothing here reads a clock: `now_us` comes in, as everywhere in the core.

use crate::{Algorithm, EXACT_ARITHMETIC_BOUND, Policy};

/// The most reporters one (policy, key) tracks; a reporter beyond it is granted nothing (its
/// requests are denied by the proxy) until a share expires. Bounds the state a flood of proxies
/// can create.
pub const MAX_REPORTERS: usize = 256;

/// What is shared: `limit` units per `period_us`, at most `burst` held at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// Units per period, shared.
    pub limit: u64,
    /// Units that may be held at once, shared.
    pub burst: u64,
    /// The period, in microseconds.
    pub period_us: u64,
}

/// Why a policy cannot be shared among proxies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuotaError {
    /// `concurrency` counts requests in flight, which a proxy's token bucket cannot.
    #[error(
        "policy {policy:?} is an in-flight limit (concurrency): a proxy's token bucket counts requests per period, not requests in flight; share a rate policy instead"
    )]
    InFlight {
        /// The policy's name.
        policy: String,
    },
    /// `limit × burst` past what the Redis scripts compute exactly (2^52).
    #[error(
        "policy {policy:?} is too large to share among proxies: limit × burst must stay below 2^52 (a limit of 67 million per period with burst = limit)"
    )]
    TooLarge {
        /// The policy's name.
        policy: String,
    },
}

impl Capacity {
    /// The capacity of `policy` as a token bucket: `limit` per period with its burst (the limit
    /// for the window algorithms, so that a proxy's bucket, like a fixed window, can admit up to
    /// twice the limit across the turn of a period).
    ///
    /// # Errors
    ///
    /// [`QuotaError::InFlight`] for `concurrency`; [`QuotaError::TooLarge`] when `limit ×
    /// burst` reaches [`EXACT_ARITHMETIC_BOUND`] (a bucket's size is its part of the burst,
    /// `burst × rate ÷ limit`, computed exactly in the Redis scripts too).
    pub fn of(policy: &Policy) -> Result<Capacity, QuotaError> {
        if policy.algorithm() == Algorithm::Concurrency {
            return Err(QuotaError::InFlight {
                policy: policy.name().to_owned(),
            });
        }
        if u128::from(policy.limit()) * u128::from(policy.capacity())
            >= u128::from(EXACT_ARITHMETIC_BOUND)
        {
            return Err(QuotaError::TooLarge {
                policy: policy.name().to_owned(),
            });
        }
        Ok(Capacity {
            limit: policy.limit(),
            burst: policy.capacity(),
            period_us: policy.period_us(),
        })
    }

    /// The part of the limit targets divide among the reporters known; the rest is kept for
    /// newcomers.
    fn pool(self) -> u64 {
        self.limit - self.limit / 8
    }
}

/// A reporter: one proxy (an Envoy's stream), by a stable id.
pub type ReporterId = u64;

/// One report: the requests a proxy saw for the bucket (admitted and denied) over `elapsed_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Requests seen.
    pub requests: u64,
    /// Over how long, in microseconds (0 is read as 1).
    pub elapsed_us: u64,
}

/// What a reporter may admit until `expires_us`: `per_period` units per period, at most `max`
/// at once. A share of 0 admits nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Share {
    /// Units per period.
    pub per_period: u64,
    /// Units held at most (the bucket's size).
    pub max: u64,
    /// When the share lapses unless renewed, in microseconds since the epoch.
    pub expires_us: u64,
}

/// One reporter's standing: its demand and its share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reporter {
    /// Who.
    pub id: ReporterId,
    /// Requests per period, from its last report.
    pub demand: u64,
    /// What it holds.
    pub share: Share,
}

/// The shares of one (policy, key): every reporter whose share has not expired, by id.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Quota {
    reporters: Vec<Reporter>,
}

impl Quota {
    /// No reporter yet.
    pub fn new() -> Self {
        Quota::default()
    }

    /// A quota of these reporters (as stored), sorted by id; duplicates keep the first.
    pub fn from_reporters(mut reporters: Vec<Reporter>) -> Self {
        reporters.sort_by_key(|r| r.id);
        reporters.dedup_by_key(|r| r.id);
        reporters.truncate(MAX_REPORTERS);
        Quota { reporters }
    }

    /// The reporters, by id.
    pub fn reporters(&self) -> &[Reporter] {
        &self.reporters
    }

    /// Forgets the shares that have expired at `now_us`.
    pub fn expire(&mut self, now_us: u64) {
        self.reporters.retain(|r| r.share.expires_us > now_us);
    }

    /// When the last share lapses: the state can be dropped then.
    pub fn expires_us(&self) -> u64 {
        self.reporters
            .iter()
            .map(|r| r.share.expires_us)
            .max()
            .unwrap_or(0)
    }

    /// Takes `id`'s report at `now_us` and grants it a share that lapses `ttl_us` later: the
    /// share it should have ([the module's rule](self)), less whatever of it the others hold
    /// now. A reporter beyond [`MAX_REPORTERS`] is granted nothing and not remembered.
    pub fn report(
        &mut self,
        id: ReporterId,
        usage: Usage,
        now_us: u64,
        capacity: Capacity,
        ttl_us: u64,
    ) -> Share {
        self.expire(now_us);
        let demand = demand(usage, capacity);
        let at = match self.reporters.binary_search_by_key(&id, |r| r.id) {
            Ok(at) => {
                self.reporters[at].demand = demand;
                at
            }
            Err(_) if self.reporters.len() >= MAX_REPORTERS => return Share::default(),
            Err(at) => {
                self.reporters.insert(
                    at,
                    Reporter {
                        id,
                        demand,
                        share: Share::default(),
                    },
                );
                at
            }
        };
        let wants: Vec<u64> = self.reporters.iter().map(|r| r.demand).collect();
        let targets = targets(capacity, &wants);
        let others = |field: fn(&Share) -> u64| -> u64 {
            self.reporters
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != at)
                .map(|(_, r)| field(&r.share))
                .sum()
        };
        let free_rate = capacity.limit.saturating_sub(others(|s| s.per_period));
        let free_burst = capacity.burst.saturating_sub(others(|s| s.max));
        let per_period = targets[at].min(free_rate);
        // The bucket's size follows its rate's part of the limit; at least one unit, or a
        // bucket that can never hold a token would admit nothing at all.
        let max = if per_period == 0 {
            0
        } else {
            proportion(capacity.burst, per_period, capacity.limit)
                .max(1)
                .min(free_burst)
        };
        let per_period = if max == 0 { 0 } else { per_period };
        let share = Share {
            per_period,
            max,
            expires_us: now_us.saturating_add(ttl_us),
        };
        self.reporters[at].share = share;
        share
    }
}

/// Requests per period that `usage` shows, at most the limit.
pub fn demand(usage: Usage, capacity: Capacity) -> u64 {
    let per_period = u128::from(usage.requests) * u128::from(capacity.period_us)
        / u128::from(usage.elapsed_us.max(1));
    u64::try_from(per_period)
        .unwrap_or(u64::MAX)
        .min(capacity.limit)
}

/// `value × part / whole`, rounded down, without overflow (`whole` > 0).
fn proportion(value: u64, part: u64, whole: u64) -> u64 {
    let scaled = u128::from(value) * u128::from(part) / u128::from(whole.max(1));
    u64::try_from(scaled).unwrap_or(u64::MAX)
}

/// What each reporter should have, in the order of `wants`: a max-min fair division of the pool
/// by want (each at least the floor), then the surplus split evenly.
pub fn targets(capacity: Capacity, wants: &[u64]) -> Vec<u64> {
    let n = wants.len() as u64;
    if n == 0 {
        return Vec::new();
    }
    let pool = capacity.pool();
    let floor = pool / (4 * n);
    let wants: Vec<u64> = wants.iter().map(|&w| w.max(floor)).collect();
    let mut order: Vec<usize> = (0..wants.len()).collect();
    order.sort_by_key(|&i| (wants[i], i));
    let mut alloc = vec![0; wants.len()];
    let mut remaining = pool;
    let mut left = n;
    let mut met = 0;
    for &i in &order {
        if wants[i] > remaining / left {
            break;
        }
        alloc[i] = wants[i];
        remaining -= wants[i];
        left -= 1;
        met += 1;
    }
    let unmet = &order[met..];
    if !unmet.is_empty() {
        split_evenly(&mut alloc, unmet, remaining);
    } else {
        let everyone: Vec<usize> = (0..wants.len()).collect();
        split_evenly(&mut alloc, &everyone, remaining);
    }
    alloc
}

/// Adds `amount` to the reporters at `among`, evenly, the remainder one each to the lowest
/// positions (the lowest ids).
fn split_evenly(alloc: &mut [u64], among: &[usize], amount: u64) {
    let n = among.len() as u64;
    let (each, extra) = (amount / n, amount % n);
    let mut by_position = among.to_vec();
    by_position.sort_unstable();
    for (k, &i) in by_position.iter().enumerate() {
        alloc[i] += each + u64::from((k as u64) < extra);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Capacity = Capacity {
        limit: 800,
        burst: 800,
        period_us: 60_000_000,
    };
    const TTL: u64 = 10_000_000;

    fn usage(requests: u64) -> Usage {
        Usage {
            requests,
            elapsed_us: 60_000_000,
        }
    }

    #[test]
    fn a_lone_reporter_gets_the_pool_and_a_newcomer_the_reserve_at_once() {
        let mut quota = Quota::new();
        let first = quota.report(1, usage(10_000), 0, MINUTE, TTL);
        assert_eq!(first.per_period, 700, "the limit less an eighth");
        let second = quota.report(2, usage(10_000), 1, MINUTE, TTL);
        assert_eq!(
            second.per_period, 100,
            "the reserve, while the first holds the pool"
        );
        // The first shrinks to its half when it reports; then the second grows to its own.
        assert_eq!(
            quota.report(1, usage(10_000), 2, MINUTE, TTL).per_period,
            350
        );
        assert_eq!(
            quota.report(2, usage(10_000), 3, MINUTE, TTL).per_period,
            350
        );
    }

    #[test]
    fn an_idle_reporters_share_flows_to_a_busy_one_and_a_silent_one_lapses() {
        let mut quota = Quota::new();
        quota.report(1, usage(10_000), 0, MINUTE, TTL);
        quota.report(2, usage(10_000), 0, MINUTE, TTL);
        quota.report(1, usage(10_000), 1, MINUTE, TTL);
        // Reporter 2 goes idle: it keeps the floor, the busy one takes the rest.
        let idle = quota.report(2, usage(0), 2, MINUTE, TTL);
        assert_eq!(
            idle.per_period, 87,
            "a quarter of an even split of the pool"
        );
        assert_eq!(
            quota.report(1, usage(10_000), 3, MINUTE, TTL).per_period,
            613
        );
        // Reporter 2 stops reporting: after the TTL the whole pool is the busy one's.
        let later = quota.report(1, usage(10_000), TTL + 3, MINUTE, TTL);
        assert_eq!(later.per_period, 700);
        assert_eq!(quota.reporters().len(), 1);
    }

    #[test]
    fn the_bucket_size_follows_the_rate_and_never_sums_past_the_burst() {
        let capacity = Capacity {
            limit: 10,
            burst: 3,
            period_us: 1_000_000,
        };
        let mut quota = Quota::new();
        let mut held = 0;
        for id in 0..6 {
            let share = quota.report(id, usage(1_000), 0, capacity, TTL);
            held += share.max;
            assert!(share.max > 0 || share.per_period == 0, "{share:?}");
        }
        assert!(held <= 3, "{held}");
    }

    #[test]
    fn concurrency_cannot_be_shared() {
        let policy = Policy::new(
            "slots",
            Algorithm::Concurrency,
            5,
            std::time::Duration::from_secs(60),
        )
        .unwrap();
        let error = Capacity::of(&policy).unwrap_err().to_string();
        assert!(error.contains("in-flight"), "{error}");
    }

    #[test]
    fn past_the_bound_a_reporter_is_granted_nothing_and_not_remembered() {
        let mut quota = Quota::new();
        for id in 0..MAX_REPORTERS as u64 {
            quota.report(id, usage(1), 0, MINUTE, TTL);
        }
        let share = quota.report(u64::MAX, usage(1), 0, MINUTE, TTL);
        assert_eq!(share, Share::default());
        assert_eq!(quota.reporters().len(), MAX_REPORTERS);
    }
}
