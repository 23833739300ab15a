"""One Limiter used from 64 threads and from asyncio at once: exactly the limit admitted."""

from __future__ import annotations

import asyncio
import threading

import pytest

import floodwall

from conftest import unique_prefix


@pytest.mark.parametrize("algorithm", ["fixed_window", "sliding_log", "gcra"])
def test_threads_and_asyncio_at_once_admit_exactly_the_limit(storage, algorithm):
    # Failing closed with a generous deadline: an answer given without the store (failing open
    # past a 50 ms deadline on a busy machine) would make the count meaningless, so none is.
    options = {} if storage == "memory://" else {"prefix": unique_prefix(), "timeout": 10.0}
    limiter = floodwall.Limiter(storage, on_error="deny", **options)
    policy = floodwall.Policy("shared", (300, 3600), algorithm=algorithm)
    admitted = []
    lock = threading.Lock()
    start = threading.Barrier(65)

    def worker():
        start.wait()
        count = sum(limiter.check(policy, "one-key").allowed for _ in range(10))
        with lock:
            admitted.append(count)

    async def tasks():
        start.wait()
        decisions = await asyncio.gather(*(limiter.acheck(policy, "one-key") for _ in range(200)))
        with lock:
            admitted.append(sum(d.allowed for d in decisions))

    threads = [threading.Thread(target=worker) for _ in range(64)]
    threads.append(threading.Thread(target=lambda: asyncio.run(tasks())))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # 640 + 200 attempts on one key.
    assert sum(admitted) == 300
