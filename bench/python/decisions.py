#!/usr/bin/env python3
"""Decisions per second from Python: floodwall beside `limits`, one JSON line per case.

    python decisions.py --redis redis://127.0.0.1:PORT/0 [--duration 5]

Every case decides a random key of 10 000 per call under 10 000 per minute per key (nothing is
denied at these rates), after touching every key once, in one process:

- floodwall: memory and Redis; 1 thread, 8 threads, and asyncio with 64 calls in flight; for
  fixed_window and sliding_log (the families of limits' FixedWindow and MovingWindow).
- the harness alone, with a decision that does nothing (the ceiling of any ratio here);
- limits 5.x: FixedWindowRateLimiter and MovingWindowRateLimiter on MemoryStorage and on
  RedisStorage (sync, 1 thread and 8 threads) and limits.aio on Redis with 64 tasks.
"""

import argparse
import asyncio
import json
import random
import threading
import time

KEYS = 10_000
SEQUENCE = 1 << 16
# Latency percentiles come from one call in SAMPLE (of every case alike).
SAMPLE = 16


def keys(seed):
    rng = random.Random(seed)
    return [str(rng.randrange(KEYS)) for _ in range(SEQUENCE)]


def percentile(samples, q):
    if not samples:
        return float("nan")
    samples.sort()
    return samples[min(len(samples) - 1, int(q * len(samples)))] / 1000.0


def report(case, n, elapsed, latencies, denied, **extra):
    line = {
        "bench": "python",
        "case": case,
        "ops_per_s": round(n / elapsed),
        "p50_us": round(percentile(latencies, 0.5), 1),
        "p99_us": round(percentile(latencies, 0.99), 1),
        "denied": denied,
        "n": n,
    }
    line.update(extra)
    print(json.dumps(line), flush=True)


def run_threads(case, decide, threads, duration):
    for k in range(KEYS):
        decide(str(k))
    counts, latencies, denied = [], [], [0]
    lock = threading.Lock()
    start = threading.Barrier(threads + 1)
    deadline = [0.0]

    def worker(w):
        ks = keys(w)
        mask = SEQUENCE - 1
        own, n, no = [], 0, 0
        clock = time.perf_counter_ns
        start.wait()
        while time.perf_counter() < deadline[0]:
            for _ in range(8):
                # One call in SAMPLE is timed; the others run bare, so that the harness costs
                # the loop alone and the throughput is the library's.
                t = clock()
                if not decide(ks[n & mask]):
                    no += 1
                own.append(clock() - t)
                n += 1
                for _ in range(SAMPLE - 1):
                    if not decide(ks[n & mask]):
                        no += 1
                    n += 1
        with lock:
            counts.append(n)
            latencies.extend(own)
            denied[0] += no

    pool = [threading.Thread(target=worker, args=(w,)) for w in range(threads)]
    for thread in pool:
        thread.start()
    began = time.perf_counter()
    deadline[0] = began + duration
    start.wait()
    for thread in pool:
        thread.join()
    report(case, sum(counts), time.perf_counter() - began, latencies, denied[0], threads=threads)


def run_async(case, decide, in_flight, duration):
    async def main():
        for k in range(0, KEYS, in_flight):
            await asyncio.gather(*(decide(str(j)) for j in range(k, min(k + in_flight, KEYS))))
        latencies, totals = [], {"n": 0, "denied": 0}
        began = time.perf_counter()
        deadline = began + duration

        async def task(t):
            ks, mask, n, no = keys(t), SEQUENCE - 1, 0, 0
            clock = time.perf_counter_ns
            while time.perf_counter() < deadline:
                start = clock()
                if not await decide(ks[n & mask]):
                    no += 1
                latencies.append(clock() - start)
                n += 1
            totals["n"] += n
            totals["denied"] += no

        await asyncio.gather(*(task(t) for t in range(in_flight)))
        report(case, totals["n"], time.perf_counter() - began, latencies, totals["denied"], in_flight=in_flight)

    asyncio.run(main())


def harness_case(args):
    """The loop alone, deciding nothing: the most calls per second any library can show here,
    and so the largest ratio two libraries can show."""

    def decide(key):
        return True

    run_threads("harness-noop-1thread", decide, 1, args.duration)


def floodwall_cases(args):
    import floodwall

    for storage_name, url in (("memory", "memory://"), ("redis", args.redis)):
        options = {} if url == "memory://" else {"prefix": f"bench{time.monotonic_ns()}", "timeout": 1.0}
        limiter = floodwall.Limiter(url, on_error="deny", **options)
        for algorithm in ("fixed_window", "sliding_log"):
            name = f"floodwall-{storage_name}-{algorithm}"
            # A policy of its own per case, so that no case inherits another's counts.
            for case, threads in (("1thread", 1), ("8threads", 8), ("asyncio64", 0)):
                policy = floodwall.Policy(f"{algorithm}-{case}", "10000/minute", algorithm=algorithm)

                def decide(key, policy=policy):
                    return limiter.check(policy, key).allowed

                async def adecide(key, policy=policy):
                    return (await limiter.acheck(policy, key)).allowed

                if threads:
                    run_threads(f"{name}-{case}", decide, threads, args.duration)
                else:
                    run_async(f"{name}-{case}", adecide, 64, args.duration)


def limits_cases(args):
    import limits
    from limits import parse, storage, strategies
    from limits.aio import storage as astorage, strategies as astrategies

    item = parse("10000/minute")
    host_port = args.redis.split("//", 1)[1].rsplit("/", 1)[0]
    for storage_name, store in (("memory", storage.MemoryStorage()), ("redis", storage.RedisStorage(f"redis://{host_port}"))):
        for family, cls in (("fixed_window", strategies.FixedWindowRateLimiter), ("sliding_log", strategies.MovingWindowRateLimiter)):
            limiter = cls(store)
            name = f"limits-{storage_name}-{family}"
            for case, threads in (("1thread", 1), ("8threads", 8)):
                if storage_name == "memory" and threads > 1:
                    continue

                def decide(key, limiter=limiter, namespace=f"{name}-{case}"):
                    return limiter.hit(item, namespace, key)

                run_threads(f"{name}-{case}", decide, threads, args.duration)
    for family, cls in (("fixed_window", astrategies.FixedWindowRateLimiter), ("sliding_log", astrategies.MovingWindowRateLimiter)):
        limiter = cls(astorage.RedisStorage(f"async+redis://{host_port}"))
        name = f"limits-redis-{family}-asyncio64"

        async def adecide(key, limiter=limiter, name=name):
            return await limiter.hit(item, name, key)

        run_async(name, adecide, 64, args.duration)
    print(json.dumps({"bench": "python", "case": "versions", "limits": limits.__version__}), flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", required=True)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--only", choices=["floodwall", "limits"], default=None)
    args = parser.parse_args()
    if args.only is None:
        harness_case(args)
    if args.only in (None, "floodwall"):
        floodwall_cases(args)
    if args.only in (None, "limits"):
        limits_cases(args)


if __name__ == "__main__":
    main()
