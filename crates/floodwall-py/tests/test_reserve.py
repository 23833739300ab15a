"""Costs known only after the answer: charges into debt, and reservations settled at their
actual cost, in memory and on a real redis-server; Python threads beside each other on one key
charge exactly the sum of actual costs."""

from __future__ import annotations

import asyncio
import threading

import pytest

import floodwall
from conftest import unique_prefix


def limiter_on(storage: str) -> floodwall.Limiter:
    if storage.startswith("redis"):
        return floodwall.Limiter(storage, prefix=unique_prefix(), on_error="deny")
    return floodwall.Limiter(storage)


def tokens(max_debt: int = 1_000) -> floodwall.Policy:
    return floodwall.Policy("tokens", (1_000, 3_600), algorithm="token_bucket", max_debt=max_debt)


def test_a_charge_past_what_is_left_owes_the_rest_and_denies(storage):
    limiter = limiter_on(storage)
    policy = tokens(max_debt=400)
    assert policy.max_debt == 400
    charged = limiter.debit(policy, "org", 1_500)
    assert charged.allowed, "a charge is never denied"
    assert (charged.remaining, charged.debt) == (0, 400), "at most max_debt is owed"
    denied = limiter.check(policy, "org", 1)
    assert not denied.allowed and denied.debt == 400
    assert denied.retry_after > 3_600 * 400 / 1_000  # the debt is paid by refill first


def test_a_reservation_settles_the_difference_once(storage):
    limiter = limiter_on(storage)
    policy = tokens()
    more = limiter.reserve(policy, "more", 100)
    assert more.allowed and more.estimate == 100
    assert more.verdict.decisions[0].remaining == 900
    assert more.settle(250).decisions[0].remaining == 750
    with pytest.raises(RuntimeError, match="settled already"):
        more.settle(250)
    with limiter.reserve([policy], "less", 100) as less:
        assert less.settle(40).decisions[0].remaining == 960
    # Left without a settle: charged at its estimate.
    with limiter.reserve(policy, "left", 100):
        pass
    assert limiter.peek(policy, "left").remaining == 900


def test_concurrency_cannot_be_reserved():
    held = floodwall.Policy("held", (10, 60), algorithm="concurrency")
    with pytest.raises(floodwall.Error, match="hold a lease"):
        floodwall.Limiter().reserve(held, "k", 1)
    with pytest.raises(floodwall.ConfigError, match="max_debt is not supported by sliding_log"):
        floodwall.Policy("log", (10, 60), algorithm="sliding_log", max_debt=1)


def test_threads_reserving_and_settling_on_one_key_charge_the_sum_of_actual_costs(storage):
    limiter = limiter_on(storage)
    policy = floodwall.Policy("big", (1_000_000, 3_600), algorithm="fixed_window")
    totals = []

    def work(thread: int) -> None:
        total = 0
        for n in range(40):
            estimate, actual = 1 + (thread * 7 + n) % 30, (thread * 3 + n * 11) % 50
            with limiter.reserve(policy, "shared", estimate) as reservation:
                assert reservation.allowed
                reservation.settle(actual)
            total += actual
        totals.append(total)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert limiter.peek(policy, "shared").remaining == 1_000_000 - sum(totals)


def test_the_awaitable_twins_charge_and_settle(storage):
    limiter = limiter_on(storage)
    policy = tokens()

    async def main() -> None:
        reservation = await limiter.areserve(policy, "async", 10)
        verdict = await limiter.asettle(reservation, 30)
        assert verdict.decisions[0].remaining == 970
        charged = await limiter.adebit(policy, "async", 1_000)
        assert (charged.remaining, charged.debt) == (0, 30)

    asyncio.run(main())
