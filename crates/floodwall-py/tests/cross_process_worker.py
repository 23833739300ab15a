"""One process of the cross-process test: 16 threads deciding on one key; prints the admitted
count. Arguments: redis URL, key prefix, algorithm, limit, attempts per thread."""

import sys
import threading

import floodwall


def main() -> None:
    url, prefix, algorithm, limit, attempts = sys.argv[1:6]
    limiter = floodwall.Limiter(url, prefix=prefix, on_error="deny", timeout=10.0)
    policy = floodwall.Policy("shared", (int(limit), 3600), algorithm=algorithm)
    counts = []
    start = threading.Barrier(16)

    def worker() -> None:
        start.wait()
        counts.append(sum(limiter.check(policy, "one-key").allowed for _ in range(int(attempts))))

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(sum(counts))


if __name__ == "__main__":
    main()
