//! The Lua script against the Rust `step` on the same random sequences, with an injected clock
//! (docs/testing.md: A11), and all-or-nothing policy pairs against the memory store.

use crate::support::{StoreExt, check_sync};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use floodwall::core::algorithm::{self, Outcome, State};
use floodwall::redis::{RedisConfig, RedisStore};
use floodwall::store::Store;
use floodwall::{
    Algorithm, Charge, Check, CheckError, ManualClock, MemoryStore, Mode, Policy, Verdict,
};
use floodwall_testkit::RedisServer;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const EPOCH_US: u64 = 1_767_225_600_000_000;

/// Wider than the brute-force models allow: `step` is the oracle here.
fn policy(name: &'static str) -> impl Strategy<Value = Policy> {
    let algorithm = proptest::sample::select(Algorithm::ALL.to_vec());
    (
        algorithm,
        1u64..=50,
        1_000u64..=10_000_000,
        proptest::option::of(1u64..=80),
    )
        .prop_map(move |(algorithm, limit, period_us, burst)| {
            let p = Policy::new(name, algorithm, limit, Duration::from_micros(period_us)).unwrap();
            match burst {
                Some(b) if algorithm.has_burst() => p.with_burst(b).unwrap(),
                _ => p,
            }
        })
}

/// Clock steps, mostly forward; now and then the clock steps back (as after an NTP correction
/// or a failover to a server behind), so that the scripts' clamps of times from the future are
/// compared with Rust's too.
fn advance() -> impl Strategy<Value = i64> {
    prop_oneof![
        3 => Just(0i64),
        4 => 0i64..50_000,
        2 => 0i64..3_000_000,
        1 => 0i64..30_000_000,
        1 => -3_000_000i64..0,
    ]
}

fn requests() -> impl Strategy<Value = Vec<(i64, u64)>> {
    let cost = prop_oneof![1 => Just(0u64), 6 => Just(1u64), 3 => 0u64..=90];
    proptest::collection::vec((advance(), cost), 1..40)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn store(server: &RedisServer, clock: &ManualClock, case: u64) -> RedisStore {
    // A prefix per case keeps cases apart on one server; a generous deadline absorbs a busy CI;
    // no deny cache, because this compares the script itself with `step`.
    let config = RedisConfig::new(server.url())
        .prefix(format!("case{case}"))
        .timeout(Duration::from_secs(5))
        .deny_cache(0)
        .clock(clock.clone());
    RedisStore::connect(config).await.unwrap()
}

#[test]
fn the_lua_script_agrees_with_step() {
    let start = (0u64..10_000_000).prop_map(|offset| EPOCH_US + offset);
    script_agrees_with_step((policy("p"), start, requests()), 128);
}

/// Calendar windows (weeks from Monday, calendar months of their real lengths) and windows of
/// whole weeks aligned to the epoch, computed
/// by the script from the clock it is given, across month and year ends from 1999 to 2101.
#[test]
fn the_lua_script_agrees_with_step_on_calendar_windows() {
    const DAY_US: u64 = 86_400_000_000;
    let months = proptest::sample::select(floodwall::core::CALENDAR_MONTHS.to_vec());
    let policy = prop_oneof![
        (1u64..=20, months)
            .prop_map(|(limit, months)| Policy::monthly("p", limit, months).unwrap()),
        (1u64..=20, 1u32..=3).prop_map(|(limit, weeks)| Policy::weekly("p", limit, weeks).unwrap()),
        (1u64..=20, 1u32..=3).prop_map(|(limit, weeks)| {
            let week = Duration::from_secs(7 * 86_400);
            Policy::new("p", Algorithm::FixedWindow, limit, week * weeks).unwrap()
        }),
    ];
    // Within a day before a month's end, mostly: the day numbers are random, the steps long.
    let start = (10_592u64..48_000, 0u64..DAY_US).prop_map(|(day, offset)| day * DAY_US + offset);
    let step = prop_oneof![
        2 => Just(0i64),
        3 => 0i64..3_600_000_000,
        3 => 0i64..86_400_000_000 * 3,
        1 => 0i64..86_400_000_000 * 40,
        1 => -86_400_000_000i64..0,
    ];
    let requests = proptest::collection::vec((step, 0u64..=22), 1..30);
    script_agrees_with_step((policy, start, requests), 96);
}

fn script_agrees_with_step(
    strategy: impl Strategy<Value = (Policy, u64, Vec<(i64, u64)>)>,
    cases: u32,
) {
    let server = RedisServer::start().unwrap();
    let rt = runtime();
    let mut runner = TestRunner::new(Config::with_cases(cases));
    let cases = AtomicU64::new(0);
    runner
        .run(&strategy, |(policy, start, requests)| {
            let case = cases.fetch_add(1, Ordering::Relaxed);
            rt.block_on(async {
                let clock = ManualClock::new(start);
                let store = store(&server, &clock, case).await;
                let policies = [policy.clone()];
                let (mut state, mut now) = (None, start);
                for (i, (advance, cost)) in requests.into_iter().enumerate() {
                    now = now.saturating_add_signed(advance);
                    clock.set_us(now);
                    let expected = algorithm::step(state.clone(), now, cost, &policy);
                    // A cost no policy can admit never reaches the script: the check is refused.
                    let actual = match Check::new(&policies, b"client", cost) {
                        Ok(check) => Ok(Verdict::from_answer(
                            &policies,
                            store.decide(&check).await.unwrap(),
                        )),
                        Err(error) => Err(error),
                    };
                    match (actual, expected) {
                        (Ok(verdict), Ok(outcome)) => {
                            prop_assert_eq!(
                                verdict.decisions()[0],
                                outcome.decision,
                                "request {}",
                                i
                            );
                            state = stored_after(state, outcome, now, cost, &policy);
                        }
                        (Err(CheckError::Cost(a)), Err(b)) => prop_assert_eq!(a, b),
                        (actual, expected) => {
                            prop_assert!(false, "redis {:?} vs step {:?}", actual, expected)
                        }
                    }
                }
                Ok(())
            })
        })
        .unwrap();
}

/// What Redis holds after a decision: the scripts write only when a policy consumes or when a
/// stored time lay in the future (the clock stepped back) and was clamped; a peek or a denial
/// otherwise leaves the key as it was, except that the sliding log's and concurrency's scripts
/// remove expired members on every call. While time only moves forward that is the same as
/// keeping every caught-up state, because catching up twice equals catching up once at the later time;
/// after a step back it is not (a catch-up at a later time may have refilled a bucket), so the
/// oracle keeps what the script keeps.
fn stored_after(
    before: Option<State>,
    outcome: Outcome<State>,
    now_us: u64,
    cost: u64,
    policy: &Policy,
) -> Option<State> {
    let consumed = cost > 0 && outcome.decision.allowed;
    // Both sorted-set scripts drop what left the interval on every call.
    let caught_up_in_place = matches!(
        policy.algorithm(),
        Algorithm::SlidingLog | Algorithm::Concurrency
    );
    if consumed
        || caught_up_in_place
        || before
            .as_ref()
            .is_some_and(|s| from_future(s, now_us, policy))
    {
        outcome.new_state
    } else {
        before
    }
}

/// Whether a stored state holds a time the scripts clamp at `now_us` (their `dirty` flag).
fn from_future(state: &State, now_us: u64, policy: &Policy) -> bool {
    let period = policy.period_us();
    match state {
        State::FixedWindow(s) => {
            s.window_start_us > algorithm::fixed_window::window(now_us, policy).0
        }
        State::SlidingWindow(s) => s.window_start_us > now_us - now_us % period,
        State::SlidingLog(s) => s.entries().any(|e| e.at_us > now_us),
        State::Concurrency(s) => s.holdings().any(|l| l.expires_us > now_us + period),
        State::TokenBucket(s) => s.updated_us > now_us,
        State::Gcra(s) => {
            let (limit, max) = (
                policy.limit(),
                (policy.capacity() + policy.max_debt()) * period,
            );
            let (ahead, whole) = (s.tat_us.saturating_sub(now_us), max / limit);
            s.tat_us > now_us
                && (ahead > whole
                    || (ahead == whole && ahead * limit + s.tat_frac.min(limit - 1) > max))
        }
    }
}

/// Memory and Redis on the same sequences. Time only moves forward here: after the clock steps
/// back, the memory store may still hold a refill that a peek observed at the later time, which
/// Redis never wrote (both bound the lockout by one period).
#[test]
fn policy_pairs_agree_with_the_memory_store() {
    let server = RedisServer::start().unwrap();
    let rt = runtime();
    let mut runner = TestRunner::new(Config::with_cases(96));
    let cases = AtomicU64::new(0);
    let forward = requests().prop_map(|r| {
        r.into_iter()
            .map(|(advance, cost)| (advance.max(0), cost))
            .collect::<Vec<_>>()
    });
    let strategy = (
        policy("first"),
        policy("second"),
        any::<bool>(),
        0u64..10_000_000,
        forward,
    );
    runner
        .run(&strategy, |(first, second, shadow, start, requests)| {
            let case = cases.fetch_add(1, Ordering::Relaxed);
            rt.block_on(async {
                let start = EPOCH_US + start;
                let clock = ManualClock::new(start);
                let redis = store(&server, &clock, 1_000_000 + case).await;
                let memory = MemoryStore::builder().clock(clock.clone()).build();
                let second = if shadow {
                    second.with_mode(Mode::Shadow)
                } else {
                    second
                };
                let policies = [first, second];
                let capacity = policies.iter().map(Policy::capacity).min().unwrap();
                let mut now = start;
                for (advance, cost) in requests {
                    now = now.saturating_add_signed(advance);
                    clock.set_us(now);
                    let cost = cost.min(capacity);
                    let expected = check_sync(&memory, &policies, b"client", cost);
                    let actual = redis.check(&policies, b"client", cost).await.unwrap();
                    prop_assert_eq!(actual, expected);
                }
                Ok(())
            })
        })
        .unwrap();
}

#[test]
fn lua_refunds_agree_with_rust() {
    let server = RedisServer::start().unwrap();
    let rt = runtime();
    let mut runner = TestRunner::new(Config::with_cases(96));
    let cases = AtomicU64::new(0);
    let operations =
        proptest::collection::vec((advance(), proptest::bool::weighted(0.3), 0u64..=90), 1..40);
    let strategy = (policy("p"), 0u64..10_000_000, operations);
    runner
        .run(&strategy, |(policy, start, operations)| {
            let case = cases.fetch_add(1, Ordering::Relaxed);
            rt.block_on(async {
                let start = EPOCH_US + start;
                let clock = ManualClock::new(start);
                let store = store(&server, &clock, 2_000_000 + case).await;
                let policies = [policy.clone()];
                let (mut state, mut now) = (None, start);
                for (i, (advance, refund, cost)) in operations.into_iter().enumerate() {
                    now = now.saturating_add_signed(advance);
                    clock.set_us(now);
                    let cost = cost.min(policy.capacity());
                    let check = Check::new(&policies, b"client", cost).unwrap();
                    let (expected, actual) = if refund {
                        let expected = algorithm::refund(state.clone(), now, cost, &policy);
                        (expected.unwrap(), store.refund(&check).await.unwrap())
                    } else {
                        let expected = algorithm::step(state.clone(), now, cost, &policy);
                        (expected.unwrap(), store.decide(&check).await.unwrap())
                    };
                    prop_assert_eq!(actual.decisions[0], expected.decision, "operation {}", i);
                    state = if refund {
                        expected.new_state
                    } else {
                        stored_after(state, expected, now, cost, &policy)
                    };
                }
                Ok(())
            })
        })
        .unwrap();
}

/// What one operation of a debit sequence does.
#[derive(Debug, Clone, Copy)]
enum Operation {
    Check,
    Refund,
    Debit,
}

/// A policy from [`policy`] with a `max_debt` of up to its capacity when its algorithm
/// carries debt.
fn policy_with_debt(name: &'static str) -> impl Strategy<Value = Policy> {
    (policy(name), 0u64..=80).prop_map(|(policy, max_debt)| {
        if !policy.algorithm().carries_debt() {
            return policy;
        }
        let max_debt = max_debt.min(policy.capacity());
        policy.with_max_debt(max_debt).unwrap()
    })
}

/// Debits into debt, interleaved with checks and refunds: the debit script agrees with
/// `algorithm::debit`, and later decisions and refunds on a key in debt agree with Rust's, the
/// clock stepping back now and then; the memory store charges the same (docs/testing.md: A21).
#[test]
fn lua_debits_agree_with_rust_and_the_memory_store() {
    let server = RedisServer::start().unwrap();
    let rt = runtime();
    let mut runner = TestRunner::new(Config::with_cases(96));
    let cases = AtomicU64::new(0);
    let operation = prop_oneof![
        5 => Just(Operation::Check),
        1 => Just(Operation::Refund),
        3 => Just(Operation::Debit),
    ];
    let operations = proptest::collection::vec((advance(), operation, 0u64..=90), 1..40);
    let strategy = (policy_with_debt("p"), 0u64..10_000_000, operations);
    runner
        .run(&strategy, |(policy, start, operations)| {
            let case = cases.fetch_add(1, Ordering::Relaxed);
            rt.block_on(async {
                let start = EPOCH_US + start;
                let clock = ManualClock::new(start);
                let store = store(&server, &clock, 3_000_000 + case).await;
                let memory = MemoryStore::builder().clock(clock.clone()).build();
                let policies = [policy.clone()];
                let (mut state, mut now) = (None, start);
                // Memory and Redis may differ after the clock steps back (see stored_after), so
                // the memory store is compared until it first does.
                let mut forward = true;
                for (i, (advance, operation, cost)) in operations.into_iter().enumerate() {
                    forward &= advance >= 0;
                    now = now.saturating_add_signed(advance);
                    clock.set_us(now);
                    // A charge may exceed the capacity (it is cut to what a key can owe, which
                    // charges the same); a check or refund may not.
                    let charged = cost;
                    let cost = cost.min(policy.capacity());
                    let check = Check::new(&policies, b"client", cost).unwrap();
                    let (expected, actual, in_memory) = match operation {
                        Operation::Check => (
                            algorithm::step(state.clone(), now, cost, &policy).unwrap(),
                            store.decide(&check).await.unwrap(),
                            memory.decide_sync(&check),
                        ),
                        Operation::Refund => (
                            algorithm::refund(state.clone(), now, cost, &policy).unwrap(),
                            store.refund(&check).await.unwrap(),
                            memory.refund_sync(&check),
                        ),
                        Operation::Debit => {
                            let charge = Charge::new(&policies, b"client", charged).unwrap();
                            (
                                algorithm::debit(state.clone(), now, charged, &policy),
                                store.debit(&charge).await.unwrap(),
                                memory.debit_sync(&charge),
                            )
                        }
                    };
                    let what = format!("operation {i} ({operation:?} of {cost})");
                    prop_assert_eq!(actual.decisions[0], expected.decision, "{}", what);
                    if forward {
                        prop_assert_eq!(
                            in_memory.decisions[0],
                            expected.decision,
                            "memory: {}",
                            what
                        );
                    }
                    state = match operation {
                        Operation::Check => stored_after(state, expected, now, cost, &policy),
                        _ => expected.new_state,
                    };
                }
                Ok(())
            })
        })
        .unwrap();
}
