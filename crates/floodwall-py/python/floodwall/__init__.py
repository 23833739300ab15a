"""Exact rate limiting shared by every instance of an app.

The limiter, its stores and its Redis scripts are floodwall's Rust code: a Python app, a Rust
service and the ``floodwall`` binary on one Redis share one exact count.

    import floodwall

    limiter = floodwall.Limiter("redis://127.0.0.1:6379/0", on_error="allow")
    per_ip = floodwall.Policy("per-ip", "10/minute")
    decision = limiter.check(per_ip, "203.0.113.7")
    if not decision.allowed:
        ...  # decision.retry_after seconds from now, the same request would be admitted

Being limited is a :class:`Decision`, not an exception, except in :meth:`Limiter.limit` and
:meth:`Limiter.acquire`, which raise :class:`RateLimited`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import inspect
import re
import socket
import weakref
from typing import (
    Any,
    AsyncIterator,
    Callable,
    Iterator,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
    Union,
)

from . import _native
from ._native import (
    ConfigError,
    CostTooLarge,
    Decision,
    Error,
    Policy,
    Reservation,
    StoreUnavailable,
    Verdict,
    __version__,
    parse_rate,
)

__all__ = [
    "ConfigError",
    "CostTooLarge",
    "Decision",
    "Error",
    "Limiter",
    "Policy",
    "RateLimited",
    "Reservation",
    "StoreUnavailable",
    "Verdict",
    "__version__",
    "parse_rate",
]

F = TypeVar("F", bound=Callable[..., Any])


class RateLimited(Error):
    """Raised by the decorators and by ``acquire`` when a request is denied.

    ``retry_after`` is the number of seconds after which the same request would be admitted if
    no one else consumed meanwhile; ``decision`` is the policy's whole answer.
    """

    def __init__(self, decision: Decision) -> None:
        self.decision = decision
        self.retry_after: float = decision.retry_after or 0.0
        super().__init__(
            f"rate limited by {decision.policy!r}: retry after {self.retry_after:.3f} s"
        )


class Limiter(_native.Limiter):
    """Decides "may this key spend ``cost`` units now?" on a store shared by every limiter on it.

    ``Limiter(storage="memory://", *, on_error="allow", timeout=None, prefix=None,
    max_keys=None, clock=None)``. Every method has an awaitable twin (``acheck``, ``apeek``,
    ``acheck_all``, ``areset``, ``aacquire``, ...) that never blocks the event loop; the
    blocking ones release the GIL while they wait on Redis. One limiter may be shared by any
    number of threads and tasks.
    """

    # The async twins are coroutine functions, as asyncio.run and create_task expect. In
    # memory they answer at once (a decision never waits there); on Redis the decision runs on
    # floodwall's Rust runtime and its result comes back through the loop's own queue.

    async def acheck(self, policy: Policy, key: Union[str, bytes], cost: int = 1) -> Decision:
        """:meth:`check`, awaited without blocking the event loop."""
        if self.in_memory:
            return self.check(policy, key, cost)
        return await _submit(self._spawn_check, policy, key, cost)

    async def acheck_all(self, policies: Sequence[Policy], key: Union[str, bytes], cost: int = 1) -> Verdict:
        """:meth:`check_all`, awaited without blocking the event loop."""
        if self.in_memory:
            return self.check_all(policies, key, cost)
        return await _submit(self._spawn_check_all, list(policies), key, cost)

    async def acheck_weighted(self, items: Sequence[Tuple[Policy, Union[str, bytes], int]]) -> Verdict:
        """:meth:`check_weighted`, awaited without blocking the event loop."""
        if self.in_memory:
            return self.check_weighted(items)
        return await _submit(self._spawn_check_weighted, list(items))

    async def apeek(self, policy: Policy, key: Union[str, bytes]) -> Decision:
        """:meth:`peek`, awaited without blocking the event loop."""
        return await self.acheck(policy, key, 0)

    async def arefund(self, policy: Policy, key: Union[str, bytes], cost: int = 1) -> Decision:
        """:meth:`refund`, awaited without blocking the event loop."""
        if self.in_memory:
            return self.refund(policy, key, cost)
        return await _submit(self._spawn_refund, policy, key, cost)

    async def arefund_weighted(self, items: Sequence[Tuple[Policy, Union[str, bytes], int]]) -> None:
        """:meth:`refund_weighted`, awaited without blocking the event loop."""
        if self.in_memory:
            return self.refund_weighted(items)
        await _submit(self._spawn_refund_weighted, list(items))

    async def areset(self, policy: Policy, key: Union[str, bytes]) -> None:
        """:meth:`reset`, awaited without blocking the event loop."""
        if self.in_memory:
            return self.reset(policy, key)
        await _submit(self._spawn_reset, policy, key)

    def reserve(
        self,
        policies: Union[Policy, Sequence[Policy]],
        key: Union[str, bytes],
        estimate: int,
    ) -> Reservation:
        """Admits a request on an ``estimate`` of its cost (the tokens a completion may use),
        under one policy or several (all-or-nothing); ``settle(actual)`` on the reservation
        charges the difference once the cost is known. Usable as ``with limiter.reserve(...)
        as r:``; a reservation never settled stays charged at its estimate."""
        if isinstance(policies, Policy):
            policies = [policies]
        return super().reserve(list(policies), key, estimate)

    async def areserve(
        self,
        policies: Union[Policy, Sequence[Policy]],
        key: Union[str, bytes],
        estimate: int,
    ) -> Reservation:
        """:meth:`reserve`, awaited without blocking the event loop. Settle it with
        ``await asyncio.to_thread(r.settle, actual)`` or :meth:`asettle`."""
        if self.in_memory:
            return self.reserve(policies, key, estimate)
        # On a thread of its own (the call releases the GIL): a task cancelled meanwhile
        # leaves the reservation to finish, charged at its estimate.
        return await asyncio.to_thread(self.reserve, policies, key, estimate)

    async def asettle(self, reservation: Reservation, actual: int) -> Verdict:
        """``reservation.settle(actual)``, awaited without blocking the event loop; a task
        cancelled meanwhile leaves the settle to finish."""
        if self.in_memory:
            return reservation.settle(actual)
        return await asyncio.to_thread(reservation.settle, actual)

    async def adebit(self, policy: Policy, key: Union[str, bytes], cost: int) -> Decision:
        """:meth:`debit`, awaited without blocking the event loop; a task cancelled meanwhile
        leaves the charge to finish."""
        if self.in_memory:
            return self.debit(policy, key, cost)
        return await asyncio.to_thread(self.debit, policy, key, cost)

    async def adebit_weighted(self, items: Sequence[Tuple[Policy, Union[str, bytes], int]]) -> None:
        """:meth:`debit_weighted`, awaited without blocking the event loop; a task cancelled
        meanwhile leaves the charge to finish."""
        if self.in_memory:
            return self.debit_weighted(items)
        await asyncio.to_thread(self.debit_weighted, list(items))

    def acquire(
        self,
        policy: Policy,
        key: Union[str, bytes],
        cost: int = 1,
        timeout: Optional[float] = None,
    ) -> Decision:
        """Waits until ``cost`` units are admitted, at most ``timeout`` seconds (None: as long
        as it takes); raises :class:`RateLimited` when the wait would overrun ``timeout``."""
        decision = super().acquire(policy, key, cost, timeout)
        if not decision.allowed:
            raise RateLimited(decision)
        return decision

    async def aacquire(
        self,
        policy: Policy,
        key: Union[str, bytes],
        cost: int = 1,
        timeout: Optional[float] = None,
    ) -> Decision:
        """:meth:`acquire` on the event loop, without blocking it."""
        decision = await _submit(self._spawn_acquire, policy, key, cost, timeout)
        if not decision.allowed:
            raise RateLimited(decision)
        return decision

    @contextlib.contextmanager
    def lease(self, policy: Policy, key: Union[str, bytes], cost: int = 1) -> Iterator[Decision]:
        """Holds ``cost`` units of a ``concurrency`` policy for ``key`` while the ``with`` block
        runs, and gives them back when it ends, however it ends; raises :class:`RateLimited`
        when none is free. A holder that dies without leaving the block gives its units back
        after the policy's period."""
        decision, holder = self._hold(policy, key, cost)
        if not decision.allowed:
            raise RateLimited(decision)
        try:
            yield decision
        finally:
            if holder is not None:
                self._release(policy, key, cost, holder)

    @contextlib.asynccontextmanager
    async def alease(
        self, policy: Policy, key: Union[str, bytes], cost: int = 1
    ) -> AsyncIterator[Decision]:
        """:meth:`lease` for coroutines. On Redis the store calls run on floodwall's runtime,
        so the event loop never waits on them. A task cancelled while the hold is on its way
        holds nothing: what the store took for it is given back."""
        if self.in_memory:
            decision, holder = self._hold(policy, key, cost)
        else:
            held = _submit(self._spawn_hold, policy, key, cost)
            try:
                decision, holder = await held
            except asyncio.CancelledError:
                # Cancelled after the hold was answered but before this task resumed: the
                # units are ours and nobody else will release them.
                if held.done() and not held.cancelled() and held.exception() is None:
                    _, holder = held.result()
                    if holder is not None:
                        _submit(self._spawn_release, policy, key, cost, holder, cancellable=False)
                raise
        if not decision.allowed:
            raise RateLimited(decision)
        try:
            yield decision
        finally:
            if holder is not None:
                if self.in_memory:
                    self._release(policy, key, cost, holder)
                else:
                    # A release runs to its end even if this task is cancelled meanwhile.
                    await _submit(self._spawn_release, policy, key, cost, holder, cancellable=False)

    def limit(
        self,
        rate: Union[str, tuple, Policy],
        *,
        key: Union[None, str, bytes, Callable[..., Union[str, bytes]]] = None,
        cost: Union[int, Callable[..., int]] = 1,
        wait: bool = False,
        timeout: Optional[float] = None,
        name: Optional[str] = None,
        algorithm: str = "sliding_window",
        burst: Optional[int] = None,
    ) -> Callable[[F], F]:
        """Limits calls of a function, sync or async.

        ``key`` is a constant, or a callable given the function's arguments (or none, if it
        takes none); without one, every call shares one quota. A denied call raises
        :class:`RateLimited`; with ``wait=True`` it sleeps until admitted instead (at most
        ``timeout`` seconds), for throttling one's own outgoing calls.
        """

        def decorate(function: F) -> F:
            policy = rate if isinstance(rate, Policy) else Policy(
                name or policy_name(function), rate, algorithm=algorithm, burst=burst
            )
            key_of = _argument_function(key, "global")
            cost_of = _argument_function(cost, 1)

            if inspect.iscoroutinefunction(function):

                @functools.wraps(function)
                async def limited_async(*args: Any, **kwargs: Any) -> Any:
                    client, units = key_of(args, kwargs), cost_of(args, kwargs)
                    if wait:
                        await self.aacquire(policy, client, units, timeout)
                    else:
                        decision = await self.acheck(policy, client, units)
                        if not decision.allowed:
                            raise RateLimited(decision)
                    return await function(*args, **kwargs)

                limited_async.policy = policy  # type: ignore[attr-defined]
                return limited_async  # type: ignore[return-value]

            @functools.wraps(function)
            def limited(*args: Any, **kwargs: Any) -> Any:
                client, units = key_of(args, kwargs), cost_of(args, kwargs)
                if wait:
                    self.acquire(policy, client, units, timeout)
                else:
                    decision = self.check(policy, client, units)
                    if not decision.allowed:
                        raise RateLimited(decision)
                return function(*args, **kwargs)

            limited.policy = policy  # type: ignore[attr-defined]
            return limited  # type: ignore[return-value]

        return decorate


class _LoopQueue:
    """One event loop's queue of finished Redis decisions, and the socket that wakes the loop
    when the queue fills: the Rust workers never need the GIL to hand a result over."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.completions = _native.Completions()
        self._socket = socket.socket(fileno=self.completions.take_reader())
        self._socket.setblocking(False)
        loop.add_reader(self._socket.fileno(), self._drain)

    def _drain(self) -> None:
        try:
            while self._socket.recv(4096):
                pass
        except BlockingIOError:
            pass
        # take() leaves out the futures already cancelled; none is cancelled while this loop runs.
        for future, succeeded, value in self.completions.take():
            if succeeded:
                future.set_result(value)
            else:
                future.set_exception(value)


_queues: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopQueue]" = weakref.WeakKeyDictionary()


# The last loop and its queue, found without the weak dictionary (each of its lookups makes a
# weak reference): nearly every call comes from the same loop as the call before. Both are
# held weakly, like the dictionary's entries, so that a closed loop and its socket go.
_NOTHING: Callable[[], Any] = lambda: None
_last: Tuple[Callable[[], Any], Callable[[], Any]] = (_NOTHING, _NOTHING)


def _submit(spawn: Callable[..., Any], *args: Any, cancellable: bool = True) -> "asyncio.Future[Any]":
    """Starts a decision in the background; the future resolves on the running loop. A caller
    cancelled while it waits cancels the future, and with it the work (unless it is not
    ``cancellable``: a release, which must reach the store whoever waits): a decision not yet
    sent is not sent, a wait (``aacquire``) stops spending, and what the store took is given
    back."""
    global _last
    loop = asyncio.get_running_loop()
    last_loop, last_queue = _last
    queue = last_queue() if last_loop() is loop else None
    if queue is None:
        queue = _queues.get(loop)
        if queue is None:
            queue = _queues[loop] = _LoopQueue(loop)
        _last = (weakref.ref(loop), weakref.ref(queue))
    future = loop.create_future()
    work = spawn(queue.completions, future, *args)
    if cancellable:
        future.add_done_callback(lambda done: work.cancel() if done.cancelled() else None)
    return future


def _argument_function(value: Any, default: Any) -> Callable[[tuple, dict], Any]:
    """A constant or a callable, as a function of a call's (args, kwargs)."""
    if value is None:
        return lambda args, kwargs: default
    if not callable(value):
        return lambda args, kwargs: value
    try:
        takes_none = not inspect.signature(value).parameters
    except (TypeError, ValueError):
        takes_none = False
    if takes_none:
        return lambda args, kwargs: value()
    return lambda args, kwargs: value(*args, **kwargs)


_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def policy_name(function: Callable[..., Any]) -> str:
    """A policy name for a function: its module and qualified name, made of the characters a
    policy name allows; past 64 of them, a digest of the whole and its last 51."""
    raw = f"{function.__module__}.{function.__qualname__}"
    name = _NAME_UNSAFE.sub("-", raw).strip("-.") or "function"
    if len(name) <= 64:
        return name
    # The end names the function; the digest of the whole keeps two long names apart.
    digest = hashlib.sha256(raw.encode()).hexdigest()[:12]
    return f"{digest}-{name[-51:].lstrip('-.')}"
