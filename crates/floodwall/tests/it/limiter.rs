//! The limiter's failure policy, shadow mode, reset and waiting acquire.

use crate::support::LimiterExt;
use std::time::Duration;

use floodwall::{
    Algorithm, CheckError, Error, Limiter, ManualClock, MemoryStore, Mode, OnError, Policy, Source,
    TokioClock,
};

const NOW: u64 = 1_767_225_600_000_000;

fn policy(limit: u64) -> Policy {
    Policy::new(
        "p",
        Algorithm::FixedWindow,
        limit,
        Duration::from_secs(3600),
    )
    .unwrap()
}

/// A Redis store whose server is not there (a loopback port nothing listens on): every call is
/// a real store failure, refused by the kernel.
async fn unreachable_store() -> floodwall::redis::RedisStore {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = floodwall::redis::RedisConfig::new(format!("redis://127.0.0.1:{port}"))
        .timeout(Duration::from_millis(200));
    floodwall::redis::RedisStore::connect(config).await.unwrap()
}

#[tokio::test]
async fn a_failing_store_is_answered_per_on_error() {
    // The fallback runs on a manual clock too: no test reads the system clock.
    let fallback = MemoryStore::builder().clock(ManualClock::new(NOW)).build();
    let limiter = Limiter::builder(unreachable_store().await)
        .on_error(OnError::Allow)
        .local_store(fallback)
        .build();
    let new = policy(10);
    let verdict = limiter.check(&new, "new", 1).await.unwrap();
    assert!(verdict.allowed());
    assert_eq!(verdict.source(), Source::FailOpen);

    let deny = policy(10).with_on_error(OnError::Deny);
    let error = limiter.check(&deny, "new", 1).await.unwrap_err();
    assert!(matches!(error, Error::StoreUnavailable { .. }));
    assert!(error.is_transient());

    let local = policy(2).with_on_error(OnError::Local);
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(limiter.check(&local, "new", 1).await.unwrap());
    }
    assert_eq!(
        answers.iter().map(|v| v.allowed()).collect::<Vec<_>>(),
        [true, true, false]
    );
    assert!(answers.iter().all(|v| v.source() == Source::Local));

    let stats = limiter.stats();
    assert_eq!((stats.fail_open, stats.fail_closed, stats.local), (1, 1, 3));
    // Every answer above came from a failed call, and each failure is counted once, by kind.
    assert_eq!(
        stats
            .store_errors
            .iter()
            .map(|(_, count)| count)
            .sum::<u64>(),
        5
    );
}

#[tokio::test]
async fn the_strictest_on_error_among_policies_wins() {
    // deny over local over allow, in whichever order the policies come.
    let named = |name: &str, on_error: OnError| {
        Policy::new(name, Algorithm::FixedWindow, 10, Duration::from_secs(3600))
            .unwrap()
            .with_on_error(on_error)
    };
    let (allow, local, deny) = (
        named("allow", OnError::Allow),
        named("local", OnError::Local),
        named("deny", OnError::Deny),
    );
    for policies in [
        [allow.clone(), deny.clone()],
        [deny.clone(), allow.clone()],
        [local.clone(), deny.clone()],
        [deny.clone(), local.clone()],
    ] {
        let limiter = Limiter::new(unreachable_store().await);
        let error = limiter.check_all(&policies, "new", 1).await.unwrap_err();
        assert!(matches!(&error, Error::StoreUnavailable { .. }), "{error}");
        assert_eq!(limiter.stats().fail_closed, 1);
    }
    for policies in [
        [allow.clone(), local.clone()],
        [local.clone(), allow.clone()],
    ] {
        let limiter = Limiter::new(unreachable_store().await);
        let verdict = limiter.check_all(&policies, "new", 1).await.unwrap();
        assert_eq!(verdict.source(), Source::Local);
        assert_eq!(limiter.stats().local, 1);
    }
    // Without an override, the limiter's own on_error decides.
    let limiter = Limiter::builder(unreachable_store().await)
        .on_error(OnError::Deny)
        .build();
    let plain = [policy(10)];
    assert!(matches!(
        limiter.check_all(&plain, "new", 1).await,
        Err(Error::StoreUnavailable { .. })
    ));
}

#[tokio::test]
async fn a_cost_above_capacity_is_an_error_even_when_failing_open() {
    let limiter = Limiter::new(unreachable_store().await);
    let error = limiter.check(&policy(10), "new", 11).await.unwrap_err();
    assert!(
        matches!(error, Error::Check(CheckError::Cost(_))),
        "{error}"
    );
    assert!(!error.is_transient());
}

#[tokio::test]
async fn a_shadow_policy_reports_but_never_denies() {
    let limiter = Limiter::new(MemoryStore::builder().clock(ManualClock::new(NOW)).build());
    let trial = Policy::new(
        "trial",
        Algorithm::FixedWindow,
        2,
        Duration::from_secs(3600),
    )
    .unwrap();
    let policies = [policy(5), trial.with_mode(Mode::Shadow)];
    let mut shadow_denials = 0;
    for _ in 0..5 {
        let verdict = limiter.check_all(&policies, "k", 1).await.unwrap();
        assert!(verdict.allowed());
        shadow_denials += usize::from(!verdict.decisions()[1].allowed);
    }
    assert_eq!(shadow_denials, 3);
    assert!(
        !limiter
            .check_all(&policies, "k", 1)
            .await
            .unwrap()
            .allowed()
    );
}

#[tokio::test]
async fn reset_gives_a_full_quota_back() {
    let limiter = Limiter::new(MemoryStore::builder().clock(ManualClock::new(NOW)).build());
    let p = policy(1);
    assert!(limiter.check(&p, "k", 1).await.unwrap().allowed());
    assert!(!limiter.check(&p, "k", 1).await.unwrap().allowed());
    limiter.reset(&p, "k").await.unwrap();
    assert!(limiter.check(&p, "k", 1).await.unwrap().allowed());
}

#[tokio::test(start_paused = true)]
async fn acquire_waits_exactly_as_long_as_the_policy_requires() {
    let clock = TokioClock::starting_at(NOW);
    let limiter = Limiter::new(MemoryStore::builder().clock(clock).build());
    // 2 per second, burst 1: twenty calls take 9.5 s after the first.
    let policy = Policy::new("outgoing", Algorithm::Gcra, 2, Duration::from_secs(1))
        .unwrap()
        .with_burst(1)
        .unwrap();
    let started = tokio::time::Instant::now();
    for _ in 0..20 {
        let verdict = limiter
            .acquire(&policy, "worker", 1, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(verdict.allowed());
    }
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(9_500), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(9_600), "{elapsed:?}");
}

#[tokio::test(start_paused = true)]
async fn acquire_gives_up_when_the_wait_would_pass_the_deadline() {
    let limiter = Limiter::new(
        MemoryStore::builder()
            .clock(TokioClock::starting_at(NOW))
            .build(),
    );
    let p = policy(1);
    assert!(limiter.check(&p, "k", 1).await.unwrap().allowed());
    let started = tokio::time::Instant::now();
    let verdict = limiter
        .acquire(&p, "k", 1, Duration::from_secs(1))
        .await
        .unwrap();
    assert!(!verdict.allowed());
    assert!(verdict.retry_after().unwrap() > Duration::from_secs(1));
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test]
async fn a_refund_gives_back_what_was_taken_and_no_more() {
    let limiter = Limiter::new(MemoryStore::builder().clock(ManualClock::new(NOW)).build());
    let p = policy(3);
    for _ in 0..3 {
        assert!(limiter.check(&p, "k", 1).await.unwrap().allowed());
    }
    assert!(!limiter.check(&p, "k", 1).await.unwrap().allowed());
    let after = limiter.refund(&p, "k", 2).await.unwrap();
    assert_eq!(after.decisions()[0].remaining, 2);
    assert!(limiter.check(&p, "k", 2).await.unwrap().allowed());
    // Never past a full quota, and never for a cost no admission could have taken.
    let rest = limiter.refund(&p, "k", 3).await.unwrap();
    assert_eq!(rest.decisions()[0].remaining, 3);
    let error = limiter.refund(&p, "k", 4).await.unwrap_err();
    assert!(
        matches!(error, Error::Check(CheckError::Cost(_))),
        "{error}"
    );
}

#[tokio::test]
async fn checks_across_keys_name_each_pair_once() {
    let limiter = Limiter::new(MemoryStore::new());
    let (per_user, global) = (policy(2), policy(5));
    let error = limiter
        .check_each(&[(&per_user, "u"), (&global, "u")], 1)
        .await
        .unwrap_err();
    // Both policies are named "p": for one key they would share one state.
    assert!(
        matches!(error, Error::Check(CheckError::Duplicate { .. })),
        "{error}"
    );
    let other = Policy::new("q", Algorithm::Gcra, 5, Duration::from_secs(1)).unwrap();
    let verdict = limiter
        .check_each(&[(&per_user, "u"), (&other, "all")], 1)
        .await
        .unwrap();
    let names: Vec<&str> = verdict.iter().map(|(p, _)| p.name()).collect();
    assert_eq!(names, ["p", "q"]);
}

/// A monthly quota spent on the last second of a leap February is back at 00:00 UTC on
/// 1 March, and says so: `retry_after` is that second, `reset_after` the rest of the month.
#[tokio::test]
async fn a_calendar_month_quota_resets_on_the_first_of_the_month() {
    // 2024-02-29 23:59:59 UTC and 2024-03-01 00:00:00 UTC.
    let last_second = 1_709_251_199_000_000;
    let march = 1_709_251_200_000_000;
    let clock = ManualClock::new(last_second);
    let limiter = Limiter::new(MemoryStore::builder().clock(clock.clone()).build());
    let monthly = Policy::monthly("monthly", 3, 1).unwrap();
    let spent = limiter.check(&monthly, "tenant", 3).await.unwrap();
    assert!(spent.allowed());
    assert_eq!(spent.decisions()[0].reset_after, Duration::from_secs(1));
    let denied = limiter.check(&monthly, "tenant", 1).await.unwrap();
    assert_eq!(denied.retry_after(), Some(Duration::from_secs(1)));
    clock.set_us(march);
    let again = limiter.check(&monthly, "tenant", 1).await.unwrap();
    assert!(again.allowed());
    // March has 31 days.
    assert_eq!(
        again.decisions()[0].reset_after,
        Duration::from_secs(31 * 86_400)
    );
}
