//! Shares of a rate among reporting proxies, against the brute-force model: the same shares
//! for random report sequences; the shares that have not expired never exceed the limit or the
//! burst; with steady demand they converge to the fair division; a silent reporter's share
//! lapses and flows to the others.

use floodwall_core::quota::{Capacity, MAX_REPORTERS, Quota, Usage, targets};
use floodwall_testkit::QuotaModel;
use proptest::prelude::*;

const TTL_US: u64 = 10_000_000;

/// One report: after `advance` µs, reporter `id` saw `requests` over `elapsed_us`.
#[derive(Debug, Clone, Copy)]
struct Report {
    advance: u64,
    id: u64,
    requests: u64,
    elapsed_us: u64,
}

fn capacities() -> impl Strategy<Value = Capacity> {
    (1u64..400, 1u64..500, 1u64..120).prop_map(|(limit, burst, seconds)| Capacity {
        limit,
        burst,
        period_us: seconds * 1_000_000,
    })
}

fn reports() -> impl Strategy<Value = Vec<Report>> {
    let advance = prop_oneof![2 => Just(0u64), 5 => 0u64..5_000_000, 1 => 0u64..15_000_000];
    let report = (advance, 0u64..7, 0u64..3_000, 0u64..10_000_000).prop_map(
        |(advance, id, requests, elapsed_us)| Report {
            advance,
            id,
            requests,
            elapsed_us,
        },
    );
    prop::collection::vec(report, 1..80)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn shares_agree_with_the_model_and_never_exceed_the_capacity(
        capacity in capacities(),
        reports in reports(),
    ) {
        let mut quota = Quota::new();
        let mut model = QuotaModel::default();
        let mut now = 1_000_000;
        for report in reports {
            now += report.advance;
            let usage = Usage { requests: report.requests, elapsed_us: report.elapsed_us };
            let share = quota.report(report.id, usage, now, capacity, TTL_US);
            let modelled = model.report(
                report.id,
                report.requests,
                report.elapsed_us,
                now,
                (capacity.limit, capacity.burst, capacity.period_us),
                TTL_US,
                MAX_REPORTERS,
            );
            prop_assert_eq!((share.per_period, share.max, share.expires_us), modelled);
            quota.expire(now);
            let rate: u64 = quota.reporters().iter().map(|r| r.share.per_period).sum();
            let held: u64 = quota.reporters().iter().map(|r| r.share.max).sum();
            prop_assert!(rate <= capacity.limit, "{} per period of {}", rate, capacity.limit);
            prop_assert!(held <= capacity.burst, "{} held of {}", held, capacity.burst);
            prop_assert!(share.per_period == 0 || share.max >= 1);
        }
    }

    #[test]
    fn with_steady_demand_shares_converge_to_the_fair_division(
        capacity in capacities(),
        demands in prop::collection::vec(0u64..1_000, 1..6),
    ) {
        let mut quota = Quota::new();
        let mut now = 1_000_000;
        // Three rounds of reports, each reporter in turn, one second apart.
        for _ in 0..3 {
            for (id, &demand) in demands.iter().enumerate() {
                now += 1_000_000;
                let usage = Usage { requests: demand, elapsed_us: capacity.period_us };
                quota.report(id as u64, usage, now, capacity, TTL_US);
            }
        }
        let wants: Vec<u64> = demands.iter().map(|&d| d.min(capacity.limit)).collect();
        let fair = targets(capacity, &wants);
        for (reporter, target) in quota.reporters().iter().zip(&fair) {
            // The rate is the fair one; only a burst too small for a unit each can hold it back.
            if reporter.share.max > 0 {
                prop_assert_eq!(reporter.share.per_period, *target, "{:?}", quota.reporters());
            }
        }
        // Targets divide the pool (the limit less an eighth kept for newcomers).
        prop_assert_eq!(fair.iter().sum::<u64>(), capacity.limit - capacity.limit / 8);
    }
}

#[test]
fn a_silent_reporters_share_lapses_and_flows_to_the_others() {
    let capacity = Capacity {
        limit: 1_000,
        burst: 1_000,
        period_us: 60_000_000,
    };
    let busy = Usage {
        requests: 5_000,
        elapsed_us: 60_000_000,
    };
    let mut quota = Quota::new();
    let mut now = 0;
    for _ in 0..2 {
        for id in 0..4 {
            now += 1_000_000;
            quota.report(id, busy, now, capacity, TTL_US);
        }
    }
    let even = quota.reporters()[0].share.per_period;
    assert_eq!(even, 219, "875 split four ways");
    // Reporters 1 to 3 fall silent; within a TTL and a report, 0 holds the whole pool.
    now += TTL_US;
    let alone = quota.report(0, busy, now, capacity, TTL_US);
    assert_eq!(alone.per_period, 875);
    assert_eq!(quota.reporters().len(), 1);
}
