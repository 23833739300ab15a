"""In-flight limits from Python: ``Limiter.lease`` and ``Limiter.alease`` hold a ``concurrency``
policy's slot for the block, never more than the limit at once across threads, and give it back
however the block ends."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import floodwall

from conftest import unique_prefix


def limiter_on(storage: str) -> floodwall.Limiter:
    options = {} if storage == "memory://" else {"prefix": unique_prefix()}
    return floodwall.Limiter(storage, **options)


def test_threads_never_hold_more_than_the_limit(storage):
    limiter = limiter_on(storage)
    policy = floodwall.Policy("exports", "3/minute", algorithm="concurrency")
    lock = threading.Lock()
    in_flight, most, admitted = 0, 0, 0

    def worker() -> None:
        nonlocal in_flight, most, admitted
        for _ in range(30):
            try:
                with limiter.lease(policy, "tenant"):
                    with lock:
                        in_flight += 1
                        admitted += 1
                        most = max(most, in_flight)
                    time.sleep(0.001)
                    with lock:
                        in_flight -= 1
            except floodwall.RateLimited as limited:
                assert limited.decision.retry_after is not None

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most == 3, f"{most} in flight at most; the limit is 3"
    assert admitted >= 3
    assert limiter.peek(policy, "tenant").remaining == 3


def test_a_block_that_raises_gives_its_slot_back(storage):
    limiter = limiter_on(storage)
    policy = floodwall.Policy("exports", "1/minute", algorithm="concurrency")
    with pytest.raises(ZeroDivisionError):
        with limiter.lease(policy, "user") as decision:
            assert decision.allowed and decision.remaining == 0
            with pytest.raises(floodwall.RateLimited):
                with limiter.lease(policy, "user"):
                    pass
            _ = 1 / 0
    with limiter.lease(policy, "user"):
        pass


def test_the_async_lease_holds_for_the_block(storage):
    limiter = limiter_on(storage)
    policy = floodwall.Policy("exports", "1/minute", algorithm="concurrency")

    async def main() -> None:
        async with limiter.alease(policy, "user"):
            with pytest.raises(floodwall.RateLimited):
                async with limiter.alease(policy, "user"):
                    pass
        async with limiter.alease(policy, "user"):
            pass

    asyncio.run(main())
