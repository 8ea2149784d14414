"""Retrying with backoff: one helper for every loop that waits out a failing dependency."""

from __future__ import annotations


class Backoff:
    def __init__(self, minimum: float, maximum: float) -> None:
        self._min = minimum
        self._max = max(minimum, maximum)
        self._next = minimum

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self._max)
        return delay

    def reset(self) -> None:
        self._next = self._min
