"""Costs known after the answer in Flask and ASGI apps (``cost_from_response``): a request
admitted on its estimate is charged what its response reports, into debt past what is left,
and given back the difference when less; on the memory store and on a real Redis."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import flask
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import floodwall
from floodwall.asgi import RateLimitMiddleware
from floodwall.flask import FloodWall
from floodwall.testing import ManualClock

from conftest import RedisServer, unique_prefix


def tokens() -> floodwall.Policy:
    """100 tokens, one back a second, up to 100 owed."""
    return floodwall.Policy("tokens", "100 per 100 seconds", algorithm="token_bucket", max_debt=100)


def usage_header(response: flask.Response):
    reported = response.headers.get("x-usage")
    return None if reported is None else int(reported)


def flask_app(limiter: floodwall.Limiter) -> flask.Flask:
    app = flask.Flask("metered")
    fw = FloodWall(app, limiter=limiter)

    @app.get("/complete")
    @fw.limit(tokens(), cost=lambda: int(flask.request.args.get("estimate", "1")),
              cost_from_response=usage_header)
    def complete():
        return "done", 200, {"x-usage": flask.request.args.get("usage", "")} if flask.request.args.get("usage") else {}

    return app


def test_flask_charges_the_reported_usage_into_debt_until_refill_pays_it():
    clock = ManualClock()
    client = flask_app(floodwall.Limiter(clock=clock)).test_client()
    assert client.get("/complete?usage=150").status_code == 200
    denied = client.get("/complete")
    assert denied.status_code == 429
    assert denied.headers["retry-after"] == "51"  # 50 owed, then the request's one token
    assert denied.json["debt"] == {"tokens": 50}
    clock.advance(50)
    assert client.get("/complete").status_code == 429
    clock.advance(1)
    assert client.get("/complete").status_code == 200


def test_flask_gives_back_what_the_estimate_overstated():
    clock = ManualClock()
    limiter = floodwall.Limiter(clock=clock)
    client = flask_app(limiter).test_client()
    assert client.get("/complete?estimate=60&usage=10").status_code == 200
    # Exactly 90 left: the 60 estimated were not kept.
    assert client.get("/complete?estimate=91").status_code == 429
    assert client.get("/complete?estimate=90").status_code == 200


def asgi_app(limiter: floodwall.Limiter) -> Starlette:
    async def complete(request: Request):
        # A streamed answer's usage is known at its end: the app leaves it in the scope.
        request.state.tokens = int(request.query_params.get("usage", "0")) or None
        return PlainTextResponse("done")

    app = Starlette(routes=[Route("/complete", complete)])
    app.add_middleware(
        RateLimitMiddleware,
        limiter=limiter,
        default_limits=[tokens()],
        cost=lambda scope: int(dict(scope["headers"]).get(b"x-estimate", b"1")),
        cost_from_response=lambda scope, status, headers: scope["state"].get("tokens"),
    )
    return app


def run(app, requests):
    async def main():
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            return [await http.get(path, headers=headers) for path, headers in requests]

    return asyncio.run(main())


def test_asgi_charges_the_usage_the_app_left_in_the_scope():
    clock = ManualClock()
    app = asgi_app(floodwall.Limiter(clock=clock))
    settled, denied = run(app, [("/complete?usage=150", {}), ("/complete", {})])
    assert settled.status_code == 200
    assert denied.status_code == 429 and denied.json()["debt"] == {"tokens": 50}
    clock.advance(51)
    assert run(app, [("/complete", {})])[0].status_code == 200


def test_asgi_on_redis_settles_exactly():
    redis = RedisServer()
    try:
        limiter = floodwall.Limiter(redis.url, prefix=unique_prefix())
        app = asgi_app(limiter)
        answers = run(app, [
            ("/complete?usage=10", {"x-estimate": "60"}),  # 50 given back
            ("/complete?usage=30", {"x-estimate": "20"}),  # 10 more charged
            ("/complete", {"x-estimate": "60"}),  # 40 used: exactly the 60 left
            ("/complete", {"x-estimate": "1"}),  # nothing left (a token takes a second)
        ])
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
    finally:
        redis.close()


README = Path(__file__).resolve().parents[3] / "README.md"


def readme_block(after: str) -> str:
    """The first ```python block of the README after the line containing ``after``."""
    text = README.read_text()
    start = text.index("```python\n", text.index(after)) + len("```python\n")
    return text[start:text.index("```", start)]


def test_the_readmes_fastapi_gateway_runs_as_written(redis: RedisServer):
    code = readme_block("From FastAPI:").replace("redis://127.0.0.1:6379/0", redis.url)
    reported = {"org-1": 150_000, "org-2": 10}

    async def call_the_model(body):
        # A stand-in for the model server: the usage it reports, and the completion.
        tokens = reported[body["org"]]
        return SimpleNamespace(usage=SimpleNamespace(total_tokens=tokens), body={"text": "…"})

    namespace = {"call_the_model": call_the_model}
    exec(compile(code, str(README), "exec"), namespace)

    async def main():
        transport = httpx.ASGITransport(app=namespace["app"], client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            async def complete(org):
                return await http.post("/v1/chat/completions", json={"org": org}, headers={"x-org-id": org})

            answers = [await complete("org-1"), await complete("org-1"), await complete("org-2")]
            missing = await http.post("/v1/chat/completions", json={"org": "org-1"})
            return answers, missing

    (first, owed, other), missing = asyncio.run(main())
    assert first.status_code == 200 and first.json() == {"text": "…"}
    # 150 000 tokens used of 100 000: 50 000 owed, and the organisation refused until refill.
    assert owed.status_code == 429
    # What refill has paid back in the milliseconds since (1 667 tokens a second).
    assert 49_000 <= owed.json()["debt"]["org-tokens"] <= 50_000
    assert 29 <= int(owed.headers["retry-after"]) <= 31
    assert other.status_code == 200, "another organisation is not affected"
    assert missing.status_code == 401, "no organisation, no key"
