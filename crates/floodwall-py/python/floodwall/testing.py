"""Helpers for testing code that uses floodwall."""

from ._native import ManualClock

__all__ = ["ManualClock"]
