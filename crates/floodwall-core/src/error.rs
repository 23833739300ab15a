//! Errors of the pure core: an invalid policy, an unparseable period, a cost that can never pass.

use std::time::Duration;

use crate::policy::Algorithm;

/// A policy that cannot be built, with a message that says how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The name is empty, too long, or has characters outside `A-Z a-z 0-9 _ . -`.
    #[error(
        "invalid policy name {name:?}: use 1 to 64 characters from A-Z, a-z, 0-9, '_', '.' and '-'"
    )]
    InvalidName {
        /// The rejected name.
        name: String,
    },
    /// `limit` is zero.
    #[error("limit must be at least 1")]
    ZeroLimit,
    /// `limit` is larger than the exact arithmetic supports.
    #[error("limit {limit} is too large: the most is {max}")]
    LimitTooLarge {
        /// The rejected limit.
        limit: u64,
        /// The largest accepted limit.
        max: u64,
    },
    /// `period` is shorter than one millisecond.
    #[error("period {period:?} is too short: the shortest is 1ms")]
    PeriodTooShort {
        /// The rejected period.
        period: Duration,
    },
    /// `period` is longer than the longest supported.
    #[error("period {period:?} is too long: the longest is 366d")]
    PeriodTooLong {
        /// The rejected period.
        period: Duration,
    },
    /// A calendar-month window that does not divide a year.
    #[error(
        "a calendar period of {months} months is not supported: use 1, 2, 3, 4, 6 or 12 months (1mo, 3mo for quarters, 12mo for years), or a period in days"
    )]
    CalendarMonths {
        /// The rejected number of months.
        months: u32,
    },
    /// `burst` is zero.
    #[error("burst must be at least 1")]
    ZeroBurst,
    /// `burst` was given for an algorithm that has no burst.
    #[error(
        "burst is not supported by {algorithm}: only {} have a burst; remove it or change the algorithm",
        names(Algorithm::has_burst)
    )]
    BurstNotSupported {
        /// The algorithm of the policy.
        algorithm: Algorithm,
    },
    /// `prefetch` was given for an algorithm whose prefetched units could be spent later than counted.
    #[error(
        "prefetch is not supported by {algorithm}: only fixed_window spends prefetched units exactly (a unit is spent in the window that counted it); remove prefetch or use fixed_window"
    )]
    PrefetchNotSupported {
        /// The algorithm of the policy.
        algorithm: Algorithm,
    },
    /// `prefetch` is larger than the limit.
    #[error(
        "prefetch {prefetch} is larger than the limit {limit}: prefetch at most the limit, or a tenth of it to share it among instances"
    )]
    PrefetchTooLarge {
        /// The rejected prefetch.
        prefetch: u64,
        /// The policy's limit.
        limit: u64,
    },
    /// `max_debt` was given for an algorithm that carries no debt: `concurrency` counts units
    /// in flight, which a charge cannot owe; `sliding_log` promises at most `limit` units in
    /// any interval of one period, which a charge past the limit would break.
    #[error(
        "max_debt is not supported by {algorithm}: only {} carry a debt (sliding_log promises at most limit units in any period, concurrency counts requests in flight); remove max_debt or change the algorithm",
        names(Algorithm::carries_debt)
    )]
    DebtNotSupported {
        /// The algorithm of the policy.
        algorithm: Algorithm,
    },
    /// `max_debt` is larger than the policy's capacity.
    #[error(
        "max_debt {max_debt} is larger than the capacity {capacity}: a key may owe at most one capacity, which one period of refill or the next window pays back"
    )]
    DebtTooLarge {
        /// The rejected `max_debt`.
        max_debt: u64,
        /// The policy's capacity (its burst, else its limit).
        capacity: u64,
    },
    /// `capacity × period` in microseconds exceeds what the exact integer
    /// arithmetic (shared with the Redis scripts, whose numbers are doubles) can hold.
    #[error(
        "{algorithm} with capacity {capacity} over {period:?} is too large for exact arithmetic \
         (capacity x period in microseconds must stay below 2^52): shorten the period with a proportional \
         limit, lower the {what}, or use fixed_window or sliding_log for large quotas"
    )]
    TooLargeForExactArithmetic {
        /// The algorithm of the policy.
        algorithm: Algorithm,
        /// The burst (buckets) or limit (windows) that was too large.
        capacity: u64,
        /// The period of the policy.
        period: Duration,
        /// Which field sets the capacity: "burst" or "limit".
        what: &'static str,
    },
}

/// The configuration names of the algorithms that `keep`, comma-separated, "and" before the last
/// of two.
fn names(keep: impl Fn(Algorithm) -> bool) -> String {
    let names: Vec<&str> = Algorithm::ALL
        .into_iter()
        .filter(|&a| keep(a))
        .map(Algorithm::as_str)
        .collect();
    match names.as_slice() {
        [a, b] => format!("{a} and {b}"),
        _ => names.join(", "),
    }
}

/// A period string that does not parse, such as `"10"` or `"1 week"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid period {input:?}: write a whole number followed by a unit, one of ms, s, m, h, d, w (e.g. 500ms, 1s, 1m, 1h, 1d, 1w), or mo for calendar months with fixed_window (1mo)"
)]
pub struct ParsePeriodError {
    /// The rejected text.
    pub input: String,
}

/// A name that is not one of the algorithms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown algorithm {input:?}: expected one of {}", names(|_| true))]
pub struct ParseAlgorithmError {
    /// The rejected text.
    pub input: String,
}

/// A request whose cost the policy can never admit, however long the client waits.
///
/// This is an error, not a denial: no `retry_after` would ever be honest for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "cost {cost} can never be admitted by policy {policy:?}: its capacity is {capacity} per request"
)]
pub struct CostError {
    /// The policy that cannot admit the cost.
    pub policy: String,
    /// The requested cost.
    pub cost: u64,
    /// The most the policy admits at once (its burst, or its limit).
    pub capacity: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_of_algorithms_read_as_a_sentence() {
        let burst = PolicyError::BurstNotSupported {
            algorithm: Algorithm::FixedWindow,
        }
        .to_string();
        assert!(
            burst.contains("only token_bucket and gcra have a burst"),
            "{burst}"
        );
        let unknown = ParseAlgorithmError {
            input: "leaky".to_owned(),
        }
        .to_string();
        assert!(
            unknown.contains("fixed_window, sliding_log, sliding_window, token_bucket, gcra"),
            "{unknown}"
        );
    }
}
