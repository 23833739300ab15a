"""The core API on both stores: exact admissions, honest retry_after, all-or-nothing checks,
peek, reset, refund, acquire, errors, and the async twins."""

from __future__ import annotations

import asyncio
import inspect
import time

import pytest

import floodwall
from floodwall.testing import ManualClock

from conftest import RedisServer, unique_prefix

ALGORITHMS = ["fixed_window", "sliding_log", "sliding_window", "token_bucket", "gcra", "concurrency"]


def limiter_on(storage: str, **options) -> floodwall.Limiter:
    if storage != "memory://":
        options.setdefault("prefix", unique_prefix())
    return floodwall.Limiter(storage, **options)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_every_algorithm_admits_exactly_the_limit_and_retry_after_is_honest(storage, algorithm):
    clock = ManualClock(1_700_000_000.0)
    limiter = limiter_on(storage, clock=clock)
    policy = floodwall.Policy("p", "5/minute", algorithm=algorithm)
    decisions = [limiter.check(policy, "client") for _ in range(7)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False] * 2
    assert [d.remaining for d in decisions[:5]] == [4, 3, 2, 1, 0]
    denied = decisions[-1]
    assert denied.policy == "p" and denied.limit == 5 and denied.remaining == 0
    assert denied.retry_after is not None and 0 < denied.retry_after <= 60
    # Just short of retry_after: still denied. At it: admitted.
    clock.advance(denied.retry_after - 0.000002)
    assert not limiter.peek(policy, "client").allowed
    clock.advance(0.000002)
    assert limiter.check(policy, "client").allowed


def test_check_all_is_all_or_nothing(storage):
    clock = ManualClock()
    limiter = limiter_on(storage, clock=clock)
    per_second = floodwall.Policy("per-second", "3/second", algorithm="fixed_window")
    per_day = floodwall.Policy("per-day", "4/day", algorithm="fixed_window")
    for _ in range(3):
        assert limiter.check_all([per_second, per_day], "k").allowed
    verdict = limiter.check_all([per_second, per_day], "k")
    assert not verdict.allowed and verdict.violated == ["per-second"]
    # The denial consumed nothing from the daily policy: one unit is still there.
    clock.advance(1)
    verdict = limiter.check_all([per_second, per_day], "k")
    assert verdict.allowed
    assert [d.remaining for d in verdict.decisions] == [2, 0]
    assert not limiter.check_all([per_second, per_day], "k").allowed


def test_peek_reset_and_refund(storage):
    limiter = limiter_on(storage, clock=ManualClock())
    policy = floodwall.Policy("p", (3, 60), algorithm="gcra")
    assert limiter.peek(policy, b"bytes-key").remaining == 3
    limiter.check(policy, b"bytes-key", cost=3)
    assert not limiter.peek(policy, b"bytes-key").allowed
    assert limiter.refund(policy, b"bytes-key", cost=2).remaining == 2
    limiter.reset(policy, b"bytes-key")
    assert limiter.peek(policy, b"bytes-key").remaining == 3


def test_a_cost_no_policy_can_admit_is_an_error_not_a_denial(storage):
    limiter = limiter_on(storage)
    policy = floodwall.Policy("p", "5/minute")
    with pytest.raises(floodwall.CostTooLarge) as raised:
        limiter.check(policy, "k", cost=6)
    assert isinstance(raised.value, floodwall.Error)


def test_async_twins_give_the_same_answers(storage):
    clock = ManualClock()
    limiter = limiter_on(storage, clock=clock)
    policy = floodwall.Policy("p", "2/minute", algorithm="token_bucket")

    async def main():
        first = await limiter.acheck(policy, "k")
        second = await limiter.acheck_all([policy], "k")
        third = await limiter.acheck(policy, "k")
        peeked = await limiter.apeek(policy, "k")
        await limiter.areset(policy, "k")
        after_reset = await limiter.apeek(policy, "k")
        refunded = await limiter.arefund(policy, "k")
        return first, second, third, peeked, after_reset, refunded

    first, second, third, peeked, after_reset, refunded = asyncio.run(main())
    # Coroutines, as asyncio.run and create_task require.
    assert inspect.iscoroutinefunction(limiter.acheck)
    assert asyncio.run(limiter.apeek(policy, "other")).remaining == 2
    assert first.allowed and second.allowed and not third.allowed
    assert third.retry_after == pytest.approx(30.0)
    assert not peeked.allowed
    assert after_reset.remaining == 2 and refunded.remaining == 2


def test_acquire_waits_until_admitted_or_raises_past_its_timeout(storage):
    limiter = limiter_on(storage)
    policy = floodwall.Policy("p", (1, 0.3), algorithm="gcra")
    assert limiter.acquire(policy, "k").allowed
    with pytest.raises(floodwall.RateLimited) as raised:
        limiter.acquire(policy, "k", timeout=0.01)
    assert 0 < raised.value.retry_after <= 0.3
    assert raised.value.decision.policy == "p"
    started = time.monotonic()
    assert limiter.acquire(policy, "k", timeout=2.0).allowed
    assert time.monotonic() - started >= 0.2

    async def waits():
        return await limiter.aacquire(policy, "k", timeout=2.0)

    assert asyncio.run(waits()).allowed


def test_bad_options_raise_config_error_with_the_fix():
    with pytest.raises(floodwall.ConfigError, match="allow"):
        floodwall.Limiter(on_error="maybe")
    with pytest.raises(floodwall.ConfigError):
        floodwall.Limiter("postgres://nope")
    with pytest.raises(floodwall.ConfigError, match="Redis"):
        floodwall.Limiter("memory://", prefix="x")
    with pytest.raises(floodwall.ConfigError, match="algorithm"):
        floodwall.Policy("p", "1/second", algorithm="leaky")
    with pytest.raises(floodwall.ConfigError):
        floodwall.Policy("bad name!", "1/second")
    with pytest.raises(floodwall.ConfigError, match="count, period"):
        floodwall.Policy("p", 10)
    with pytest.raises(floodwall.ConfigError):
        floodwall.Policy("p", "1/second", mode="loud")


def test_policy_reports_what_it_was_built_with():
    policy = floodwall.Policy("p", "5 per 2 minutes", algorithm="gcra", burst=7, mode="shadow", on_error="deny")
    assert (policy.name, policy.limit, policy.period, policy.algorithm) == ("p", 5, 120.0, "gcra")
    assert (policy.burst, policy.mode, policy.on_error) == (7, "shadow", "deny")
    import datetime

    same = floodwall.Policy("p", (5, datetime.timedelta(minutes=2)), algorithm="gcra", burst=7, mode="shadow", on_error="deny")
    assert same == policy and hash(same) == hash(policy)


def test_a_prefetch_is_a_fixed_window_option_and_keeps_the_count_exact(shared_redis: RedisServer):
    hot = floodwall.Policy("hot", "50/hour", algorithm="fixed_window", prefetch=10)
    assert hot.prefetch == 10 and floodwall.Policy("p", "5/hour").prefetch == 0
    with pytest.raises(floodwall.ConfigError, match="use fixed_window"):
        floodwall.Policy("p", "5/hour", algorithm="gcra", prefetch=2)
    with pytest.raises(floodwall.ConfigError, match="larger than the limit"):
        floodwall.Policy("p", "5/hour", algorithm="fixed_window", prefetch=6)
    # Two limiters (two instances) spending prefetched units of one key admit exactly the limit.
    prefix = unique_prefix()
    limiters = [floodwall.Limiter(shared_redis.url, prefix=prefix, on_error="deny") for _ in range(2)]
    admitted = sum(limiters[i % 2].check(hot, "k").allowed for i in range(80))
    assert admitted == 50


@pytest.mark.parametrize(
    "rate, expected",
    [
        ("10/minute", (10, 60.0)),
        ("10 per minute", (10, 60.0)),
        ("5 per 2 minutes", (5, 120.0)),
        ("100/second", (100, 1.0)),
        ("1000/day", (1000, 86400.0)),
        ("3 per hour", (3, 3600.0)),
        ("2/30 seconds", (2, 30.0)),
    ],
)
def test_every_rate_form_parses(rate, expected):
    assert floodwall.parse_rate(rate) == expected
    assert (floodwall.Policy("p", rate).limit, floodwall.Policy("p", rate).period) == expected


@pytest.mark.parametrize("rate", ["", "ten/minute", "10/fortnight", "0/second", "10 minute", "1.5/second"])
def test_bad_rates_name_the_accepted_forms(rate):
    with pytest.raises(floodwall.ConfigError, match="5 per 2 minutes"):
        floodwall.Policy("p", rate)


@pytest.mark.parametrize("on_error, allowed", [("allow", True), ("local", True), ("deny", None)])
def test_a_redis_outage_is_answered_per_on_error(redis: RedisServer, on_error, allowed):
    limiter = floodwall.Limiter(redis.url, on_error=on_error, timeout=0.2, prefix=unique_prefix())
    policy = floodwall.Policy("p", "100/minute")
    assert limiter.check(policy, "k").counted
    redis.kill()
    started = time.monotonic()
    if allowed is None:
        with pytest.raises(floodwall.StoreUnavailable):
            limiter.check(policy, "k")
    else:
        decision = limiter.check(policy, "k")
        assert decision.allowed is allowed
        assert decision.counted is (on_error == "local")
    assert time.monotonic() - started < 2.0
    redis.start()
    deadline = time.monotonic() + 10
    while True:
        try:
            if limiter.check(policy, "k").counted:
                break
        except floodwall.StoreUnavailable:
            pass
        assert time.monotonic() < deadline, "the limiter did not reconnect"
        time.sleep(0.1)


def test_a_cancelled_await_leaves_the_loop_and_the_limiter_working(shared_redis: RedisServer):
    limiter = floodwall.Limiter(shared_redis.url, prefix=unique_prefix(), on_error="deny", timeout=5.0)
    policy = floodwall.Policy("p", "100/minute", algorithm="fixed_window")

    async def main():
        cancelled = [asyncio.ensure_future(limiter.acheck(policy, "k")) for _ in range(20)]
        await asyncio.sleep(0)
        for task in cancelled:
            task.cancel()
        after = await asyncio.gather(*(limiter.acheck(policy, "k") for _ in range(10)))
        return cancelled, after

    cancelled, after = asyncio.run(main())
    assert all(task.cancelled() or task.done() for task in cancelled)
    assert all(decision.allowed for decision in after)
    # The cancelled decisions were sent and counted, or not sent: never more than 30 in all.
    assert 70 <= limiter.peek(policy, "k").remaining <= 90


def test_prepared_headers_are_the_verdicts_own_for_any_policies():
    clock = ManualClock()
    limiter = floodwall.Limiter("memory://", clock=clock)
    minute = floodwall.Policy("minute", "2/minute", algorithm="fixed_window")
    hour = floodwall.Policy("hour", "5/hour", algorithm="gcra")
    other = floodwall.Policy("other", "3/second")
    prepared = {mode: floodwall._native.RateLimitHeaders([minute, hour], mode) for mode in ("draft", "legacy", "both", "none")}
    denials = 0
    for _ in range(4):  # allowed twice, then denied by "minute"
        for policies in ([minute, hour], [hour, minute], [minute], [other]):
            verdict = limiter.check_all(policies, "k")
            denials += not verdict.allowed
            for mode, headers in prepared.items():
                assert headers.of(verdict) == verdict.headers(mode), (mode, verdict)
                assert headers.raw(verdict) == [(n.encode(), v.encode()) for n, v in verdict.headers(mode)]
                if not verdict.allowed:
                    assert headers.denial(verdict) == verdict.denial(mode)
        clock.advance(1.5)
    assert denials >= 4
    with pytest.raises(floodwall.ConfigError):
        floodwall._native.RateLimitHeaders([minute], "loud")
