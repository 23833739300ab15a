"""Rate limits for ASGI apps (Starlette, FastAPI), answered exactly as floodwall's Rust HTTP
layer answers them.

    from floodwall.asgi import RateLimitMiddleware

    app.add_middleware(RateLimitMiddleware, storage="redis://127.0.0.1:6379/0",
                       default_limits=["100/minute"], trusted_proxies=["10.0.0.0/8"])

Every HTTP request is checked against ``default_limits`` (together, all-or-nothing) for its
client key, which is the client IP unless ``key`` says otherwise. The check is awaited on the
event loop without blocking it.
"""

from __future__ import annotations

import time
from typing import Any, Awaitable, Callable, Iterable, List, MutableMapping, Optional, Sequence, Tuple, Union

from . import Limiter, Policy
from ._http import failure_answer, header_mode, missing_key, policy_of, refundable, settlements
from ._native import ClientIp, CostTooLarge, RateLimitHeaders, StoreUnavailable

__all__ = ["RateLimitMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class RateLimitMiddleware:
    """ASGI middleware: limits every HTTP request under ``default_limits``.

    ``key(scope)`` picks the client key (default: the client IP, the peer unless it is in
    ``trusted_proxies``; a key function that returns None gets the Rust layer's 401); ``cost(scope)`` the units (default 1); ``exempt(scope)`` true lets a
    request through unchecked (``exempt_paths`` does the same for exact paths); ``refund_when``
    ``(status)`` true gives a request's units back once its response has started.

    ``cost_from_response(scope, status, headers)`` (the response's raw header pairs) gives what
    the request actually cost once the app has finished, or None: the request was admitted on
    ``cost``, the estimate, and is settled at the actual cost, charged whatever is left when
    more (the key then owes it and is denied until refill has paid it), given back under the
    refund rule when less. A cost known only once a streamed body has ended can be left in
    the scope by the app (FastAPI: ``request.state.tokens = n``, read back as
    ``scope["state"]["tokens"]``). A refunded response is not settled; a request whose task is
    cancelled is settled at its estimate.
    """

    def __init__(
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        *,
        default_limits: Sequence[Union[str, tuple, Policy]] = (),
        storage: str = "memory://",
        limiter: Optional[Limiter] = None,
        key: Optional[Callable[[Scope], Union[str, bytes]]] = None,
        cost: Union[int, Callable[[Scope], int]] = 1,
        headers: str = "draft",
        trusted_proxies: Iterable[str] = (),
        forwarded_header: str = "x-forwarded-for",
        on_error: str = "allow",
        prefix: Optional[str] = None,
        timeout: Optional[float] = None,
        algorithm: str = "sliding_window",
        exempt: Optional[Callable[[Scope], bool]] = None,
        exempt_paths: Iterable[str] = (),
        refund_when: Optional[Callable[[int], bool]] = None,
        cost_from_response: Optional[Callable[[Scope, int, List[Tuple[bytes, bytes]]], Optional[int]]] = None,
    ) -> None:
        self.app = app
        if limiter is None:
            redis_options = {} if storage == "memory://" else {"prefix": prefix, "timeout": timeout}
            limiter = Limiter(storage, on_error=on_error, **redis_options)
        self.limiter = limiter
        self.policies: List[Policy] = [
            policy_of(rate, "default" if n == 0 else f"default-{n + 1}", algorithm, None)
            for n, rate in enumerate(default_limits)
        ]
        self._key = key
        self._cost = cost
        self._headers = RateLimitHeaders(self.policies, header_mode(headers))
        self._client_ip = ClientIp(list(trusted_proxies), header=forwarded_header)
        self._forwarded = self._client_ip.header.encode("latin-1")
        self._exempt = exempt
        self._exempt_paths = frozenset(exempt_paths)
        self._refund_when = refund_when
        self._cost_from_response = cost_from_response

    def client_key(self, scope: Scope) -> str:
        """The client IP key of a request, as the Rust layer resolves it."""
        client = scope.get("client")
        peer = client[0] if client else None
        forwarded = [value for name, value in scope.get("headers", ()) if name.lower() == self._forwarded]
        return self._client_ip.key(peer, forwarded)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or not self.policies
            or scope.get("path") in self._exempt_paths
            or (self._exempt is not None and self._exempt(scope))
        ):
            await self.app(scope, receive, send)
            return
        key = self._key(scope) if self._key is not None else self.client_key(scope)
        if key is None:
            await _answer(send, missing_key())
            return
        cost = self._cost(scope) if callable(self._cost) else self._cost
        items = [(policy, key, cost) for policy in self.policies]
        # Only a middleware that may refund or settle needs to know how long its request was served.
        settles = self._cost_from_response is not None
        checked_at = time.monotonic() if self._refund_when is not None or settles else 0.0
        try:
            verdict = await self.limiter.acheck_weighted(items)
        except (StoreUnavailable, CostTooLarge) as error:
            await _answer(send, failure_answer(error, self.policies))
            return
        if not verdict.allowed:
            await _answer(send, self._headers.denial(verdict))
            return
        extra = self._headers.raw(verdict)
        status: List[int] = []
        response_headers: List[Tuple[bytes, bytes]] = []

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
                if settles:
                    response_headers.extend(message.get("headers", ()))
                message = dict(message)
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        finished = False
        try:
            await self.app(scope, receive, send_with_headers)
            finished = True
        finally:
            refunded = self._refund_when is not None and status and self._refund_when(status[0])
            if refunded:
                served_in = time.monotonic() - checked_at
                refunds = [items[index] for index in refundable(items, verdict, served_in)]
                if refunds:
                    try:
                        await self.limiter.arefund_weighted(refunds)
                    except StoreUnavailable:
                        pass  # the request stays counted: a refund that fails never over-admits
        if settles and finished and status and not refunded:
            await self._settle(scope, status[0], response_headers, items, verdict, time.monotonic() - checked_at)

    async def _settle(
        self,
        scope: Scope,
        status: int,
        headers: List[Tuple[bytes, bytes]],
        items: List[Any],
        verdict: Any,
        served_in: float,
    ) -> None:
        assert self._cost_from_response is not None
        actual = self._cost_from_response(scope, status, headers)
        charges, refunds = settlements(items, verdict, [actual] * len(items), served_in)
        try:
            if charges:
                await self.limiter.adebit_weighted(charges)
            if refunds:
                await self.limiter.arefund_weighted(refunds)
        except StoreUnavailable:
            pass  # the request stays counted at its estimate


async def _answer(send: Send, answer: Any) -> None:
    status, headers, body = answer
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers],
        }
    )
    await send({"type": "http.response.body", "body": body})
