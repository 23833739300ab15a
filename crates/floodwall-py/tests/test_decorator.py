"""@limiter.limit on sync and async functions."""

from __future__ import annotations

import asyncio
import time

import pytest

import floodwall
from floodwall.testing import ManualClock


def test_a_sync_function_raises_rate_limited_with_retry_after():
    clock = ManualClock()
    limiter = floodwall.Limiter(clock=clock)

    @limiter.limit("2/second", key=lambda: "global", algorithm="gcra")
    def call_partner(n):
        return n * 2

    assert [call_partner(1), call_partner(2)] == [2, 4]
    with pytest.raises(floodwall.RateLimited) as raised:
        call_partner(3)
    assert raised.value.retry_after == pytest.approx(0.5)
    assert raised.value.decision.allowed is False
    assert call_partner.policy.name.endswith("call_partner")
    clock.advance(raised.value.retry_after)
    assert call_partner(4) == 8


def test_the_key_may_depend_on_the_arguments():
    limiter = floodwall.Limiter(clock=ManualClock())

    @limiter.limit("1/minute", key=lambda user, **_: f"user:{user}")
    def export(user, fmt="csv"):
        return (user, fmt)

    assert export("ann") == ("ann", "csv")
    assert export("bob", fmt="json") == ("bob", "json")
    with pytest.raises(floodwall.RateLimited):
        export("ann")


def test_an_async_function_is_limited_without_blocking_the_loop():
    clock = ManualClock()
    limiter = floodwall.Limiter(clock=clock)

    @limiter.limit("3/minute", name="fetch")
    async def fetch(n):
        await asyncio.sleep(0)
        return n

    async def main():
        results = [await fetch(n) for n in range(3)]
        with pytest.raises(floodwall.RateLimited) as raised:
            await fetch(4)
        return results, raised.value

    results, error = asyncio.run(main())
    assert results == [0, 1, 2]
    assert error.decision.policy == "fetch" and error.retry_after > 0


def test_wait_true_admits_after_waiting():
    limiter = floodwall.Limiter()

    @limiter.limit((1, 0.2), wait=True, timeout=5.0, algorithm="gcra")
    def throttled():
        return time.monotonic()

    first, second, third = throttled(), throttled(), throttled()
    assert second - first >= 0.15 and third - second >= 0.15

    @limiter.limit((1, 0.2), wait=True, timeout=5.0, algorithm="gcra")
    async def throttled_async():
        return time.monotonic()

    async def main():
        return [await throttled_async() for _ in range(3)]

    times = asyncio.run(main())
    assert times[1] - times[0] >= 0.15 and times[2] - times[1] >= 0.15


def test_wait_true_gives_up_past_its_timeout():
    limiter = floodwall.Limiter()

    @limiter.limit((1, 60), wait=True, timeout=0.05)
    def rare():
        return True

    assert rare()
    started = time.monotonic()
    with pytest.raises(floodwall.RateLimited):
        rare()
    assert time.monotonic() - started < 1.0


def test_long_function_names_still_make_valid_distinct_policies():
    limiter = floodwall.Limiter()

    def make(suffix):
        def f():
            return suffix

        f.__qualname__ = "a" * 80 + suffix
        return limiter.limit("1/minute")(f)

    one, two = make("one"), make("two")
    assert len(one.policy.name) <= 64 and one.policy.name != two.policy.name
    assert one() == "one" and two() == "two"
