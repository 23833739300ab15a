"""Assertions on HTTP answers shared by the Flask and ASGI tests: the Rust layer's 429."""

from __future__ import annotations

import json
from typing import Mapping

import http_sfv

QUOTA_EXCEEDED = "https://iana.org/assignments/http-problem-types#quota-exceeded"


def rate_limit_fields(headers: Mapping[str, str]) -> dict:
    """RateLimit-Policy and RateLimit, parsed as Structured Field lists: {name: params}."""
    policy, state = http_sfv.List(), http_sfv.List()
    policy.parse(headers["RateLimit-Policy"].encode())
    state.parse(headers["RateLimit"].encode())
    fields = {}
    for item in policy:
        fields[item.value] = dict(item.params)
    for item in state:
        fields[item.value].update(dict(item.params))
    return fields


def assert_denied(status: int, headers: Mapping[str, str], body: bytes, policy: str, quota: int, window: int) -> None:
    assert status == 429
    assert headers["Content-Type"] == "application/problem+json"
    assert headers["Cache-Control"] == "no-store"
    retry_after = int(headers["Retry-After"])
    fields = rate_limit_fields(headers)
    assert fields[policy]["q"] == quota and fields[policy]["w"] == window
    assert fields[policy]["r"] == 0
    assert 1 <= retry_after and fields[policy]["t"] <= retry_after
    problem = json.loads(body)
    assert problem["type"] == QUOTA_EXCEEDED and problem["status"] == 429
    assert problem["violated-policies"] == [policy]


def assert_allowed(headers: Mapping[str, str], policy: str, quota: int, remaining: int) -> None:
    fields = rate_limit_fields(headers)
    assert fields[policy]["q"] == quota and fields[policy]["r"] == remaining
    assert "Retry-After" not in headers
