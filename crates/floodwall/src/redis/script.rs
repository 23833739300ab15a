//! The scripts, assembled from `lua/`, and the call that runs one.
//!
//! Constant texts: one per algorithm for a single policy (the common call), one that decides
//! any mix of (policy, key) pairs all-or-nothing, one that refunds and one that debits. Redis
//! therefore caches a fixed number of scripts whatever the keys; no script text is ever built
//! from input. All take the same KEYS and ARGV and give the same reply shape.

use std::sync::LazyLock;

use floodwall_core::{Algorithm, Calendar, Holder, Mode, Policy};
use smallvec::SmallVec;

use crate::store::Check;

/// `#!lua` (Redis 7): a script is refused up front when Redis is out of memory, never
/// half-written, and may touch declared keys only.
macro_rules! shebang {
    () => {
        "#!lua\n"
    };
}

/// A script of one algorithm: the helpers, that module's functions and the straight-line
/// driver `$driver` (`single.lua` for one decision, `batch.lua` for a batch of them). The script
/// body runs anew on every call and each function in it is a closure built per call, so leaving
/// the other modules out is most of its speed.
macro_rules! one_algorithm {
    ($name:ident, $driver:literal) => {
        concat!(
            shebang!(),
            "local ALGORITHM = '",
            stringify!($name),
            "'\n",
            include_str!("../../lua/prelude.lua"),
            include_str!(concat!("../../lua/", stringify!($name), ".lua")),
            include_str!(concat!("../../lua/", $driver)),
        )
    };
}

/// One algorithm module wrapped in a constructor returning its functions, for the multi-policy
/// scripts: a call builds only the modules its policies use.
macro_rules! module {
    ($name:ident) => {
        concat!(
            "local function ",
            stringify!($name),
            "_module()\n",
            include_str!(concat!("../../lua/", stringify!($name), ".lua")),
            "return { load = load, remaining = remaining, wait = wait, consume = consume, ",
            "refund = refund, debit = debit, debt = debt, reset_after = reset_after, ",
            "store = store }\nend\n",
        )
    };
}

/// The texts of every script, from the algorithm registry: the single-policy ones in
/// [`Algorithm::ALL`] order, then [`DECIDE`], then [`REFUND`], then the batch ones from
/// [`BATCH`] in [`Algorithm::ALL`] order, then [`PREFETCH`], then [`RELEASE`], then [`QUOTA`],
/// then [`DEBIT`].
macro_rules! sources {
    ([] $($(#[$doc:meta])* $variant:ident $module:ident,)*) => {
        /// The text every multi-policy script starts with: the helpers, every module's
        /// constructor, the table naming them, and the builder that uses it.
        macro_rules! modules {
            () => {
                concat!(
                    shebang!(),
                    include_str!("../../lua/prelude.lua"),
                    $(module!($module),)*
                    "local constructors = { ",
                    $(stringify!($module), " = ", stringify!($module), "_module, ",)*
                    "}\n",
                    include_str!("../../lua/modules.lua"),
                )
            };
        }
        pub(crate) const SOURCES: [&str; 2 * Algorithm::ALL.len() + 6] = [
            $(one_algorithm!($module, "single.lua"),)*
            concat!(modules!(), include_str!("../../lua/decide.lua")),
            concat!(modules!(), "local ADJUSTMENT = 'refund'\n", include_str!("../../lua/adjust.lua")),
            $(one_algorithm!($module, "batch.lua"),)*
            // Prefetches are of fixed windows only: a window bounds how late a unit is spent.
            one_algorithm!(fixed_window, "prefetch.lua"),
            concat!(shebang!(), include_str!("../../lua/prelude.lua"), include_str!("../../lua/release.lua")),
            concat!(shebang!(), include_str!("../../lua/prelude.lua"), include_str!("../../lua/quota.lua")),
            concat!(modules!(), "local ADJUSTMENT = 'debit'\n", include_str!("../../lua/adjust.lua")),
        ];
    };
}

floodwall_core::for_each_algorithm!([sources]);

/// The multi-policy decision script's index in [`SOURCES`].
const DECIDE: usize = Algorithm::ALL.len();

/// The refund script's index in [`SOURCES`].
const REFUND: usize = DECIDE + 1;

/// The first batch script's index in [`SOURCES`].
const BATCH: usize = REFUND + 1;

/// The prefetch script's index in [`SOURCES`].
const PREFETCH: usize = BATCH + Algorithm::ALL.len();

/// The release script's index in [`SOURCES`].
const RELEASE: usize = PREFETCH + 1;

/// The quota script's index in [`SOURCES`].
const QUOTA: usize = RELEASE + 1;

/// The debit script's index in [`SOURCES`].
const DEBIT: usize = QUOTA + 1;

/// Each script's SHA-1, as EVALSHA wants it.
static SHA1: LazyLock<[String; SOURCES.len()]> =
    LazyLock::new(|| SOURCES.map(|source| ::redis::Script::new(source).get_hash().to_owned()));

/// What a call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    /// Decide (and consume when admitted).
    Decide,
    /// Give back.
    Refund,
    /// Charge whatever is left, into debt.
    Debit,
}

/// The script for `operation` on `policies`: for a decision on one policy, its algorithm's own.
fn script_for(operation: Operation, policies: &[&Policy]) -> usize {
    match (operation, policies) {
        (Operation::Refund, _) => REFUND,
        (Operation::Debit, _) => DEBIT,
        (Operation::Decide, [policy]) => policy.algorithm().index(),
        (Operation::Decide, _) => DECIDE,
    }
}

/// What the pairs of one script call ask for: one cost for all, or one each (a weighted check).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Costs {
    Same(u64),
    Each(SmallVec<[u64; 2]>),
}

impl Costs {
    /// The costs of `check`'s pairs.
    pub(crate) fn of(check: &Check<'_>) -> Costs {
        match check.costs() {
            Some(each) => Costs::Each(each.iter().copied().collect()),
            None => Costs::Same(check.cost()),
        }
    }

    /// The costs of the pairs at `positions`.
    pub(crate) fn at(&self, positions: &[usize]) -> Costs {
        match self {
            Costs::Same(cost) => Costs::Same(*cost),
            Costs::Each(each) => Costs::Each(positions.iter().map(|&i| each[i]).collect()),
        }
    }

    /// Whether any pair would consume.
    pub(crate) fn consumes(&self) -> bool {
        match self {
            Costs::Same(cost) => *cost > 0,
            Costs::Each(each) => each.iter().any(|c| *c > 0),
        }
    }
}

/// Builds `EVALSHA` (or, after NOSCRIPT, `EVAL`) of the script for `operation` on `policies`,
/// whose state keys are `keys`.
pub(crate) fn command(
    operation: Operation,
    with_source: bool,
    keys: &[String],
    now_us: Option<u64>,
    costs: &Costs,
    token: &str,
    policies: &[&Policy],
) -> ::redis::Cmd {
    let mut cmd = invocation(script_for(operation, policies), with_source);
    cmd.arg(keys.len()).arg(keys);
    now_arg(&mut cmd, now_us);
    // One cost for all in ARGV[2]; a weighted check appends each pair's after the policies.
    let (cost, each) = match costs {
        Costs::Same(cost) => (*cost, None),
        Costs::Each(each) if each.len() == 1 => (each[0], None),
        Costs::Each(each) => (each.iter().copied().max().unwrap_or(0), Some(each)),
    };
    cmd.arg(cost).arg(token);
    for policy in policies {
        cmd.arg(policy.algorithm().as_str());
        policy_args(&mut cmd, policy);
    }
    if let Some(each) = each {
        cmd.arg(&each[..]);
    }
    cmd
}

/// Builds `EVALSHA` (or, after NOSCRIPT, `EVAL`) of the batch script of `algorithm`: one
/// decision per entry of `decisions` (its state key, policy and cost), all of that algorithm.
pub(crate) fn batch_command<'a>(
    algorithm: Algorithm,
    with_source: bool,
    now_us: Option<u64>,
    token: &str,
    decisions: impl Iterator<Item = (&'a str, &'a Policy, u64)> + Clone,
) -> ::redis::Cmd {
    let mut cmd = invocation(BATCH + algorithm.index(), with_source);
    cmd.arg(decisions.clone().count());
    for (key, _, _) in decisions.clone() {
        cmd.arg(key);
    }
    now_arg(&mut cmd, now_us);
    cmd.arg(token).arg(algorithm.as_str());
    // Each policy once, however many decisions use it: the script reads fewer arguments, and
    // this side formats fewer.
    let mut policies: SmallVec<[&Policy; 2]> = SmallVec::new();
    let mut used_by: SmallVec<[(u64, usize); 32]> = SmallVec::new();
    for (_, policy, cost) in decisions {
        let index = match policies.iter().position(|p| same_args(p, policy)) {
            Some(index) => index,
            None => {
                policies.push(policy);
                policies.len() - 1
            }
        };
        used_by.push((cost, index + 1));
    }
    cmd.arg(policies.len());
    for policy in &policies {
        policy_args(&mut cmd, policy);
    }
    for (cost, policy) in used_by {
        cmd.arg(cost).arg(policy);
    }
    cmd
}

/// Whether two policies give the scripts the same numbers, so one may stand for both.
fn same_args(a: &Policy, b: &Policy) -> bool {
    std::ptr::eq(a, b)
        || (a.limit() == b.limit()
            && period_arg(a) == period_arg(b)
            && a.capacity() == b.capacity()
            && a.mode() == b.mode()
            && a.max_debt() == b.max_debt())
}

/// What a prefetch call does with units of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PrefetchMove {
    /// Reserve up to `most` units, and none unless at least `fewest`.
    Take { most: u64, fewest: u64 },
    /// Give back `units` counted in the window that starts at `window_start_us` (Redis time).
    Give { units: u64, window_start_us: u64 },
}

/// Builds `EVALSHA` (or, after NOSCRIPT, `EVAL`) of the prefetch script: `movement` on the state
/// `key` of `policy`, a `fixed_window`.
pub(crate) fn prefetch_command(
    with_source: bool,
    key: &str,
    now_us: Option<u64>,
    policy: &Policy,
    movement: PrefetchMove,
) -> ::redis::Cmd {
    let mut cmd = invocation(PREFETCH, with_source);
    cmd.arg(1).arg(key);
    now_arg(&mut cmd, now_us);
    let (operation, units, bound) = match movement {
        PrefetchMove::Take { most, fewest } => ("take", most, fewest),
        PrefetchMove::Give {
            units,
            window_start_us,
        } => ("give", units, window_start_us),
    };
    cmd.arg(operation)
        .arg(policy.limit())
        .arg(period_arg(policy))
        .arg(units)
        .arg(bound)
        .arg(policy.max_debt());
    cmd
}

/// Builds `EVALSHA` (or, after NOSCRIPT, `EVAL`) of the release script: for each entry of
/// `pairs`, the state key of a `concurrency` pair, the member prefix its decision used and its
/// cost.
pub(crate) fn release_command<'a>(
    with_source: bool,
    now_us: Option<u64>,
    pairs: impl Iterator<Item = (&'a str, &'a str, u64)> + Clone,
) -> ::redis::Cmd {
    let mut cmd = invocation(RELEASE, with_source);
    cmd.arg(pairs.clone().count());
    for (key, _, _) in pairs.clone() {
        cmd.arg(key);
    }
    now_arg(&mut cmd, now_us);
    for (_, prefix, cost) in pairs {
        cmd.arg(prefix).arg(cost);
    }
    cmd
}

/// The quota script's call: reporter `reporter`'s `demand` on the shares of `capacity` at
/// `key`, granted for `ttl_us`; at most `max_reporters` reporters.
pub(crate) fn quota_command(
    with_source: bool,
    key: &str,
    now_us: Option<u64>,
    (reporter, demand): (u64, u64),
    capacity: floodwall_core::quota::Capacity,
    ttl_us: u64,
    max_reporters: usize,
) -> ::redis::Cmd {
    let mut cmd = invocation(QUOTA, with_source);
    cmd.arg(1).arg(key);
    now_arg(&mut cmd, now_us);
    cmd.arg(format!("{reporter:016x}"))
        .arg(demand)
        .arg(capacity.limit)
        .arg(capacity.burst)
        .arg(ttl_us)
        .arg(max_reporters);
    cmd
}

/// `EVALSHA` of script `script`, or `EVAL` with its text once Redis has said NOSCRIPT.
fn invocation(script: usize, with_source: bool) -> ::redis::Cmd {
    let mut cmd = ::redis::Cmd::new();
    if with_source {
        cmd.arg("EVAL").arg(SOURCES[script]);
    } else {
        cmd.arg("EVALSHA").arg(SHA1[script].as_str());
    }
    cmd
}

/// ARGV[1]: the injected clock's time, or empty for Redis's own.
fn now_arg(cmd: &mut ::redis::Cmd, now_us: Option<u64>) {
    match now_us {
        Some(now_us) => cmd.arg(now_us),
        None => cmd.arg(""),
    };
}

/// A policy's parameters as every decision script takes them: limit, period, capacity, shadow,
/// max_debt.
fn policy_args(cmd: &mut ::redis::Cmd, policy: &Policy) {
    cmd.arg(policy.limit())
        .arg(period_arg(policy))
        .arg(policy.capacity())
        .arg(u8::from(policy.mode() == Mode::Shadow))
        .arg(policy.max_debt());
}

/// A policy's period as the scripts take it: microseconds, aligned to the epoch; minus the
/// microseconds for weekly windows from Monday; minus the months (1 to 12, no period is that
/// short) for calendar months.
fn period_arg(policy: &Policy) -> i64 {
    // Bounded by MAX_PERIOD, far below i64::MAX.
    let period_us = i64::try_from(policy.period_us()).unwrap_or(i64::MAX);
    match policy.calendar() {
        Calendar::Months(months) => -i64::from(months),
        Calendar::Weeks(_) => -period_us,
        _ => period_us,
    }
}

/// What one script call does, and who holds what it admits under `concurrency` policies.
#[derive(Debug, Clone, Copy)]
pub(super) struct Call {
    pub(super) operation: Operation,
    pub(super) holder: Holder,
}

impl Call {
    pub(super) fn of(check: &Check<'_>, operation: Operation) -> Call {
        Call {
            operation,
            holder: check.holder(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_scripts_follow_algorithm_order() {
        for (index, algorithm) in Algorithm::ALL.into_iter().enumerate() {
            let marker = format!("local ALGORITHM = '{}'", algorithm.as_str());
            assert!(SOURCES[index].contains(&marker), "{algorithm}");
            let policy = Policy::new("p", algorithm, 1, std::time::Duration::from_secs(1));
            let policy = policy.unwrap();
            assert_eq!(script_for(Operation::Decide, &[&policy]), index);
            assert_eq!(script_for(Operation::Refund, &[&policy]), REFUND);
        }
        for multi in [DECIDE, REFUND] {
            assert!(!SOURCES[multi].contains("local ALGORITHM"));
            for algorithm in Algorithm::ALL {
                let entry = format!("{0} = {0}_module,", algorithm.as_str());
                assert!(SOURCES[multi].contains(&entry), "{algorithm}");
            }
        }
    }
}
