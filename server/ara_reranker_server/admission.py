"""Admission: bounds on the work in flight across calls (pairs, tokens), refused at once beyond them."""

from __future__ import annotations

from typing import Sequence

from ara_reranker_server.errors import Overloaded

__all__ = ["Admission"]


class Admission:
    """A bound on work in flight (pairs, or tokens), shared by the served models: beyond it, refuse at
    once (no unbounded queue).

    Shared fairly: with n models, one model may hold at most the bound less 1/(2n) of it for each other
    model, so a flood on one leaves every other at least 1/(2n) of the bound. A single request larger
    than its model's cap is admitted only when nothing else is in flight."""

    def __init__(self, limit: int, setting: str, unit: str, owners: Sequence[str] = ("",)) -> None:
        self.limit = limit
        self.setting = setting
        self.unit = unit
        self.in_flight = 0
        self.held = {owner: 0 for owner in owners}
        self.cap = limit - (len(self.held) - 1) * (limit // (2 * len(self.held)))

    def acquire(self, amount: int, owner: str = "") -> None:
        if self.in_flight and (self.in_flight + amount > self.limit or self.held[owner] + amount > self.cap):
            share = "" if len(self.held) == 1 else f" (one model may hold {self.cap}: {self.held[owner]} held by {owner})"
            raise Overloaded(
                f"overloaded: {self.in_flight} {self.unit} in flight, {amount} more would exceed "
                f"{self.setting}={self.limit}{share}; retry later"
            )
        self.in_flight += amount
        self.held[owner] += amount

    def release(self, amount: int, owner: str = "") -> None:
        self.in_flight -= amount
        self.held[owner] -= amount
