"""What the Flask extension and the ASGI middleware share: limits, and the answers of the Rust
HTTP layer (429 with its headers, 503 when failing closed, 422 for an impossible cost)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, List, Optional, Sequence, Tuple, Union

from . import _native
from ._native import CostTooLarge, Policy, StoreUnavailable

Answer = Tuple[int, List[Tuple[str, str]], bytes]
HEADER_MODES = ("draft", "legacy", "both", "none")


@dataclass(frozen=True)
class Limit:
    """One limit of a route: its policy, and how a request picks its key and cost."""

    policy: Policy
    key: Optional[Callable[..., Union[str, bytes]]] = None
    cost: Union[int, Callable[..., int]] = 1
    methods: Optional[frozenset] = None
    exempt_when: Optional[Callable[[], bool]] = None
    deduct_when: Optional[Callable[[Any], bool]] = None
    cost_from_response: Optional[Callable[..., Optional[int]]] = None

    def applies_to(self, method: str) -> bool:
        return self.methods is None or method.upper() in self.methods


def policy_of(rate: Union[str, tuple, Policy], name: str, algorithm: str, burst: Optional[int]) -> Policy:
    if isinstance(rate, Policy):
        return rate
    return Policy(name, rate, algorithm=algorithm, burst=burst)


def methods_of(methods: Optional[Iterable[str]]) -> Optional[frozenset]:
    return None if methods is None else frozenset(m.upper() for m in methods)


def header_mode(mode: str) -> str:
    if mode not in HEADER_MODES:
        raise _native.ConfigError(
            f"unknown headers mode {mode!r}: expected one of {', '.join(map(repr, HEADER_MODES))}"
        )
    return mode


def failure_answer(error: Exception, policies: Sequence[Policy]) -> Answer:
    """The Rust layer's answer to a check that could not be made."""
    if isinstance(error, StoreUnavailable):
        return _native.store_unavailable(list(policies))
    if isinstance(error, CostTooLarge):
        return _native.impossible_cost(str(error))
    raise error


def missing_key() -> Answer:
    """The Rust layer's 401 for a request whose key function found no key (returned None)."""
    return _native.missing_key("the request carries no client key for its rate limit")


def settlements(
    items: List[Any], verdict: Any, actuals: Sequence[Optional[int]], served_in: float
) -> Tuple[List[Any], List[Any]]:
    """What settling an allowed verdict's items at their actual costs takes: the items to
    charge and the items to give back. Item ``i`` was admitted on its cost, the estimate, and
    actually cost ``actuals[i]`` (None: its estimate). More than the estimate charges the
    difference whatever is left (into debt), on each policy that admitted; less gives it back
    under the refund rule (:func:`refundable`). A verdict that counted nothing (the store failed
    and its policies fail open) is charged each whole actual cost. The same rule as the Rust
    library's ``Reservation::settle``."""
    charges: List[Any] = []
    refunds: List[Any] = []
    refundable_now: Optional[frozenset] = None
    decisions = verdict.decisions
    for index, ((policy, key, estimate), actual) in enumerate(zip(items, actuals)):
        if actual is None or policy.algorithm == "concurrency":
            continue
        if isinstance(actual, bool) or not isinstance(actual, int) or actual < 0:
            raise ValueError(f"cost_from_response gave {actual!r}: a cost is a whole number of units, or None")
        if not verdict.counted:
            charges.append((policy, key, actual))
        elif actual > estimate and decisions[index].allowed:
            charges.append((policy, key, actual - estimate))
        elif actual < estimate:
            if refundable_now is None:
                refundable_now = frozenset(verdict.refundable(served_in))
            if index in refundable_now:
                refunds.append((policy, key, estimate - actual))
    return charges, refunds


def refundable(items: List[Any], verdict: Any, served_in: float) -> List[int]:
    """The positions of the items of an allowed verdict that a refund may give back once its
    request was served in ``served_in`` seconds: the Rust rule (``Verdict.refundable``), for the
    items that consumed anything."""
    return [index for index in verdict.refundable(served_in) if items[index][2] > 0]
