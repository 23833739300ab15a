"""The Flask route of bench/python.sh: `GET /` says Hello, World!, limited per `BENCH_LIMITER`:
none, floodwall (memory or Redis) or Flask-Limiter (Redis), under a limit never reached, keyed by
the X-Api-Key header (10 000 keys from wrk)."""

import os

import flask

app = flask.Flask("bench")
mode = os.environ.get("BENCH_LIMITER", "none")
redis_url = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/0")


def api_key():
    return flask.request.headers.get("X-Api-Key", "anon")


def hello():
    return "Hello, World!"


if mode.startswith("floodwall"):
    from floodwall.flask import FloodWall

    storage = "memory://" if mode == "floodwall-memory" else redis_url
    fw = FloodWall(app, storage=storage, on_error="deny", timeout=None if storage == "memory://" else 1.0)
    hello = fw.limit("100000/minute", key=api_key, name="bench")(hello)
elif mode == "flask-limiter":
    from flask_limiter import Limiter

    limiter = Limiter(api_key, app=app, storage_uri=redis_url, strategy="fixed-window")
    hello = limiter.limit("100000/minute")(hello)

app.add_url_rule("/", view_func=hello)
