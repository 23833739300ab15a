"""Blocks and lists made through a floodwall service's admin API apply to Python limiters on the
same Redis, within about a second: the service and the Python processes agree."""

from __future__ import annotations

import http.client
import json
import time

import floodwall

from conftest import Floodwall, unique_prefix


def admin(service: Floodwall, method: str, path: str, body: dict | None = None) -> int:
    host, port = service.admin_address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    payload = json.dumps(body) if body is not None else None
    headers = {"content-type": "application/json"} if body is not None else {}
    connection.request(method, path, payload, headers)
    response = connection.getresponse()
    response.read()
    return response.status


def test_a_block_and_a_deny_list_made_by_the_service_reach_a_python_limiter(shared_redis):
    prefix = unique_prefix()
    service = Floodwall(
        f"""
[admin]
listen = "127.0.0.1:0"

[storage]
url = "{shared_redis.url}"
prefix = "{prefix}"
timeout = "5s"

[[policy]]
name = "per-user"
algorithm = "gcra"
limit = 100
period = "1m"
"""
    )
    try:
        limiter = floodwall.Limiter(shared_redis.url, prefix=prefix, timeout=5.0)
        policy = floodwall.Policy("per-user", "100/minute", algorithm="gcra")
        assert limiter.check(policy, "tenant-9").allowed
        assert admin(service, "PUT", "/v1/blocks/per-user/tenant-9", {"duration": "10m"}) == 200
        assert admin(service, "PUT", "/v1/lists/deny/198.51.100.0%2F24") == 200
        deadline = time.monotonic() + 5
        while limiter.check(policy, "tenant-9").allowed or limiter.check(policy, "198.51.100.7").allowed:
            assert time.monotonic() < deadline, "the Python limiter never saw the block"
            time.sleep(0.05)
        blocked = limiter.check(policy, "tenant-9")
        assert not blocked.allowed
        assert blocked.retry_after > 590
        assert limiter.check(policy, "tenant-10").allowed
        # Unblocked through the service: admitted again.
        assert admin(service, "DELETE", "/v1/blocks/per-user/tenant-9") == 204
        deadline = time.monotonic() + 5
        while not limiter.check(policy, "tenant-9").allowed:
            assert time.monotonic() < deadline, "the Python limiter never saw the unblock"
            time.sleep(0.05)
    finally:
        service.close()
