//! What a policy accepts, reports and refuses.

use super::*;

#[test]
fn a_policy_displays_as_the_configuration_writes_it() {
    let hour = Duration::from_secs(3600);
    let shown = |p: Policy| p.to_string();
    assert_eq!(
        shown(
            Policy::new(
                "per-ip",
                Algorithm::SlidingWindow,
                10,
                Duration::from_secs(60)
            )
            .unwrap()
        ),
        "per-ip (sliding_window, 10 per 1m)"
    );
    assert_eq!(
        shown(
            Policy::new("api", Algorithm::Gcra, 2, Duration::from_millis(1500))
                .unwrap()
                .with_burst(20)
                .unwrap()
                .with_mode(Mode::Shadow)
        ),
        "api (gcra, 2 per 1500ms, burst 20, shadow)"
    );
    assert_eq!(
        shown(Policy::new("d", Algorithm::FixedWindow, 1, hour * 24 * 14).unwrap()),
        "d (fixed_window, 1 per 14d)"
    );
    assert_eq!(
        shown(Policy::weekly("w", 1, 2).unwrap()),
        "w (fixed_window, 1 per 2w)"
    );
    assert_eq!(
        shown(Policy::new("u", Algorithm::FixedWindow, 1, Duration::from_micros(1_500)).unwrap()),
        "u (fixed_window, 1 per 1500us)"
    );
    assert_eq!(
        shown(Policy::monthly("q", 9, 3).unwrap()),
        "q (fixed_window, 9 per 3mo)"
    );
}

#[test]
fn rejects_invalid_policies_with_a_hint() {
    let min = Duration::from_secs(60);
    assert_eq!(
        Policy::new("a", Algorithm::Gcra, 0, min),
        Err(PolicyError::ZeroLimit)
    );
    assert!(matches!(
        Policy::new("a b", Algorithm::Gcra, 1, min),
        Err(PolicyError::InvalidName { .. })
    ));
    assert!(matches!(
        Policy::new("a", Algorithm::Gcra, 1, Duration::from_micros(999)),
        Err(PolicyError::PeriodTooShort { .. })
    ));
    assert!(matches!(
        Policy::new("a", Algorithm::FixedWindow, 1, min)
            .unwrap()
            .with_burst(2),
        Err(PolicyError::BurstNotSupported { .. })
    ));
    assert!(matches!(
        Policy::new("a", Algorithm::Gcra, 1, min)
            .unwrap()
            .with_burst(0),
        Err(PolicyError::ZeroBurst)
    ));
    // 1 000 000 per day does not fit the exact arithmetic of a bucket; fixed_window takes it.
    let day = Duration::from_secs(86_400);
    let err = Policy::new("a", Algorithm::Gcra, 1_000_000, day).unwrap_err();
    assert!(err.to_string().contains("fixed_window"), "{err}");
    assert!(Policy::new("a", Algorithm::FixedWindow, 1_000_000, day).is_ok());
    assert!(Policy::new("a", Algorithm::Gcra, 50_000, day).is_ok());
}

#[test]
fn only_a_fixed_window_takes_a_lease_of_at_most_its_limit() {
    let second = Duration::from_secs(1);
    let window = Policy::new("hot", Algorithm::FixedWindow, 100, second).unwrap();
    assert_eq!(window.prefetch(), 0);
    let prefetched = window.clone().with_prefetch(100).unwrap();
    assert_eq!(prefetched.prefetch(), 100);
    assert_eq!(
        prefetched.to_string(),
        "hot (fixed_window, 100 per 1s, prefetch 100)"
    );
    assert_eq!(prefetched.share(4).prefetch(), 0);
    assert_eq!(
        window.clone().with_prefetch(101),
        Err(PolicyError::PrefetchTooLarge {
            prefetch: 101,
            limit: 100
        })
    );
    for algorithm in Algorithm::ALL {
        let policy = Policy::new("hot", algorithm, 100, second).unwrap();
        assert!(policy.clone().with_prefetch(0).is_ok());
        let err = policy.with_prefetch(10);
        assert_eq!(
            err.is_ok(),
            algorithm == Algorithm::FixedWindow,
            "{algorithm}"
        );
        if let Err(err) = err {
            assert!(err.to_string().contains("use fixed_window"), "{err}");
        }
    }
}

#[test]
fn on_error_names_round_trip() {
    for on_error in [OnError::Allow, OnError::Deny, OnError::Local] {
        assert_eq!(on_error.as_str().parse::<OnError>(), Ok(on_error));
    }
    assert_eq!(OnError::Deny.as_str(), "deny");
    let err = "ignore".parse::<OnError>().unwrap_err();
    assert!(err.contains("allow, deny, local"), "{err}");
}

#[test]
fn a_policy_reports_what_it_was_built_with() {
    let minute = Duration::from_secs(60);
    let plain = Policy::new("p", Algorithm::Gcra, 5, minute).unwrap();
    assert_eq!(
        (plain.burst(), plain.mode(), plain.on_error()),
        (None, Mode::Enforce, None)
    );
    let built = plain
        .with_burst(7)
        .unwrap()
        .with_mode(Mode::Shadow)
        .with_on_error(OnError::Local);
    assert_eq!(
        (built.burst(), built.mode(), built.on_error()),
        (Some(7), Mode::Shadow, Some(OnError::Local))
    );
    let debug = format!("{built:?}");
    for part in [
        "name: \"p\"",
        "Gcra",
        "limit: 5",
        "burst: 7",
        "Shadow",
        "on_error: Local",
    ] {
        assert!(debug.contains(part), "{part} missing from {debug}");
    }
}

#[test]
fn the_largest_burst_is_allowed_and_one_more_is_not() {
    let short = Policy::new("p", Algorithm::Gcra, 1, MIN_PERIOD).unwrap();
    assert_eq!(
        short.clone().with_burst(MAX_LIMIT).map(|p| p.capacity()),
        Ok(MAX_LIMIT)
    );
    assert_eq!(
        short.with_burst(MAX_LIMIT + 1),
        Err(PolicyError::LimitTooLarge {
            limit: MAX_LIMIT + 1,
            max: MAX_LIMIT
        })
    );
}

#[test]
fn algorithm_names_round_trip() {
    for a in Algorithm::ALL {
        assert_eq!(a.as_str().parse::<Algorithm>(), Ok(a));
    }
    let err = "leaky_bucket".parse::<Algorithm>().unwrap_err();
    assert!(err.to_string().contains("token_bucket, gcra"));
}

#[test]
fn a_name_hash_is_the_names_and_the_same_in_every_process() {
    let per_ip = Policy::new("per-ip", Algorithm::Gcra, 10, Duration::from_secs(1)).unwrap();
    let other_limits = Policy::new(
        "per-ip",
        Algorithm::FixedWindow,
        99,
        Duration::from_secs(60),
    )
    .unwrap();
    assert_eq!(per_ip.name_hash(), other_limits.name_hash());
    // Pinned: stores file state by it, so it may not change between processes or versions
    // (64-bit FNV-1a of the name's bytes).
    assert_eq!(per_ip.name_hash(), 0x0cbf_ac0c_6f33_bf82);
    let a = Policy::new("a", Algorithm::Gcra, 1, Duration::from_secs(1)).unwrap();
    assert_eq!(a.name_hash(), 0xaf63_dc4c_8601_ec8c);
}

#[test]
fn debug_names_a_prefetch_only_when_there_is_one() {
    let window = Policy::new("hot", Algorithm::FixedWindow, 100, Duration::from_secs(1)).unwrap();
    assert!(!format!("{window:?}").contains("prefetch"), "{window:?}");
    let prefetching = window.with_prefetch(10).unwrap();
    assert!(
        format!("{prefetching:?}").contains("prefetch: 10"),
        "{prefetching:?}"
    );
}

#[test]
fn max_debt_is_at_most_the_capacity_and_only_for_algorithms_that_carry_debt() {
    let second = Duration::from_secs(1);
    let bucket = Policy::new("b", Algorithm::TokenBucket, 5, second)
        .and_then(|policy| policy.with_burst(8))
        .unwrap();
    assert_eq!(bucket.max_debt(), 8, "one capacity unless set");
    assert_eq!(bucket.clone().with_max_debt(0).unwrap().max_debt(), 0);
    assert_eq!(bucket.clone().with_max_debt(8).unwrap().max_debt(), 8);
    assert_eq!(
        bucket.with_max_debt(9).unwrap_err(),
        PolicyError::DebtTooLarge {
            max_debt: 9,
            capacity: 8
        }
    );
    for algorithm in [Algorithm::SlidingLog, Algorithm::Concurrency] {
        let policy = Policy::new("p", algorithm, 5, second).unwrap();
        let refused = policy.clone().with_max_debt(1).unwrap_err();
        assert_eq!(refused, PolicyError::DebtNotSupported { algorithm });
        assert!(
            refused
                .to_string()
                .contains("only fixed_window, sliding_window, token_bucket, gcra carry a debt"),
            "{refused}"
        );
        assert_eq!(policy.with_max_debt(0).unwrap().max_debt(), 0);
    }
}
