"""Rate limits for Flask, answered exactly as floodwall's Rust HTTP layer answers them.

    from floodwall.flask import FloodWall

    fw = FloodWall(app, storage="redis://127.0.0.1:6379/0", default_limits=["100/hour"],
                   trusted_proxies=["10.0.0.0/8"])

    @app.get("/")
    @fw.limit("10/minute")
    def hello():
        return "Hello, World!"

A denied request gets 429 with ``Retry-After``, the draft RateLimit headers and a problem+json
body; a store outage under ``on_error="deny"`` gets a 503 problem, never a 500 page. Allowed
responses carry the same headers. Settings come from the arguments, else from ``app.config``
(``FLOODWALL_STORAGE``, ``FLOODWALL_DEFAULT_LIMITS``, ``FLOODWALL_HEADERS``,
``FLOODWALL_TRUSTED_PROXIES``, ``FLOODWALL_FORWARDED_HEADER``, ``FLOODWALL_ON_ERROR``,
``FLOODWALL_KEY_PREFIX``, ``FLOODWALL_TIMEOUT``, ``FLOODWALL_ENABLED``).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import flask

from . import Limiter, Policy, policy_name
from ._http import Limit, failure_answer, header_mode, methods_of, missing_key, policy_of, refundable, settlements
from ._native import ClientIp, CostTooLarge, RateLimitHeaders, StoreUnavailable, Verdict

__all__ = ["FloodWall", "remote_address"]

_LIMITS = "__floodwall_limits__"
_EXEMPT = "__floodwall_exempt__"
_DECIDED = "_floodwall_decided"
Item = Tuple[Policy, Union[str, bytes], int]


def remote_address() -> str:
    """The client key of the current request: its IP address as the extension of the current
    app resolves it (the peer, or behind trusted proxies the rightmost untrusted forwarded
    address)."""
    return flask.current_app.extensions["floodwall"].client_key()


class FloodWall:
    """The Flask extension: default limits for every route, ``@limit`` and ``@shared_limit``
    for some, ``@exempt`` for none."""

    def __init__(
        self,
        app: Optional[flask.Flask] = None,
        *,
        storage: Optional[str] = None,
        key: Optional[Callable[[], Union[str, bytes]]] = None,
        default_limits: Optional[Sequence[Union[str, tuple, Policy]]] = None,
        headers: Optional[str] = None,
        trusted_proxies: Optional[Iterable[str]] = None,
        forwarded_header: Optional[str] = None,
        on_error: Optional[str] = None,
        prefix: Optional[str] = None,
        timeout: Optional[float] = None,
        algorithm: str = "sliding_window",
        limiter: Optional[Limiter] = None,
        enabled: Optional[bool] = None,
    ) -> None:
        self._options: Dict[str, Any] = {
            "STORAGE": storage,
            "DEFAULT_LIMITS": default_limits,
            "HEADERS": headers,
            "TRUSTED_PROXIES": trusted_proxies,
            "FORWARDED_HEADER": forwarded_header,
            "ON_ERROR": on_error,
            "KEY_PREFIX": prefix,
            "TIMEOUT": timeout,
            "ENABLED": enabled,
        }
        self._key = key
        self._algorithm = algorithm
        self.limiter: Optional[Limiter] = limiter
        self._client_ip = ClientIp()
        self._headers = "draft"
        self._enabled = True
        self._forwarded = "HTTP_X_FORWARDED_FOR"
        self._default_rates: List[Union[str, tuple, Policy]] = []
        # Each view's prepared limits; default limits count per view: one policy per (view,
        # default limit).
        self._routes: Dict[Callable, Optional[_Route]] = {}
        if app is not None:
            self.init_app(app)

    def init_app(self, app: flask.Flask) -> None:
        """Reads the settings (arguments first, then ``app.config``) and hooks into ``app``."""
        option = self._option(app)
        self._headers = header_mode(option("HEADERS", "draft"))
        self._enabled = bool(option("ENABLED", True))
        self._client_ip = ClientIp(
            list(option("TRUSTED_PROXIES", ())),
            header=option("FORWARDED_HEADER", "x-forwarded-for"),
        )
        self._forwarded = "HTTP_" + self._client_ip.header.upper().replace("-", "_")
        self._default_rates = list(option("DEFAULT_LIMITS", ()))
        self._routes.clear()
        if self.limiter is None:
            storage = option("STORAGE", "memory://")
            redis_options = {}
            if storage != "memory://":
                redis_options = {"prefix": option("KEY_PREFIX", None), "timeout": option("TIMEOUT", None)}
            self.limiter = Limiter(storage, on_error=option("ON_ERROR", "allow"), **redis_options)
        app.extensions["floodwall"] = self
        app.before_request(self._before_request)
        app.after_request(self._after_request)

    def _option(self, app: flask.Flask) -> Callable[[str, Any], Any]:
        def option(name: str, default: Any) -> Any:
            value = self._options.get(name)
            if value is None:
                value = app.config.get(f"FLOODWALL_{name}")
            return default if value is None else value

        return option

    def client_key(self) -> str:
        """The current request's client IP key."""
        environ = flask.request.environ
        # A WSGI server joins repeated header lines into one value, in order; WSGI text is
        # latin-1, so encoding gives back the bytes the client sent.
        forwarded = environ.get(self._forwarded)
        return self._client_ip.key(environ.get("REMOTE_ADDR"), [] if forwarded is None else [forwarded.encode("latin-1")])

    def limit(
        self,
        rate: Union[str, tuple, Policy],
        *,
        key: Optional[Callable[[], Union[str, bytes]]] = None,
        cost: Union[int, Callable[[], int]] = 1,
        methods: Optional[Iterable[str]] = None,
        exempt_when: Optional[Callable[[], bool]] = None,
        deduct_when: Optional[Callable[[flask.Response], bool]] = None,
        cost_from_response: Optional[Callable[[flask.Response], Optional[int]]] = None,
        name: Optional[str] = None,
        algorithm: Optional[str] = None,
        burst: Optional[int] = None,
    ) -> Callable[[Callable], Callable]:
        """Limits one view (stack several for several limits; they are checked together,
        all-or-nothing). ``deduct_when(response)`` false gives the units back after the view
        ran, so only the responses it selects count; the check itself happens before the view,
        so nothing is ever over-admitted. ``cost_from_response(response)`` gives what the
        request actually cost once the view has answered (the tokens a model generated, say),
        or None: the request was admitted on ``cost``, the estimate, and is settled at the
        actual cost, charged whatever is left when more (the key then owes it, up to the
        policy's ``max_debt``, and is denied until refill has paid it), given back under the
        refund rule when less."""

        def decorate(view: Callable) -> Callable:
            limits: List[Limit] = getattr(view, _LIMITS, [])
            base = name or policy_name(view)
            if name is None and limits:
                base = f"{base[:60]}-{len(limits) + 1}"
            policy = policy_of(rate, base, algorithm or self._algorithm, burst)
            limit = Limit(policy, key, cost, methods_of(methods), exempt_when, deduct_when, cost_from_response)
            setattr(view, _LIMITS, [*limits, limit])
            return view

        return decorate

    def shared_limit(
        self,
        rate: Union[str, tuple, Policy],
        scope: str,
        **options: Any,
    ) -> Callable[[Callable], Callable]:
        """A limit every view decorated with the same ``scope`` shares: one count for all."""
        return self.limit(rate, name=scope, **options)

    def exempt(self, view: Callable) -> Callable:
        """Exempts a view from every limit, the defaults included."""
        setattr(view, _EXEMPT, True)
        return view

    def _route_of(self, view: Callable) -> Optional[_Route]:
        """The limits of ``view`` (its own, else the defaults), prepared on its first request;
        None when nothing limits it."""
        route = self._routes.get(view, _UNPREPARED)
        if route is not _UNPREPARED:
            return route
        route = None
        if not getattr(view, _EXEMPT, False):
            limits = getattr(view, _LIMITS, None)
            if limits is None:
                limits = []
                for n, rate in enumerate(self._default_rates):
                    suffix = "" if n == 0 else f"-{n + 1}"
                    name = policy_name(view)[: 64 - len(suffix)] + suffix
                    limits.append(Limit(policy_of(rate, name, self._algorithm, None)))
            if limits:
                route = _Route(limits, self._headers)
        self._routes[view] = route
        return route

    def _before_request(self) -> Optional[flask.Response]:
        if not self._enabled:
            return None
        # One proxy lookup for the whole hook: each attribute read through `flask.request`
        # costs a context-variable lookup.
        request = flask.request._get_current_object()
        endpoint = request.endpoint
        if endpoint is None:
            return None
        view = flask.current_app.view_functions.get(endpoint)
        if view is None:
            return None
        route = self._route_of(view)
        if route is None:
            return None
        items = []
        limits = route.limits
        if route.selective:
            limits = [
                limit
                for limit in limits
                if limit.applies_to(request.method) and (limit.exempt_when is None or not limit.exempt_when())
            ]
        for limit in limits:
            key = limit.key() if limit.key is not None else (self._key or self.client_key)()
            if key is None:
                return _response(missing_key())
            cost = limit.cost() if callable(limit.cost) else limit.cost
            items.append((limit.policy, key, cost))
        if not items:
            return None
        assert self.limiter is not None
        # Only a route that may refund or settle needs to know how long its request was served.
        checked_at = time.monotonic() if route.refunds or route.settles else 0.0
        try:
            verdict = self.limiter.check_weighted(items)
        except (StoreUnavailable, CostTooLarge) as error:
            return _response(failure_answer(error, [item[0] for item in items]))
        if not verdict.allowed:
            return _response(route.headers.denial(verdict))
        # Kept on the request itself, which after_request reads at the cost of one proxy lookup
        # (flask.g would cost one per access).
        request.__dict__[_DECIDED] = (route, verdict, items, limits, checked_at)
        return None

    def _after_request(self, response: flask.Response) -> flask.Response:
        decided = flask.request._get_current_object().__dict__.pop(_DECIDED, None)
        if decided is None:
            return response
        route, verdict, items, limits, checked_at = decided
        headers = response.headers
        for name, value in route.headers.of(verdict):
            headers[name] = value
        if route.refunds:
            self._refund(response, verdict, items, limits, time.monotonic() - checked_at)
        if route.settles:
            self._settle(response, verdict, items, limits, time.monotonic() - checked_at)
        return response

    def _settle(
        self, response: flask.Response, verdict: Verdict, items: List[Item], limits: List[Limit], served_in: float
    ) -> None:
        # A response deduct_when does not count is not settled either: it counts nothing.
        actuals = [
            None
            if limit.cost_from_response is None
            or (limit.deduct_when is not None and not limit.deduct_when(response))
            else limit.cost_from_response(response)
            for limit in limits
        ]
        charges, refunds = settlements(items, verdict, actuals, served_in)
        assert self.limiter is not None
        try:
            if charges:
                self.limiter.debit_weighted(charges)
            if refunds:
                self.limiter.refund_weighted(refunds)
        except StoreUnavailable:
            pass  # the request stays counted at its estimate

    def _refund(
        self, response: flask.Response, verdict: Verdict, items: List[Item], limits: List[Limit], served_in: float
    ) -> None:
        refunds = [
            items[index]
            for index in refundable(items, verdict, served_in)
            if limits[index].deduct_when is not None and not limits[index].deduct_when(response)
        ]
        if refunds:
            assert self.limiter is not None
            try:
                self.limiter.refund_weighted(refunds)
            except StoreUnavailable:
                pass  # the request stays counted: a refund that fails never over-admits


class _Route:
    """A view's limits, prepared once: whether a request may skip some of them (by method or
    ``exempt_when``), whether responses may give units back, and the headers of its policies."""

    __slots__ = ("limits", "selective", "refunds", "settles", "headers")

    def __init__(self, limits: List[Limit], mode: str) -> None:
        self.limits = limits
        self.selective = any(limit.methods is not None or limit.exempt_when is not None for limit in limits)
        self.refunds = any(limit.deduct_when is not None for limit in limits)
        self.settles = any(limit.cost_from_response is not None for limit in limits)
        self.headers = RateLimitHeaders([limit.policy for limit in limits], mode)


_UNPREPARED = object()


def _response(answer: Any) -> flask.Response:
    status, headers, body = answer
    return flask.Response(body, status=status, headers=headers)
