"""floodwall's RateLimitService behind a real Envoy 1.40 (docs/testing.md: K11-K17): what
Envoy's own ratelimit filter does with floodwall's answers, counted exactly, healthy, with
floodwall down, and with Redis killed or hung under Envoy's default 20 ms timeout."""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List

import pytest

from conftest import Stack

REMOTE = [{"actions": [{"remote_address": {}}]}]


def rule(descriptor: List[str], policies: List[str]) -> str:
    return (
        "[[rls.rule]]\ndomain = \"edge\"\n"
        f"descriptor = {json.dumps(descriptor)}\npolicies = {json.dumps(policies)}\n"
    )


def policy(name: str, limit: int, period: str = "1h", algorithm: str = "gcra") -> str:
    # GCRA by default: its resets count from each key's own requests, so no test straddles a
    # window boundary on the clock.
    return (
        f"[[policy]]\nname = \"{name}\"\nalgorithm = \"{algorithm}\"\n"
        f"limit = {limit}\nperiod = \"{period}\"\n"
    )


def config(*parts: str, storage: str = "") -> str:
    return storage + "[rls]\nlisten = \"127.0.0.1:RLS_PORT\"\n" + "".join(parts)


def statuses(envoy, path: str, count: int, headers: Dict[str, str] = None) -> List[int]:
    return [envoy.get(path, headers)[0] for _ in range(count)]


def remaining(headers: Dict[str, str]) -> int:
    found = re.search(r";r=(\d+)", headers["ratelimit"])
    assert found, headers
    return int(found.group(1))


def test_a_per_ip_limit_answers_exactly_n_then_floodwalls_429(stack: Stack) -> None:
    floodwall = stack.floodwall(config(policy("per-ip", 3), rule(["remote_address"], ["per-ip"])))
    envoy = stack.envoy([floodwall.rls_port], [{"prefix": "/", "rate_limits": REMOTE}])
    for left in (2, 1, 0):
        status, headers, body = envoy.get("/")
        assert status == 200 and body == b"ok"
        # RateLimit headers on allowed answers too.
        assert headers["ratelimit-policy"] == '"per-ip";q=3;w=3600', headers
        assert remaining(headers) == left
    status, headers, body = envoy.get("/")
    assert status == 429
    assert headers["x-envoy-ratelimited"] == "true"
    assert headers["content-type"] == "application/problem+json"
    assert 1 <= int(headers["retry-after"]) <= 3600
    assert remaining(headers) == 0
    problem = json.loads(body)
    assert problem["violated-policies"] == ["per-ip"], problem
    assert problem["status"] == 429
    assert problem["type"].endswith("quota-exceeded"), problem


def test_per_tier_descriptors_pick_each_tiers_policy(stack: Stack) -> None:
    floodwall = stack.floodwall(config(
        policy("free-tier", 1, "1m", "gcra"), policy("pro-tier", 3, "1m", "gcra"),
        rule(["plan=free", "user"], ["free-tier"]), rule(["plan=pro", "user"], ["pro-tier"]),
    ))
    tiers = [{"actions": [
        {"request_headers": {"header_name": "x-plan", "descriptor_key": "plan"}},
        {"request_headers": {"header_name": "x-user", "descriptor_key": "user"}},
    ]}]
    envoy = stack.envoy([floodwall.rls_port], [{"prefix": "/", "rate_limits": tiers}])
    free = {"x-plan": "free", "x-user": "ann"}
    pro = {"x-plan": "pro", "x-user": "bob"}
    assert statuses(envoy, "/", 3, free) == [200, 429, 429]
    assert statuses(envoy, "/", 5, pro) == [200, 200, 200, 429, 429]


def test_two_rate_limits_are_decided_all_or_nothing(stack: Stack) -> None:
    floodwall = stack.floodwall(config(
        policy("per-ip", 5), policy("per-user", 2),
        rule(["remote_address"], ["per-ip"]), rule(["user"], ["per-user"]),
    ))
    both = REMOTE + [{"actions": [{"request_headers": {"header_name": "x-user", "descriptor_key": "user"}}]}]
    envoy = stack.envoy([floodwall.rls_port], [{"prefix": "/", "rate_limits": both}])
    # Requests denied by per-user take nothing from per-ip: 2 + 2 + 1 = 5 admitted in all.
    assert statuses(envoy, "/", 4, {"x-user": "a"}) == [200, 200, 429, 429]
    assert statuses(envoy, "/", 2, {"x-user": "b"}) == [200, 200]
    assert statuses(envoy, "/", 2, {"x-user": "c"}) == [200, 429]


ALGORITHMS = ["fixed_window", "sliding_window", "sliding_log", "gcra", "token_bucket"]


def test_two_instances_behind_round_robin_on_one_redis_are_exact(stack: Stack) -> None:
    redis = stack.redis()
    # A generous deadline (Envoy's too): a call that timed out would be admitted uncounted.
    storage = f"[storage]\nurl = \"{redis.url}\"\ntimeout = \"1s\"\n"
    parts = []
    routes = []
    for algorithm in ALGORITHMS:
        parts.append(policy(algorithm, 10, "1h", algorithm))
        parts.append(rule([f"generic_key={algorithm}", "remote_address"], [algorithm]))
        routes.append({"prefix": f"/{algorithm}", "rate_limits": [{"actions": [
            {"generic_key": {"descriptor_value": algorithm}}, {"remote_address": {}}]}]})
    text = config(*parts, storage=storage)
    first, second = stack.floodwall(text), stack.floodwall(text)
    envoy = stack.envoy([first.rls_port, second.rls_port], routes, timeout="1s")
    for algorithm in ALGORITHMS:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: envoy.get(f"/{algorithm}")[0], range(30)))
        assert answers.count(200) == 10, (algorithm, answers)
        assert answers.count(429) == 20, (algorithm, answers)
    # Both instances answered: round robin spread the calls.
    assert envoy.stat("cluster.floodwall.upstream_rq_completed") >= 150


@pytest.mark.parametrize("deny", [False, True])
def test_failure_mode_deny_decides_when_floodwall_is_down(stack: Stack, deny: bool) -> None:
    floodwall = stack.floodwall(config(policy("per-ip", 100), rule(["remote_address"], ["per-ip"])))
    envoy = stack.envoy([floodwall.rls_port], [{"prefix": "/", "rate_limits": REMOTE}],
                        failure_mode_deny=deny)
    assert envoy.get("/")[0] == 200
    floodwall.stop()
    status, _, _ = envoy.get("/")
    assert status == (500 if deny else 200)
    assert envoy.stat("cluster.upstream.ratelimit.error") >= 1


def counted(envoy, path: str) -> bool:
    """Whether two requests in a row are counted by Redis (RateLimit r decreases); a fail-open
    answer carries no RateLimit header, since nothing was counted."""
    first, second = envoy.get(path)[1], envoy.get(path)[1]
    if "ratelimit" not in first or "ratelimit" not in second:
        return False
    return remaining(second) < remaining(first)


@pytest.mark.parametrize("fault", ["killed", "hung"])
@pytest.mark.parametrize("storage_timeout", ["15ms", "50ms"])
def test_redis_down_under_envoys_default_timeout_then_recovered(
    stack: Stack, fault: str, storage_timeout: str
) -> None:
    redis = stack.redis()
    storage = f"[storage]\nurl = \"{redis.url}\"\ntimeout = \"{storage_timeout}\"\n"
    floodwall = stack.floodwall(config(
        # One unit per 17 s: two requests in a row always lower what remains.
        policy("per-ip", 10000, "2d"), rule(["remote_address"], ["per-ip"]), storage=storage,
    ))
    # Envoy's defaults: a 20 ms timeout, failure_mode_deny false.
    envoy = stack.envoy([floodwall.rls_port], [{"prefix": "/", "rate_limits": REMOTE}])
    assert counted(envoy, "/")
    if fault == "killed":
        redis.kill()
    else:
        redis.pause()
    # floodwall answers each call before Envoy's deadline, per on_error (allow): Envoy never
    # sees an error or a timeout, even with a storage timeout longer than its own.
    answered = [envoy.get("/") for _ in range(40)]
    assert [status for status, _, _ in answered] == [200] * 40
    assert all("ratelimit" not in headers for _, headers, _ in answered[3:]), "counted while down"
    assert envoy.stat("cluster.upstream.ratelimit.error") == 0, floodwall.logged()
    if fault == "killed":
        redis.start()
    else:
        redis.resume()
    deadline = time.monotonic() + 3
    while not counted(envoy, "/"):
        assert time.monotonic() < deadline, "Redis is back but floodwall never counts again"
        time.sleep(0.02)


def test_hits_addend_from_a_request_header(stack: Stack) -> None:
    floodwall = stack.floodwall(config(policy("units", 10), rule(["remote_address"], ["units"])))
    # Envoy 1.40 reads hits_addend from RateLimitPerRoute.rate_limits (not RouteAction's).
    per_route = {"rate_limits": [{"actions": [{"remote_address": {}}],
                                  "hits_addend": {"format": "%REQ(x-cost)%"}}]}
    envoy = stack.envoy([floodwall.rls_port], [{"prefix": "/", "per_route": per_route}])
    cost = lambda n: {"x-cost": str(n)}  # noqa: E731
    assert [envoy.get("/", cost(n))[0] for n in (4, 4, 4, 2, 1)] == [200, 200, 429, 200, 429]
    # No cost header: Envoy drops the descriptor, so the request is not limited at all.
    status, headers, _ = envoy.get("/")
    assert status == 200 and "ratelimit" not in headers


def settling_rule(descriptor: List[str], policies: List[str]) -> str:
    return rule(descriptor, policies) + "settle = true\n"


#: What Envoy sends, per request: before it, a peek (0 units) at what is left, denied once the
#: key owes; after the response, the usage the upstream reported, under a marker entry that
#: the settling rule pins.
SETTLED_PER_ROUTE = {"rate_limits": [
    {"actions": [{"remote_address": {}}], "hits_addend": {"number": 0}},
    {"actions": [{"generic_key": {"descriptor_key": "usage", "descriptor_value": "reported"}},
                 {"remote_address": {}}],
     "apply_on_stream_done": True, "hits_addend": {"format": "%RESP(x-usage)%"}},
]}


def test_apply_on_stream_done_counts_the_reported_usage(stack: Stack) -> None:
    floodwall = stack.floodwall(config(
        policy("tokens", 100), rule(["remote_address"], ["tokens"]),
        settling_rule(["usage=reported", "remote_address"], ["tokens"]),
    ))
    envoy = stack.envoy([floodwall.rls_port], [{"prefix": "/", "per_route": SETTLED_PER_ROUTE}])
    for usage in (60, 30, 10):
        assert envoy.get("/", {"x-report-usage": str(usage)})[0] == 200
        time.sleep(0.1)  # the stream-done call follows the response
    assert envoy.get("/", {"x-report-usage": "1"})[0] == 429


def test_a_usage_past_what_is_left_is_owed_and_denies_until_refill_pays_it(stack: Stack) -> None:
    # 100 tokens, 10 a second back.
    floodwall = stack.floodwall(config(
        policy("tokens", 100, "10s", "token_bucket"), rule(["remote_address"], ["tokens"]),
        settling_rule(["usage=reported", "remote_address"], ["tokens"]),
    ))
    envoy = stack.envoy([floodwall.rls_port], [{"prefix": "/", "per_route": SETTLED_PER_ROUTE}])
    # 150 tokens used when 100 were left: the stream-done call charges them all, 50 owed.
    assert envoy.get("/", {"x-report-usage": "150"})[0] == 200
    settled = time.monotonic()
    time.sleep(0.2)
    status, headers, body = envoy.get("/", {"x-report-usage": "1"})
    assert status == 429, "the usage past what was left was lost"
    # The 429 waits for the debt: 50 owed at 10 a second, about 5 s.
    assert 4 <= int(headers["retry-after"]) <= 6, headers
    while envoy.get("/", {"x-report-usage": "0"})[0] == 429:
        assert time.monotonic() - settled < 8, "still denied long after refill paid the debt"
        time.sleep(0.2)
    assert time.monotonic() - settled >= 4.8, "admitted before the debt was paid"
    assert envoy.stat("cluster.upstream.ratelimit.error") == 0


def test_draft_03_x_ratelimit_headers(stack: Stack) -> None:
    # GCRA (the default here): a fixed window's reset is the time to the next minute on the
    # clock, under a second (Envoy shows 0) for one request in 60.
    floodwall = stack.floodwall(config(policy("per-ip", 3, "1m"), rule(["remote_address"], ["per-ip"])))
    envoy = stack.envoy([floodwall.rls_port], [{"prefix": "/", "rate_limits": REMOTE}],
                        enable_x_ratelimit_headers="DRAFT_VERSION_03")
    seen = []
    for _ in range(4):
        status, headers, _ = envoy.get("/")
        seen.append((status, headers["x-ratelimit-limit"].split(",")[0],
                     headers["x-ratelimit-remaining"]))
        assert 0 < int(headers["x-ratelimit-reset"]) <= 60
    assert seen == [(200, "3", "2"), (200, "3", "1"), (200, "3", "0"), (429, "3", "0")]
