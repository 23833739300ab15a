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


def test_python_processes_and_the_check_api_settle_exactly_the_actual_costs(shared_redis):
    """Two Python processes reserving and settling through the library, and HTTP clients
    reserving through /v1/check and settling through /v1/settle, on one key of one Redis: the
    key is charged exactly the sum of the actual costs, whatever the estimates."""
    prefix, limit, period = unique_prefix(), 1_000_000, 366 * 86_400
    service = Floodwall(
        f"""
[storage]
url = "{shared_redis.url}"
prefix = "{prefix}"
timeout = "10s"
on_error = "deny"

[[policy]]
name = "shared"
algorithm = "fixed_window"
limit = {limit}
period = "366d"
"""
    )
    try:
        host, port = service.address.rsplit(":", 1)
        workers = [
            subprocess.Popen(
                [sys.executable, str(WORKER), shared_redis.url, prefix, "fixed_window", str(limit), "5",
                 str(period), "settle"],
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        http_actuals = []
        lock = threading.Lock()

        def http_client(client: int) -> None:
            connection = http.client.HTTPConnection(host, int(port), timeout=30)
            actuals = 0

            def post(path, body):
                connection.request("POST", path, json.dumps(body), {"content-type": "application/json"})
                response = connection.getresponse()
                return response.status, json.loads(response.read())

            for n in range(10):
                estimate, actual = 1 + (client * 7 + n * 3) % 50, (client * 5 + n * 13) % 70
                status, reserved = post("/v1/check", {"policy": "shared", "key": "one-key", "cost": estimate,
                                                      "reserve": True})
                assert status == 200 and reserved["reservation"], reserved
                status, settled = post("/v1/settle", {"reservation": reserved["reservation"], "cost": actual})
                assert status == 200, settled
                actuals += actual
            with lock:
                http_actuals.append(actuals)

        clients = [threading.Thread(target=http_client, args=(c,)) for c in range(8)]
        for client in clients:
            client.start()
        for client in clients:
            client.join()
        python_actuals = []
        for worker in workers:
            out, _ = worker.communicate(timeout=120)
            assert worker.returncode == 0
            python_actuals.append(int(out.strip()))
        assert len(http_actuals) == 8
        limiter = floodwall.Limiter(shared_redis.url, prefix=prefix, on_error="deny", timeout=10.0)
        policy = floodwall.Policy("shared", (limit, period), algorithm="fixed_window")
        assert limiter.peek(policy, "one-key").remaining == limit - sum(python_actuals) - sum(http_actuals)
    finally:
        service.close()
