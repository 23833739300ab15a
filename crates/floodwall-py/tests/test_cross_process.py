"""Python processes and the floodwall binary on one Redis share one exact count."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import floodwall

from conftest import Floodwall, unique_prefix

ALGORITHMS = ["fixed_window", "sliding_log", "sliding_window", "token_bucket", "gcra", "concurrency"]
WORKER = Path(__file__).with_name("cross_process_worker.py")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_four_python_processes_and_the_binary_admit_exactly_the_limit(shared_redis, algorithm):
    prefix, limit = unique_prefix(), 150
    service = Floodwall(
        f"""
[storage]
url = "{shared_redis.url}"
prefix = "{prefix}"
timeout = "10s"
on_error = "deny"

[[policy]]
name = "shared"
algorithm = "{algorithm}"
limit = {limit}
period = "1h"
"""
    )
    try:
        host, port = service.address.rsplit(":", 1)
        # 4 processes x 16 threads x 4 attempts, and 8 HTTP clients x 8 attempts: 320 in all.
        workers = [
            subprocess.Popen(
                [sys.executable, str(WORKER), shared_redis.url, prefix, algorithm, str(limit), "4"],
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        http_admitted = []
        lock = threading.Lock()

        def http_client() -> None:
            connection = http.client.HTTPConnection(host, int(port), timeout=30)
            admitted = 0
            for _ in range(8):
                body = json.dumps({"policy": "shared", "key": "one-key"})
                connection.request("POST", "/v1/check", body, {"content-type": "application/json"})
                response = connection.getresponse()
                answer = json.loads(response.read())
                assert response.status in (200, 429), answer
                assert answer["allowed"] is (response.status == 200)
                admitted += answer["allowed"]
            with lock:
                http_admitted.append(admitted)

        clients = [threading.Thread(target=http_client) for _ in range(8)]
        for client in clients:
            client.start()
        for client in clients:
            client.join()
        python_admitted = []
        for worker in workers:
            out, _ = worker.communicate(timeout=120)
            assert worker.returncode == 0
            python_admitted.append(int(out.strip()))
        assert len(http_admitted) == 8
        assert sum(python_admitted) + sum(http_admitted) == limit

        # One count, seen from both sides: what Python spends, the binary sees, and back.
        limiter = floodwall.Limiter(shared_redis.url, prefix=prefix, on_error="deny", timeout=10.0)
        policy = floodwall.Policy("shared", (limit, 3600), algorithm=algorithm)
        assert limiter.check(policy, "proof", cost=limit - 1).remaining == 1
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        body = json.dumps({"policy": "shared", "key": "proof", "cost": 1})
        connection.request("POST", "/v1/check", body, {"content-type": "application/json"})
        response = connection.getresponse()
        assert (response.status, json.loads(response.read())["remaining"]) == (200, 0)
        assert not limiter.peek(policy, "proof").allowed
    finally:
        service.close()
