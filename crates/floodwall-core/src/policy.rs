//! What a limit is: an algorithm, a limit per period, an optional burst, a mode.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

pub use crate::algorithm::Algorithm;
use crate::error::PolicyError;

/// The largest `limit` or `burst` a policy accepts.
pub const MAX_LIMIT: u64 = 1 << 40;
/// The largest `limit` of a `sliding_log` or `concurrency` policy, which keeps one entry per
/// admitted unit (or per holder).
pub const MAX_LOG_LIMIT: u64 = 1_000_000;
/// The shortest period: one millisecond.
pub const MIN_PERIOD: Duration = Duration::from_millis(1);
/// The longest period: 366 days.
pub const MAX_PERIOD: Duration = Duration::from_secs(366 * 86_400);
/// `capacity × period_us` must stay below this for the algorithms that multiply them, so that
/// every intermediate value is an integer a double holds exactly (the Redis scripts run on Lua
/// numbers).
pub const EXACT_ARITHMETIC_BOUND: u64 = 1 << 52;

/// Whether a policy may deny requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// Deny requests over the limit (the default).
    #[default]
    Enforce,
    /// Count and report, never deny: for trying a limit out on live traffic.
    Shadow,
}

/// What a check answers when the shared store fails or misses its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OnError {
    /// Fail open: allow the request.
    #[default]
    Allow,
    /// Fail closed: refuse the request as "service unavailable", never as a quota denial.
    Deny,
    /// Decide with an in-process limiter holding the same policy until the store is healthy.
    Local,
}

impl OnError {
    /// The configuration name: `allow`, `deny` or `local`.
    pub const fn as_str(self) -> &'static str {
        match self {
            OnError::Allow => "allow",
            OnError::Deny => "deny",
            OnError::Local => "local",
        }
    }
}

impl FromStr for OnError {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "allow" => Ok(OnError::Allow),
            "deny" => Ok(OnError::Deny),
            "local" => Ok(OnError::Local),
            other => Err(format!(
                "unknown on_error {other:?}: expected one of allow, deny, local"
            )),
        }
    }
}

/// A validated rate limit: which algorithm, how many units per period, how large a burst.
///
/// Construction checks every bound, so a `Policy` in hand is always one the algorithms (and the
/// Redis scripts) compute exactly. Cloning is cheap.
///
/// ```
/// use std::time::Duration;
/// use floodwall_core::{Algorithm, Policy};
///
/// // 10 requests per minute per client, as a sliding window.
/// let per_ip = Policy::new("per-ip", Algorithm::SlidingWindow, 10, Duration::from_secs(60))?;
/// assert_eq!(per_ip.capacity(), 10);
///
/// // An API key may burst to 20, refilled at 2 per second.
/// let api = Policy::new("api", Algorithm::TokenBucket, 2, Duration::from_secs(1))?.with_burst(20)?;
/// assert_eq!(api.capacity(), 20);
///
/// // Windows have no burst.
/// assert!(per_ip.clone().with_burst(5).is_err());
/// # Ok::<(), floodwall_core::PolicyError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Policy {
    name: Arc<str>,
    /// A hash of `name`, the same in every process: for stores that file state by policy.
    name_hash: u64,
    algorithm: Algorithm,
    limit: u64,
    period: Duration,
    burst: Option<u64>,
    mode: Mode,
    on_error: Option<OnError>,
    period_us: u64,
    /// Where the windows of a `fixed_window` fall.
    calendar: Calendar,
    /// Units an instance may reserve from a shared store at once (0: none).
    prefetch: u64,
    /// The most a key may owe past zero; `None`: its capacity.
    max_debt: Option<u64>,
}

/// Where the windows of a `fixed_window` policy fall (all UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Calendar {
    /// At multiples of the period since the Unix epoch (the default, and every other algorithm's).
    #[default]
    Epoch,
    /// Whole weeks from Monday 00:00, as ISO weeks: [`Policy::weekly`].
    Weeks(u32),
    /// Whole calendar months from the first at 00:00, of their real lengths: [`Policy::monthly`].
    Months(u32),
}

/// The lengths of calendar-month windows a policy may have: the divisors of a year, so that
/// every window starts on the same months each year.
pub const CALENDAR_MONTHS: [u32; 6] = [1, 2, 3, 4, 6, 12];

/// The nominal length of a calendar month, as `period()` reports it: 30 days.
pub const NOMINAL_MONTH: Duration = Duration::from_secs(30 * 86_400);

impl Policy {
    /// A policy of `limit` units per `period` under `algorithm`, enforced, with the store's `on_error`.
    ///
    /// # Errors
    ///
    /// [`PolicyError`] when the name is not 1–64 characters of `A-Z a-z 0-9 _ . -`, the limit is 0
    /// or above [`MAX_LIMIT`] (or [`MAX_LOG_LIMIT`] for `sliding_log` and `concurrency`), the period is outside
    /// 1 ms ..= 366 days, or `limit × period_us` reaches [`EXACT_ARITHMETIC_BOUND`] for an
    /// algorithm that multiplies them.
    pub fn new(
        name: impl AsRef<str>,
        algorithm: Algorithm,
        limit: u64,
        period: Duration,
    ) -> Result<Self, PolicyError> {
        let name = name.as_ref();
        if !is_valid_name(name) {
            return Err(PolicyError::InvalidName {
                name: name.to_owned(),
            });
        }
        if limit == 0 {
            return Err(PolicyError::ZeroLimit);
        }
        let max = algorithm.max_limit();
        if limit > max {
            return Err(PolicyError::LimitTooLarge { limit, max });
        }
        if period < MIN_PERIOD {
            return Err(PolicyError::PeriodTooShort { period });
        }
        if period > MAX_PERIOD {
            return Err(PolicyError::PeriodTooLong { period });
        }
        let policy = Policy {
            name: Arc::from(name),
            name_hash: fnv1a(name.as_bytes()),
            algorithm,
            limit,
            period,
            burst: None,
            mode: Mode::Enforce,
            on_error: None,
            // Bounded by MAX_PERIOD, so the cast cannot truncate.
            period_us: period.as_micros() as u64,
            calendar: Calendar::Epoch,
            prefetch: 0,
            max_debt: None,
        };
        policy.check_exact_arithmetic()?;
        Ok(policy)
    }

    /// A `fixed_window` policy of `limit` units per `months` calendar months, UTC: windows start
    /// at 00:00 UTC on the first of a month and last that month's real length (28 to 31 days a
    /// month). `months` divides a year, so windows start on the same months every year: `1`
    /// monthly, `3` quarterly (January, April, July, October), `12` yearly. [`period`](Self::period)
    /// reports 30 days a month.
    ///
    /// ```
    /// use floodwall_core::{Algorithm, Policy};
    ///
    /// let billing = Policy::monthly("monthly-quota", 100_000, 1)?;
    /// assert_eq!(billing.algorithm(), Algorithm::FixedWindow);
    /// assert_eq!(billing.calendar(), floodwall_core::Calendar::Months(1));
    /// assert!(Policy::monthly("q", 10, 5).is_err());
    /// # Ok::<(), floodwall_core::PolicyError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Policy::new`], and [`PolicyError::CalendarMonths`] when `months` is not one of
    /// [`CALENDAR_MONTHS`].
    pub fn monthly(name: impl AsRef<str>, limit: u64, months: u32) -> Result<Self, PolicyError> {
        if !CALENDAR_MONTHS.contains(&months) {
            return Err(PolicyError::CalendarMonths { months });
        }
        let mut policy = Policy::new(name, Algorithm::FixedWindow, limit, NOMINAL_MONTH * months)?;
        policy.calendar = Calendar::Months(months);
        Ok(policy)
    }

    /// A `fixed_window` policy of `limit` units per `weeks` weeks whose windows start on Monday
    /// at 00:00 UTC, as ISO weeks do (a `fixed_window` of 7 days, by contrast, is aligned to the
    /// epoch, a Thursday). Two-week windows start on the Mondays an even number of weeks after
    /// 1970-01-05.
    ///
    /// ```
    /// use floodwall_core::{Calendar, Policy};
    ///
    /// let weekly = Policy::weekly("weekly-quota", 5_000, 1)?;
    /// assert_eq!(weekly.calendar(), Calendar::Weeks(1));
    /// assert_eq!(weekly.period(), std::time::Duration::from_secs(7 * 86_400));
    /// # Ok::<(), floodwall_core::PolicyError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Policy::new`] with a period of `weeks` weeks (at most 52).
    pub fn weekly(name: impl AsRef<str>, limit: u64, weeks: u32) -> Result<Self, PolicyError> {
        let week = Duration::from_secs(7 * 86_400);
        let mut policy = Policy::new(name, Algorithm::FixedWindow, limit, week * weeks)?;
        policy.calendar = Calendar::Weeks(weeks);
        Ok(policy)
    }

    /// The same policy with a burst (bucket size) other than its limit.
    ///
    /// # Errors
    ///
    /// [`PolicyError::BurstNotSupported`] for the window algorithms, [`PolicyError::ZeroBurst`],
    /// [`PolicyError::LimitTooLarge`], or [`PolicyError::TooLargeForExactArithmetic`].
    pub fn with_burst(mut self, burst: u64) -> Result<Self, PolicyError> {
        if !self.algorithm.has_burst() {
            return Err(PolicyError::BurstNotSupported {
                algorithm: self.algorithm,
            });
        }
        if burst == 0 {
            return Err(PolicyError::ZeroBurst);
        }
        if burst > MAX_LIMIT {
            return Err(PolicyError::LimitTooLarge {
                limit: burst,
                max: MAX_LIMIT,
            });
        }
        self.burst = Some(burst);
        self.check_exact_arithmetic()?;
        Ok(self)
    }

    /// The same policy with a prefetch of `units` (0: none): an instance deciding against a shared
    /// store reserves up to `units` of a key in one call and spends them itself, so that a hot
    /// key costs about one store call per `units` decisions. Reserved units are counted in the
    /// store before they are spent, so instances together never admit more than the limit; a
    /// window may admit up to `units` × instances less than its limit, the units reserved but
    /// not spent when it ends.
    ///
    /// # Errors
    ///
    /// [`PolicyError::PrefetchNotSupported`] for any algorithm but `fixed_window`, whose windows
    /// bound how late a unit is spent; [`PolicyError::PrefetchTooLarge`] above the limit.
    pub fn with_prefetch(mut self, units: u64) -> Result<Self, PolicyError> {
        if units > 0 && self.algorithm != Algorithm::FixedWindow {
            return Err(PolicyError::PrefetchNotSupported {
                algorithm: self.algorithm,
            });
        }
        if units > self.limit {
            return Err(PolicyError::PrefetchTooLarge {
                prefetch: units,
                limit: self.limit,
            });
        }
        self.prefetch = units;
        Ok(self)
    }

    /// The same policy with `units` as the most a key may owe past zero after a debit (a
    /// reservation settled above its estimate); what a debit would charge beyond it is
    /// forgiven. At most the capacity, so that a debt is paid back within one period of refill
    /// or by the next window; the capacity by default. `0` forbids debt: a debit then charges
    /// only what is left.
    ///
    /// # Errors
    ///
    /// [`PolicyError::DebtNotSupported`] for an algorithm that carries no debt;
    /// [`PolicyError::DebtTooLarge`] above the capacity.
    pub fn with_max_debt(mut self, units: u64) -> Result<Self, PolicyError> {
        if units > 0 && !self.algorithm.carries_debt() {
            return Err(PolicyError::DebtNotSupported {
                algorithm: self.algorithm,
            });
        }
        if units > self.capacity() {
            return Err(PolicyError::DebtTooLarge {
                max_debt: units,
                capacity: self.capacity(),
            });
        }
        self.max_debt = Some(units);
        Ok(self)
    }

    /// The most a key may owe past zero: see [`Policy::with_max_debt`]. Never above the
    /// capacity; the capacity unless set, for an algorithm that carries debt, else 0.
    #[inline]
    pub fn max_debt(&self) -> u64 {
        let default = match self.algorithm.carries_debt() {
            true => self.capacity(),
            false => 0,
        };
        self.max_debt.unwrap_or(default).min(self.capacity())
    }

    /// The same policy in `mode`.
    #[must_use]
    pub fn with_mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// The same policy with its own answer for store failures, overriding the store's.
    #[must_use]
    pub fn with_on_error(mut self, on_error: OnError) -> Self {
        self.on_error = Some(on_error);
        self
    }

    /// The units an instance reserves at once from a shared store (0: none): see
    /// [`Policy::with_prefetch`].
    #[inline]
    pub fn prefetch(&self) -> u64 {
        self.prefetch
    }

    /// This policy with its limit and burst divided among `instances` processes (rounded up, at
    /// least 1): what each may admit on its own when they cannot share state, so that together
    /// they admit about what the shared policy would.
    #[must_use]
    pub fn share(&self, instances: u64) -> Policy {
        let instances = instances.max(1);
        let mut shared = self.clone();
        shared.limit = self.limit.div_ceil(instances);
        shared.burst = self.burst.map(|b| b.div_ceil(instances));
        shared.max_debt = self.max_debt.map(|d| d.div_ceil(instances));
        // A share is decided in process, where there is nothing to prefetch from.
        shared.prefetch = 0;
        shared
    }

    fn check_exact_arithmetic(&self) -> Result<(), PolicyError> {
        let multiplies = self.algorithm.multiplies_capacity_by_period();
        let product = u128::from(self.capacity()) * u128::from(self.period_us);
        if multiplies && product >= u128::from(EXACT_ARITHMETIC_BOUND) {
            return Err(PolicyError::TooLargeForExactArithmetic {
                algorithm: self.algorithm,
                capacity: self.capacity(),
                period: self.period,
                what: if self.burst.is_some() {
                    "burst"
                } else {
                    "limit"
                },
            });
        }
        Ok(())
    }

    /// The policy's name, as it appears in headers, metrics and storage keys.
    #[inline]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name, as one allocation shared by every clone of this policy: a store may compare
    /// names by address first, and the name stays valid for as long as it is held.
    #[inline]
    pub fn shared_name(&self) -> &Arc<str> {
        &self.name
    }

    /// A 64-bit hash of the name, computed once: the same for policies of the same name, in
    /// every process and version. Not keyed, so not for anything a client can choose.
    #[inline]
    pub fn name_hash(&self) -> u64 {
        self.name_hash
    }

    /// The algorithm.
    #[inline]
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Units admitted per period (for the buckets: the refill rate is `limit / period`).
    #[inline]
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The period.
    #[inline]
    pub fn period(&self) -> Duration {
        self.period
    }

    /// The period in whole microseconds, the unit of every algorithm's arithmetic.
    #[inline]
    pub fn period_us(&self) -> u64 {
        self.period_us
    }

    /// The configured burst, if any (token_bucket and gcra only).
    #[inline]
    pub fn burst(&self) -> Option<u64> {
        self.burst
    }

    /// The most units one request can ever be admitted for: the burst for the buckets (default
    /// `limit`), the limit for the windows. A larger cost is an error, not a denial.
    #[inline]
    pub fn capacity(&self) -> u64 {
        self.burst.unwrap_or(self.limit)
    }

    /// Whether the policy enforces or only reports.
    #[inline]
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The policy's own answer to store failures, if it overrides the store's.
    #[inline]
    pub fn on_error(&self) -> Option<OnError> {
        self.on_error
    }

    /// Where the policy's windows fall: at multiples of the period since the epoch, or on the
    /// calendar ([`Policy::weekly`], [`Policy::monthly`]).
    #[inline]
    pub fn calendar(&self) -> Calendar {
        self.calendar
    }
}

/// 64-bit FNV-1a: short names hash in a few nanoseconds, with no table or dependency.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Policy");
        s.field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .field("limit", &self.limit);
        match self.calendar {
            Calendar::Months(months) => s.field("period", &format_args!("{months}mo")),
            Calendar::Weeks(weeks) => s.field("period", &format_args!("{weeks}w")),
            Calendar::Epoch => s.field("period", &self.period),
        };
        if let Some(burst) = self.burst {
            s.field("burst", &burst);
        }
        if let Some(max_debt) = self.max_debt {
            s.field("max_debt", &max_debt);
        }
        s.field("mode", &self.mode);
        if let Some(on_error) = self.on_error {
            s.field("on_error", &on_error);
        }
        if self.prefetch > 0 {
            s.field("prefetch", &self.prefetch);
        }
        s.finish()
    }
}

/// `name (algorithm, limit per period[, burst N][, shadow])`, the period in the largest unit
/// that writes it exactly, as the configuration would: `per-ip (sliding_window, 10 per 1m)`.
impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}, {} per ", self.name, self.algorithm, self.limit)?;
        match self.calendar {
            Calendar::Months(months) => write!(f, "{months}mo")?,
            Calendar::Weeks(weeks) => write!(f, "{weeks}w")?,
            Calendar::Epoch => {
                let units = [
                    ("d", 86_400_000_000),
                    ("h", 3_600_000_000),
                    ("m", 60_000_000),
                    ("s", 1_000_000),
                    ("ms", 1_000),
                ];
                match units
                    .iter()
                    .find(|(_, us)| self.period_us.is_multiple_of(*us))
                {
                    Some((unit, us)) => write!(f, "{}{unit}", self.period_us / us)?,
                    None => write!(f, "{}us", self.period_us)?,
                }
            }
        }
        if let Some(burst) = self.burst {
            write!(f, ", burst {burst}")?;
        }
        if self.prefetch > 0 {
            write!(f, ", prefetch {}", self.prefetch)?;
        }
        if let Some(max_debt) = self.max_debt {
            write!(f, ", max debt {max_debt}")?;
        }
        if self.mode == Mode::Shadow {
            f.write_str(", shadow")?;
        }
        f.write_str(")")
    }
}

fn is_valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests;
