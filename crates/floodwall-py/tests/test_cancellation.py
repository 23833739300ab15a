"""asyncio callers who are cancelled mid-call (docs/testing.md: L5): what their call took is
given back, a wait stops spending, and each is counted; on a healthy Redis and during a stall
(SIGSTOP)."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import floodwall
import pytest


def free_slots(limiter: floodwall.Limiter, policy: floodwall.Policy, key: str) -> int:
    """How many of the policy's slots a fresh holder takes now (all of them when none leaked);
    released again afterwards. -1 while Redis is not deciding (its breaker still open after a
    stall: admitted without a holder)."""
    held = []
    try:
        for _ in range(policy.limit + 1):
            decision, holder = limiter._hold(policy, key, 1)
            if not decision.allowed:
                break
            if holder is None:
                return -1
            held.append(holder)
        return len(held)
    finally:
        for holder in held:
            limiter._release(policy, key, 1, holder)


def until_free(limiter: floodwall.Limiter, policy: floodwall.Policy, key: str, want: int) -> int:
    """Releases of what cancelled callers took run on tasks of their own: give them a moment."""
    deadline = time.monotonic() + 5
    free = free_slots(limiter, policy, key)
    while free < want and time.monotonic() < deadline:
        time.sleep(0.05)
        free = free_slots(limiter, policy, key)
    return free


async def cancel_leases(limiter: floodwall.Limiter, policy: floodwall.Policy, count: int) -> int:
    """`count` tasks enter an alease on one key and are cancelled 0-2 ms later (every fifth as
    soon as its hold is sent); returns how many were cancelled (before they got in, or
    inside)."""

    async def hold() -> None:
        async with limiter.alease(policy, "global"):
            await asyncio.sleep(0)

    tasks = []
    for i in range(count):
        task = asyncio.ensure_future(hold())
        tasks.append(task)
        await asyncio.sleep((i % 5) * 0.0004)
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    return sum(isinstance(r, asyncio.CancelledError) for r in results)


def test_cancelled_leases_leave_no_slot_held_on_a_healthy_redis(redis):
    limiter = floodwall.Limiter(redis.url, timeout=0.05)
    policy = floodwall.Policy("cap", (20, 600), algorithm="concurrency")
    assert free_slots(limiter, policy, "global") == 20
    cancelled = asyncio.run(cancel_leases(limiter, policy, 40))
    assert cancelled > 0, "no task was cancelled: the test would prove nothing"
    assert until_free(limiter, policy, "global", 20) == 20
    # Every fifth task is cancelled right after its hold is sent, before the loop can hand
    # the answer over: each is counted, whether Redis had answered by then or not.
    assert limiter.abandoned >= 40 // 5


def test_cancelled_leases_leave_no_slot_held_after_a_stall(redis):
    limiter = floodwall.Limiter(redis.url, timeout=0.05)
    policy = floodwall.Policy("cap", (20, 600), algorithm="concurrency")
    assert free_slots(limiter, policy, "global") == 20

    async def main() -> None:
        os.kill(redis.process.pid, signal.SIGSTOP)
        try:
            tasks = [asyncio.ensure_future(hold_until_cancelled(limiter, policy)) for _ in range(10)]
            await asyncio.sleep(0.02)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.sleep(0.2)
        finally:
            os.kill(redis.process.pid, signal.SIGCONT)

    asyncio.run(main())
    assert until_free(limiter, policy, "global", 20) == 20
    assert limiter.abandoned >= 10


async def hold_until_cancelled(limiter: floodwall.Limiter, policy: floodwall.Policy) -> None:
    async with limiter.alease(policy, "global"):
        await asyncio.sleep(60)


def test_a_cancelled_aacquire_stops_waiting_and_spending(redis):
    limiter = floodwall.Limiter(redis.url)
    policy = floodwall.Policy("outgoing", "2/second", algorithm="gcra")

    async def main() -> None:
        # The key's quota is spent: the waiter waits for the next 2 units; cancelled, it must
        # not go on waiting and take them in the background.
        assert limiter.check(policy, "partner", 2).allowed
        waiter = asyncio.ensure_future(limiter.aacquire(policy, "partner", 2, timeout=None))
        await asyncio.sleep(0.05)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter

    asyncio.run(main())
    # One second refills the key's 2 units; a waiter still running would have taken them.
    time.sleep(1.1)
    for _ in range(2):
        assert limiter.check(policy, "partner").allowed
    assert limiter.abandoned >= 1


@pytest.mark.parametrize("stall", [False, True])
def test_a_cancelled_asettle_or_adebit_still_charges_once(redis, stall):
    """A settle or a charge whose task is cancelled mid-call finishes on its thread: on a
    healthy Redis, and once a stalled one resumes, the key is charged exactly once."""
    limiter = floodwall.Limiter(redis.url, timeout=5.0)
    policy = floodwall.Policy("tokens", (1_000, 366 * 86_400), algorithm="fixed_window")
    reservation = limiter.reserve(policy, "k", 10)

    async def main() -> None:
        if stall:
            os.kill(redis.process.pid, signal.SIGSTOP)
        try:
            calls = [
                asyncio.ensure_future(limiter.asettle(reservation, 110)),
                asyncio.ensure_future(limiter.adebit(policy, "k", 5)),
            ]
            await asyncio.sleep(0.02)
            for call in calls:
                call.cancel()
            results = await asyncio.gather(*calls, return_exceptions=True)
            if stall:
                assert all(isinstance(r, asyncio.CancelledError) for r in results), results
        finally:
            if stall:
                os.kill(redis.process.pid, signal.SIGCONT)

    # asyncio.run waits for the threads the cancelled calls left running.
    asyncio.run(main())
    assert limiter.peek(policy, "k").remaining == 1_000 - 115
