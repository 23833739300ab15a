//! Brute-force reference models of the six algorithms, written as plainly as possible.
//!
//! They share no code with `floodwall-core`'s arithmetic. The windows keep the flat list of every
//! admission and recount it from scratch; the buckets keep a credit counter advanced one
//! microsecond tick at a time. Everything else — `remaining`, `retry_after`, `reset_after` — is
//! found by asking the model's one predicate, "would `cost` be admitted at time `t`?", at
//! candidate costs and times. The models are slow on purpose; keep periods short in tests.
//!
//! Debt (a debit past what is left, up to the policy's `max_debt`): a bucket's credit goes
//! below zero and refill pays it back first; a window's count goes past the limit, and the next
//! window, if adjacent, starts with the excess counted (for `sliding_window`, only the rest
//! decays as the previous window's weight). `sliding_log` and `concurrency` charge only what
//! is left.

use std::time::Duration;

use floodwall_core::{Algorithm, Calendar, CostError, Decision, Policy};

/// A reference model of one policy for one key.
#[derive(Debug, Clone)]
pub struct ReferenceModel {
    policy: Policy,
    /// Windows and concurrency: every admission ever, as (time, units, holder); a released
    /// admission is removed.
    admitted: Vec<(u64, u64, u64)>,
    /// Buckets: credit in units of 1/period_us token (below zero in debt), and the tick it was
    /// counted at.
    credit: i128,
    credit_at: u64,
}

impl ReferenceModel {
    /// A model of a key never seen, as of time `start_us`.
    pub fn new(policy: Policy, start_us: u64) -> Self {
        let full = i128::from(policy.capacity() * policy.period_us());
        ReferenceModel {
            policy,
            admitted: Vec::new(),
            credit: full,
            credit_at: start_us,
        }
    }

    fn is_bucket(&self) -> bool {
        matches!(
            self.policy.algorithm(),
            Algorithm::TokenBucket | Algorithm::Gcra
        )
    }

    fn full(&self) -> i128 {
        i128::from(self.policy.capacity() * self.policy.period_us())
    }

    /// Bucket credit at time `t`, ticking one microsecond at a time from the last count.
    fn credit_at(&self, t: u64) -> i128 {
        let full = self.full();
        let mut credit = self.credit;
        let mut tick = self.credit_at;
        while tick < t && credit < full {
            credit = (credit + i128::from(self.policy.limit())).min(full);
            tick += 1;
        }
        credit
    }

    /// The window of `t` for the window algorithms: calendar or epoch-aligned for
    /// `fixed_window`, epoch-aligned for `sliding_window`.
    fn window_of(&self, t: u64) -> u64 {
        match self.policy.algorithm() {
            Algorithm::FixedWindow => fixed_window_start(&self.policy, t),
            _ => t - t % self.policy.period_us(),
        }
    }

    /// Window algorithms: the units counted in the window starting at `window` (its own and
    /// the debt the window before it carried) and the debt it carries into the next, walking
    /// every window with an admission in order. A window with none of its own carries nothing
    /// further, as a debt is at most the limit.
    fn window_usage(&self, window: u64) -> (u64, u64) {
        let (limit, max_debt) = (self.policy.limit(), self.policy.max_debt());
        let mut starts: Vec<u64> = self
            .admitted
            .iter()
            .map(|(at, _, _)| self.window_of(*at))
            .filter(|&start| start < window)
            .collect();
        starts.sort_unstable();
        starts.dedup();
        let (mut carry, mut previous) = (0, None);
        for start in starts.into_iter().chain([window]) {
            let adjacent = previous.is_some_and(|p| p == self.window_of(start - 1));
            let own = self.units_where(|at| self.window_of(at) == start);
            let usage = own + if adjacent { carry } else { 0 };
            carry = usage.saturating_sub(limit).min(max_debt);
            if start == window {
                return (usage, carry);
            }
            previous = Some(start);
        }
        (0, 0)
    }

    fn units_where(&self, keep: impl Fn(u64) -> bool) -> u64 {
        self.admitted
            .iter()
            .filter(|(at, _, _)| keep(*at))
            .map(|(_, units, _)| units)
            .sum()
    }

    /// The model's one predicate: would a request of `cost` be admitted at time `t`, if nothing
    /// else happened before it?
    pub fn admits(&self, t: u64, cost: u64) -> bool {
        let limit = self.policy.limit();
        let period = self.policy.period_us();
        match self.policy.algorithm() {
            Algorithm::FixedWindow => self.window_usage(self.window_of(t)).0 + cost <= limit,
            // Both count what was admitted within one period before `t`; concurrency also
            // forgets what its holder released.
            Algorithm::SlidingLog | Algorithm::Concurrency => {
                let in_interval = self.units_where(|at| at + period > t && at <= t);
                in_interval + cost <= limit
            }
            Algorithm::SlidingWindow => {
                let window = t - t % period;
                let (current, _) = self.window_usage(window);
                // The window before, less the debt it carried into this one.
                let previous = match window.checked_sub(period) {
                    Some(before) => {
                        let (usage, carried) = self.window_usage(before);
                        usage - carried
                    }
                    None => 0,
                };
                let elapsed = t % period;
                // previous × (1 − elapsed/period) + current + cost ≤ limit, times period.
                u128::from(previous) * u128::from(period - elapsed)
                    + u128::from(current + cost) * u128::from(period)
                    <= u128::from(limit) * u128::from(period)
            }
            Algorithm::TokenBucket | Algorithm::Gcra => {
                self.credit_at(t) >= i128::from(cost * period)
            }
        }
    }

    fn remaining_at(&self, t: u64) -> u64 {
        if self.is_bucket() {
            // Whole tokens in the bucket.
            let tokens = self.credit_at(t).max(0) / i128::from(self.policy.period_us());
            return u64::try_from(tokens).unwrap_or(0);
        }
        (0..=self.policy.capacity())
            .rev()
            .find(|&c| self.admits(t, c))
            .unwrap_or(0)
    }

    /// Buckets: the first tick at or after `from` when the credit reaches `target`, ticking
    /// forward one microsecond at a time.
    fn first_tick_with_credit(&self, from: u64, target: u64) -> u64 {
        let (full, target) = (self.full(), i128::from(target));
        let mut credit = self.credit_at(from);
        let mut t = from;
        while credit < target {
            credit = (credit + i128::from(self.policy.limit())).min(full);
            t += 1;
        }
        t
    }

    /// Units owed past zero at `t`, rounded up.
    fn debt_at(&self, t: u64) -> u64 {
        let period = self.policy.period_us();
        if self.is_bucket() {
            let owed = u64::try_from(-self.credit_at(t).min(0)).unwrap_or(u64::MAX);
            return owed.div_ceil(period);
        }
        match self.policy.algorithm() {
            Algorithm::FixedWindow | Algorithm::SlidingWindow => {
                self.window_usage(self.window_of(t)).1
            }
            _ => 0,
        }
    }

    /// Windows: the first time at or after `from` when `ok(t)` holds. Admissibility only grows
    /// with time when nothing is consumed (counts leave, weights decay), so a binary search over
    /// three periods, by which every window state is at rest, finds it.
    fn first_time(&self, from: u64, ok: impl Fn(u64) -> bool) -> u64 {
        // Calendar months run up to 31 days where the period says 30.
        let horizon = 4 * self.policy.period_us();
        let (mut lo, mut hi) = (from, from + horizon);
        assert!(ok(hi), "the model never admits within {horizon} µs");
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if ok(mid) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        lo
    }

    /// What [`decide`](Self::decide) would answer at `now_us`, recording nothing: for an
    /// admission, `remaining` and `reset_after` are as before consuming. Models a policy that
    /// admitted inside an all-or-nothing check that another policy denied.
    ///
    /// # Errors
    ///
    /// [`CostError`] when `cost` exceeds the policy's capacity.
    pub fn judge(&self, now_us: u64, cost: u64) -> Result<Decision, CostError> {
        self.clone().decide_inner(now_us, cost, false, 0)
    }

    /// Decides a request of `cost` at time `now_us` (never earlier than the previous call) and
    /// records it if admitted. `cost == 0` peeks: it reports on one unit and records nothing.
    ///
    /// # Errors
    ///
    /// [`CostError`] when `cost` exceeds the policy's capacity.
    pub fn decide(&mut self, now_us: u64, cost: u64) -> Result<Decision, CostError> {
        self.decide_inner(now_us, cost, true, 0)
    }

    /// [`decide`](Self::decide), with what is admitted held by `holder` (not 0) until
    /// [`release`](Self::release).
    ///
    /// # Errors
    ///
    /// [`CostError`] when `cost` exceeds the policy's capacity.
    pub fn hold(&mut self, now_us: u64, cost: u64, holder: u64) -> Result<Decision, CostError> {
        self.decide_inner(now_us, cost, true, holder)
    }

    /// Forgets every admission `holder` (not 0) made: its units are back.
    pub fn release(&mut self, holder: u64) {
        if holder != 0 {
            self.admitted.retain(|&(_, _, by)| by != holder);
        }
    }

    /// Gives back `cost` units at `now_us` (never earlier than the previous call): the newest
    /// admissions for the windows, that much credit for the buckets, never past a full quota.
    /// Reports the state afterwards, allowed.
    pub fn refund(&mut self, now_us: u64, cost: u64) -> Decision {
        let period = self.policy.period_us();
        if self.is_bucket() {
            self.credit = (self.credit_at(now_us) + i128::from(cost * period)).min(self.full());
            self.credit_at = now_us;
        } else {
            let mut left = cost;
            while left > 0 {
                let Some(newest) = self.admitted.last_mut() else {
                    break;
                };
                let taken = left.min(newest.1);
                newest.1 -= taken;
                left -= taken;
                if newest.1 == 0 {
                    self.admitted.pop();
                }
            }
        }
        self.given_back_or_charged(now_us)
    }

    /// Charges `cost` units at `now_us` (never earlier than the previous call) whatever is
    /// left: a bucket's credit goes below zero, at most `max_debt` tokens; a window counts past
    /// its limit, at most `max_debt` units; the other algorithms take only what is left.
    /// Reports the state afterwards, allowed.
    pub fn debit(&mut self, now_us: u64, cost: u64) -> Decision {
        let period = self.policy.period_us();
        let max_debt = self.policy.max_debt();
        if self.is_bucket() {
            let floor = -i128::from(max_debt * period);
            let charged = i128::from(cost) * i128::from(period);
            self.credit = (self.credit_at(now_us) - charged).max(floor);
            self.credit_at = now_us;
        } else if self.policy.algorithm().carries_debt() {
            let (usage, _) = self.window_usage(self.window_of(now_us));
            let room = (self.policy.limit() + max_debt).saturating_sub(usage);
            self.record(now_us, cost.min(room));
        } else {
            let left = self.remaining_at(now_us);
            self.record(now_us, cost.min(left));
        }
        self.given_back_or_charged(now_us)
    }

    /// Records `units` admitted at `now_us`, if any.
    fn record(&mut self, now_us: u64, units: u64) {
        if units > 0 {
            self.admitted.push((now_us, units, 0));
        }
    }

    /// The decision after units were given back or charged at `now_us`: allowed, no retry.
    fn given_back_or_charged(&self, now_us: u64) -> Decision {
        let capacity = self.policy.capacity();
        let reset_at = if self.is_bucket() {
            self.first_tick_with_credit(now_us, capacity * self.policy.period_us())
        } else {
            self.first_time(now_us, |t| self.remaining_at(t) == capacity)
        };
        Decision {
            allowed: true,
            capacity,
            remaining: self.remaining_at(now_us),
            reset_after: Duration::from_micros(reset_at - now_us),
            retry_after: None,
            debt: self.debt_at(now_us),
        }
    }

    fn decide_inner(
        &mut self,
        now_us: u64,
        cost: u64,
        record: bool,
        holder: u64,
    ) -> Result<Decision, CostError> {
        let capacity = self.policy.capacity();
        if cost > capacity {
            return Err(CostError {
                policy: self.policy.name().to_owned(),
                cost,
                capacity,
            });
        }
        let need = cost.max(1);
        let allowed = self.admits(now_us, need);
        let period = self.policy.period_us();
        let retry_after = (!allowed).then(|| {
            let at = if self.is_bucket() {
                self.first_tick_with_credit(now_us, need * period)
            } else {
                self.first_time(now_us, |t| self.admits(t, need))
            };
            Duration::from_micros(at - now_us)
        });
        if record && allowed && cost > 0 {
            if self.is_bucket() {
                self.credit = self.credit_at(now_us) - i128::from(cost * period);
                self.credit_at = now_us;
            } else {
                self.admitted.push((now_us, cost, holder));
            }
        }
        let remaining = self.remaining_at(now_us);
        let reset_at = if self.is_bucket() {
            self.first_tick_with_credit(now_us, capacity * period)
        } else {
            self.first_time(now_us, |t| self.remaining_at(t) == capacity)
        };
        Ok(Decision {
            allowed,
            capacity,
            remaining,
            reset_after: Duration::from_micros(reset_at - now_us),
            retry_after,
            debt: self.debt_at(now_us),
        })
    }
}

const DAY_US: u64 = 86_400_000_000;

/// The start of the fixed window holding `t`: a multiple of the period since the epoch; for
/// weekly windows, since the first Monday (1970-01-05, with the epoch starting the window before
/// it); for calendar months, the first of the month, found in a table of month starts built by
/// adding up month lengths.
fn fixed_window_start(policy: &Policy, t: u64) -> u64 {
    let period = policy.period_us();
    match policy.calendar() {
        Calendar::Months(months) => {
            let starts = month_starts();
            let month = starts.partition_point(|&start| start <= t) - 1;
            let months = months as usize; // at most 12
            starts[month - month % months]
        }
        Calendar::Weeks(_) => {
            let monday = 4 * DAY_US;
            if t < monday {
                return 0;
            }
            monday + (t - monday) / period * period
        }
        _ => t - t % period,
    }
}

/// The start of every month from January 1970 to December 2199, in µs since the epoch.
fn month_starts() -> &'static [u64] {
    static STARTS: std::sync::OnceLock<Vec<u64>> = std::sync::OnceLock::new();
    STARTS.get_or_init(|| {
        let leap =
            |y: u64| (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
        let mut starts = Vec::new();
        let mut day = 0;
        for year in 1970..2200 {
            for month in 1..=12 {
                starts.push(day * DAY_US);
                day += match month {
                    2 if leap(year) => 29,
                    2 => 28,
                    4 | 6 | 9 | 11 => 30,
                    _ => 31,
                };
            }
        }
        starts
    })
}
