"""The Flask extension, through Flask's test client and a real server over a socket."""

from __future__ import annotations

import http.client
import json
import threading
import time

import flask
import pytest
from werkzeug.serving import make_server

import floodwall
from floodwall.flask import FloodWall, remote_address
from floodwall.testing import ManualClock

from conftest import RedisServer, unique_prefix
from http_checks import assert_allowed, assert_denied


def hello_app(**options) -> tuple:
    app = flask.Flask("hello")
    fw = FloodWall(app, **options)

    @app.get("/")
    @fw.limit("10/minute", name="per-ip", algorithm="fixed_window")
    def hello():
        return "Hello, World!"

    return app, fw


def test_ten_requests_then_429_with_the_rust_layers_answer():
    app, _ = hello_app()
    client = app.test_client()
    for n in range(10):
        response = client.get("/")
        assert response.status_code == 200 and response.text == "Hello, World!"
        assert_allowed(response.headers, "per-ip", 10, 9 - n)
    denied = client.get("/")
    assert_denied(denied.status_code, denied.headers, denied.data, "per-ip", 10, 60)


def test_a_real_server_over_a_socket_answers_the_same():
    app, _ = hello_app()
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
        statuses = []
        for _ in range(11):
            connection.request("GET", "/")
            response = connection.getresponse()
            body = response.read()
            statuses.append(response.status)
        assert statuses == [200] * 10 + [429]
        assert_denied(response.status, response.headers, body, "per-ip", 10, 60)
    finally:
        server.shutdown()
        thread.join()


def test_default_limits_apply_per_route_and_exempt_routes_are_never_limited():
    app = flask.Flask("defaults")
    fw = FloodWall(app, default_limits=["2/minute"])

    @app.get("/a")
    def a():
        return "a"

    @app.get("/b")
    def b():
        return "b"

    @app.get("/health")
    @fw.exempt
    def health():
        return "ok"

    client = app.test_client()
    assert [client.get("/a").status_code for _ in range(3)] == [200, 200, 429]
    assert [client.get("/b").status_code for _ in range(3)] == [200, 200, 429]
    health = [client.get("/health") for _ in range(5)]
    assert all(r.status_code == 200 and "RateLimit" not in r.headers for r in health)


def test_a_shared_limit_is_one_count_across_endpoints():
    app = flask.Flask("shared")
    fw = FloodWall(app)

    @app.get("/x")
    @fw.shared_limit("3/minute", scope="api")
    def x():
        return "x"

    @app.get("/y")
    @fw.shared_limit("3/minute", scope="api")
    def y():
        return "y"

    client = app.test_client()
    assert [client.get(p).status_code for p in ["/x", "/y", "/x", "/y"]] == [200, 200, 200, 429]


def test_methods_cost_key_and_exempt_when():
    app = flask.Flask("options")
    fw = FloodWall(app)
    vip = {"on": False}

    @app.route("/items", methods=["GET", "POST"])
    @fw.limit("4/minute", methods=["POST"], cost=lambda: 2, key=lambda: flask.request.headers.get("X-User", "anon"),
              exempt_when=lambda: vip["on"])
    def items():
        return "ok"

    client = app.test_client()
    assert all(client.get("/items").status_code == 200 for _ in range(10))
    posts = [client.post("/items", headers={"X-User": "ann"}).status_code for _ in range(3)]
    assert posts == [200, 200, 429]
    assert client.post("/items", headers={"X-User": "bob"}).status_code == 200
    vip["on"] = True
    assert client.post("/items", headers={"X-User": "ann"}).status_code == 200


def test_a_request_without_its_key_gets_the_rust_layers_401():
    app = flask.Flask("keyed")
    fw = FloodWall(app, key=lambda: flask.request.headers.get("X-Api-Key"))

    @app.get("/")
    @fw.limit("5/minute")
    def index():
        return "ok"

    client = app.test_client()
    missing = client.get("/")
    assert missing.status_code == 401 and missing.headers["Content-Type"] == "application/problem+json"
    assert client.get("/", headers={"X-Api-Key": "k"}).status_code == 200


def test_deduct_when_counts_only_the_responses_it_selects():
    app = flask.Flask("deduct")
    fw = FloodWall(app)

    @app.post("/login")
    @fw.limit("3/minute", deduct_when=lambda response: response.status_code == 401)
    def login():
        ok = flask.request.form.get("password") == "right"
        return ("welcome", 200) if ok else ("no", 401)

    client = app.test_client()
    # Successful logins give their unit back: any number of them.
    assert all(client.post("/login", data={"password": "right"}).status_code == 200 for _ in range(6))
    # Failures count: three, then the fourth attempt is refused before the view runs.
    assert [client.post("/login", data={"password": "wrong"}).status_code for _ in range(4)] == [401, 401, 401, 429]


def test_a_failure_that_outlives_its_window_is_not_refunded_into_the_next():
    # Admitted 10 ms before its minute window ends, the failing login answers after two logins
    # have used up the next window; refunding it then would give that window a third.
    clock = ManualClock(1_700_000_039.99)
    app = flask.Flask("slow")
    fw = FloodWall(app, limiter=floodwall.Limiter(clock=clock))
    limit = fw.shared_limit("2/minute", "logins", algorithm="fixed_window", deduct_when=lambda response: response.status_code != 500)

    @app.post("/login")
    @limit
    def login():
        return "welcome"

    @app.post("/slow-login")
    @limit
    def slow_login():
        clock.advance(1.0)
        assert [app.test_client().post("/login").status_code for _ in range(2)] == [200, 200]
        time.sleep(0.05)  # longer than the 10 ms its window had left
        return "broken", 500

    client = app.test_client()
    assert client.post("/slow-login").status_code == 500
    assert client.post("/login").status_code == 429


def test_spoofed_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy():
    untrusted_app, _ = hello_app()
    client = untrusted_app.test_client()
    # The peer is 127.0.0.1 and trusted by no one: every forged header lands on one key.
    codes = [client.get("/", headers={"X-Forwarded-For": f"198.51.100.{n}"}).status_code for n in range(11)]
    assert codes == [200] * 10 + [429]

    trusted_app, _ = hello_app(trusted_proxies=["127.0.0.0/8"])
    client = trusted_app.test_client()
    # Behind a trusted proxy: the rightmost untrusted address is the client, whatever a client
    # wrote to its left.
    for n in range(10):
        forged = f"203.0.113.{n}, 198.51.100.1"
        assert client.get("/", headers={"X-Forwarded-For": forged}).status_code == 200
    assert client.get("/", headers={"X-Forwarded-For": "198.51.100.1"}).status_code == 429
    assert client.get("/", headers={"X-Forwarded-For": "198.51.100.2"}).status_code == 200
    with trusted_app.test_request_context("/", headers={"X-Forwarded-For": "2001:db8::1"}, environ_base={"REMOTE_ADDR": "127.0.0.1"}):
        assert remote_address() == "2001:db8::/64"


def test_settings_come_from_app_config_with_init_app():
    app = flask.Flask("configured")
    app.config.update(FLOODWALL_DEFAULT_LIMITS=["1/minute"], FLOODWALL_HEADERS="legacy")
    fw = FloodWall()
    fw.init_app(app)

    @app.get("/")
    def index():
        return "ok"

    client = app.test_client()
    first = client.get("/")
    assert first.headers["X-RateLimit-Limit"] == "1" and first.headers["X-RateLimit-Remaining"] == "0"
    assert "RateLimit" not in first.headers
    assert client.get("/").status_code == 429


@pytest.mark.parametrize("on_error", ["allow", "deny", "local"])
def test_redis_killed_mid_test_is_answered_per_on_error(redis: RedisServer, on_error):
    app, _ = hello_app(storage=redis.url, on_error=on_error, prefix=unique_prefix(), timeout=0.2)
    client = app.test_client()
    assert [client.get("/").status_code for _ in range(3)] == [200, 200, 200]
    redis.kill()
    response = client.get("/")
    if on_error == "deny":
        assert response.status_code == 503
        assert response.headers["Content-Type"] == "application/problem+json"
        assert response.headers["Retry-After"] == "1"
        assert json.loads(response.data)["violated-policies"] == ["per-ip"]
    elif on_error == "allow":
        assert response.status_code == 200
        # Allowed without counting: the policy is reported, its state is not.
        assert "RateLimit-Policy" in response.headers and "RateLimit" not in response.headers
    else:
        # The in-process fallback enforces the limit by itself.
        codes = [response.status_code] + [client.get("/").status_code for _ in range(10)]
        assert codes[:10] == [200] * 10 and codes[10] == 429
    redis.start()
    deadline = time.monotonic() + 10
    while client.get("/").status_code == 503:
        assert time.monotonic() < deadline, "never recovered"
        time.sleep(0.1)
