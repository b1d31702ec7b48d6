"""Whether each Triton endpoint is up: a state machine over the outcomes of polls and calls, no I/O.

An endpoint counts as down after ``failures_to_down`` consecutive failures, so one transient error does not
flap health; one success brings it back. An endpoint whose model failed to compute is marked down at once
(``mark_down``). Listeners hear of every change (the gRPC health service, metrics); ``since`` says when an
endpoint's current state began, on an injected clock so that tests need not wait.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

__all__ = ["EndpointHealth", "HealthListener"]

log = logging.getLogger(__name__)

HealthListener = Callable[[str, bool], None]


class EndpointHealth:
    """Up or down, per endpoint of one set; every endpoint starts down until it answers."""

    def __init__(self, endpoints: tuple[str, ...], failures_to_down: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``failures_to_down``: consecutive failures that mark an endpoint down; ``clock`` stamps changes."""
        self.failures_to_down = failures_to_down
        self._clock = clock
        self.healthy = {url: False for url in endpoints}
        self._failures = {url: 0 for url in endpoints}
        self._since = {url: clock() for url in endpoints}
        self._listeners: list[HealthListener] = []

    def on_change(self, listener: HealthListener) -> None:
        """Call ``listener(endpoint, healthy)`` whenever an endpoint goes up or down."""
        self._listeners.append(listener)

    @property
    def any_healthy(self) -> bool:
        """Whether some endpoint is up."""
        return any(self.healthy.values())

    def since(self, url: str) -> float:
        """The clock's reading when ``url`` last went up or down (or when tracking began)."""
        return self._since[url]

    def record(self, url: str, ok: bool) -> None:
        """One outcome: a success marks ``url`` up; ``failures_to_down`` failures in a row mark it down."""
        self._failures[url] = 0 if ok else self._failures[url] + 1
        if ok:
            self._set(url, True)
        elif self._failures[url] >= self.failures_to_down:
            self._set(url, False)

    def mark_down(self, url: str) -> None:
        """Down at once (its model cannot compute): no further failures needed, and one success still brings it up."""
        self._failures[url] = max(self._failures[url], self.failures_to_down)
        self._set(url, False)

    def _set(self, url: str, up: bool) -> None:
        if self.healthy[url] == up:
            return
        now = self._clock()
        was = now - self._since[url]
        self.healthy[url], self._since[url] = up, now
        log.warning("triton endpoint %s is %s (after %.1fs %s)", url, "ready" if up else "NOT ready", was,
                    "down" if up else "up")
        for listener in self._listeners:
            try:
                listener(url, up)
            except Exception:  # a listener's bug must not stop health tracking
                log.exception("health listener failed for %s", url)
