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
from typing import Any, Awaitable, Callable, Iterable, List, MutableMapping, Optional, Sequence, Union

from . import Limiter, Policy
from ._http import failure_answer, header_mode, missing_key, policy_of, refundable
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
        # Only a middleware that may refund needs to know how long its request was served.
        checked_at = time.monotonic() if self._refund_when is not None else 0.0
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

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
                message = dict(message)
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            if self._refund_when is not None and status and self._refund_when(status[0]):
                served_in = time.monotonic() - checked_at
                refunds = [items[index] for index in refundable(items, verdict, served_in)]
                if refunds:
                    try:
                        await self.limiter.arefund_weighted(refunds)
                    except StoreUnavailable:
                        pass  # the request stays counted: a refund that fails never over-admits


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
