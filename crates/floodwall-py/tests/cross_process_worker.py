"""One process of the cross-process tests: 16 threads deciding on one key; prints the admitted
count. Arguments: redis URL, key prefix, algorithm, limit, attempts per thread, and
optionally a period in seconds and "settle": then each attempt reserves on an estimate and
settles at an actual cost, and the process prints the sum of the actual costs."""

import sys
import threading

import floodwall


def main() -> None:
    url, prefix, algorithm, limit, attempts = sys.argv[1:6]
    period = int(sys.argv[6]) if len(sys.argv) > 6 else 3600
    settling = len(sys.argv) > 7 and sys.argv[7] == "settle"
    limiter = floodwall.Limiter(url, prefix=prefix, on_error="deny", timeout=10.0)
    policy = floodwall.Policy("shared", (int(limit), period), algorithm=algorithm)
    counts = []
    start = threading.Barrier(16)

    def settle(thread: int) -> int:
        actuals = 0
        for n in range(int(attempts)):
            estimate, actual = 1 + (thread * 11 + n * 5) % 40, (thread * 3 + n * 17) % 60
            with limiter.reserve(policy, "one-key", estimate) as reservation:
                assert reservation.allowed
                reservation.settle(actual)
            actuals += actual
        return actuals

    def worker(thread: int) -> None:
        start.wait()
        if settling:
            counts.append(settle(thread))
        else:
            counts.append(sum(limiter.check(policy, "one-key").allowed for _ in range(int(attempts))))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(sum(counts))


if __name__ == "__main__":
    main()
