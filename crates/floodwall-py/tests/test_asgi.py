"""The ASGI middleware with Starlette, driven by httpx: the same answers as the Rust layer."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import floodwall
from floodwall.asgi import RateLimitMiddleware
from floodwall.testing import ManualClock

from conftest import RedisServer, unique_prefix
from http_checks import assert_allowed, assert_denied


async def hello(request):
    return PlainTextResponse("Hello, World!")


async def fails(request):
    return PlainTextResponse("broken", status_code=500)


def app_with(**options) -> Starlette:
    app = Starlette(routes=[Route("/", hello), Route("/health", hello), Route("/fails", fails)])
    options.setdefault("default_limits", [floodwall.Policy("per-ip", "10/minute", algorithm="fixed_window")])
    app.add_middleware(RateLimitMiddleware, **options)
    return app


def run(app, requests, client=("127.0.0.1", 50000)):
    async def main():
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            return [await http.request(method, path, headers=headers) for method, path, headers in requests]

    return asyncio.run(main())


def test_ten_requests_then_429_with_the_rust_layers_answer():
    responses = run(app_with(), [("GET", "/", {})] * 11)
    for n, response in enumerate(responses[:10]):
        assert response.status_code == 200 and response.text == "Hello, World!"
        assert_allowed(response.headers, "per-ip", 10, 9 - n)
    denied = responses[10]
    assert_denied(denied.status_code, denied.headers, denied.content, "per-ip", 10, 60)


def test_exempt_paths_and_custom_keys():
    app = app_with(exempt_paths=["/health"], key=lambda scope: dict(scope["headers"]).get(b"x-user", b"anon"))
    responses = run(app, [("GET", "/health", {})] * 12 + [("GET", "/", {"X-User": "ann"})] * 11 + [("GET", "/", {"X-User": "bob"})])
    assert all(r.status_code == 200 and "ratelimit" not in r.headers for r in responses[:12])
    assert [r.status_code for r in responses[12:]] == [200] * 10 + [429, 200]


def test_a_request_without_its_key_gets_the_rust_layers_401():
    app = app_with(key=lambda scope: dict(scope["headers"]).get(b"x-user"))
    missing, present = run(app, [("GET", "/", {}), ("GET", "/", {"X-User": "ann"})])
    assert missing.status_code == 401
    assert missing.headers["content-type"] == "application/problem+json"
    assert present.status_code == 200


def test_spoofed_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy():
    forged = [("GET", "/", {"X-Forwarded-For": f"198.51.100.{n}"}) for n in range(11)]
    assert [r.status_code for r in run(app_with(), forged)] == [200] * 10 + [429]
    behind_proxy = [("GET", "/", {"X-Forwarded-For": f"203.0.113.{n}, 198.51.100.1"}) for n in range(10)]
    behind_proxy += [("GET", "/", {"X-Forwarded-For": "198.51.100.1"}), ("GET", "/", {"X-Forwarded-For": "198.51.100.2"})]
    codes = [r.status_code for r in run(app_with(trusted_proxies=["127.0.0.1"]), behind_proxy)]
    assert codes == [200] * 10 + [429, 200]


def test_refund_when_gives_failed_requests_back():
    app = app_with(refund_when=lambda status: status >= 500)
    responses = run(app, [("GET", "/fails", {})] * 15 + [("GET", "/", {})] * 11)
    assert all(r.status_code == 500 for r in responses[:15])
    assert [r.status_code for r in responses[15:]] == [200] * 10 + [429]


def test_a_failure_that_outlives_its_window_is_not_refunded_into_the_next():
    # Admitted 10 ms before its minute window ends, the failing request answers after two
    # requests have used up the next window; refunding it then would give that window a third.
    clock = ManualClock(1_700_000_039.99)
    admitted, answer = asyncio.Event(), asyncio.Event()

    async def slow_failure(request):
        admitted.set()
        await answer.wait()
        return PlainTextResponse("broken", status_code=500)

    app = Starlette(routes=[Route("/", hello), Route("/slow-fails", slow_failure)])
    app.add_middleware(
        RateLimitMiddleware,
        limiter=floodwall.Limiter(clock=clock),
        default_limits=[floodwall.Policy("per-ip", "2/minute", algorithm="fixed_window")],
        refund_when=lambda status: status >= 500,
    )

    async def main():
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            failing = asyncio.create_task(http.get("/slow-fails"))
            await admitted.wait()
            clock.advance(1.0)
            next_window = [(await http.get("/")).status_code for _ in range(2)]
            await asyncio.sleep(0.05)  # longer than the 10 ms its window had left
            answer.set()
            failed = (await failing).status_code
            return next_window, failed, (await http.get("/")).status_code

    assert asyncio.run(main()) == ([200, 200], 500, 429)


@pytest.mark.parametrize("on_error", ["allow", "deny"])
def test_redis_killed_is_answered_per_on_error(redis: RedisServer, on_error):
    app = app_with(storage=redis.url, on_error=on_error, prefix=unique_prefix(), timeout=0.2)
    assert run(app, [("GET", "/", {})])[0].status_code == 200
    redis.kill()
    response = run(app, [("GET", "/", {})])[0]
    if on_error == "deny":
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        assert json.loads(response.content)["violated-policies"] == ["per-ip"]
    else:
        assert response.status_code == 200 and "ratelimit-policy" in response.headers
