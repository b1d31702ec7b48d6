"""EndpointHealth (server/ara_reranker_server/endpoint_health.py) through its public methods: how many failures
mark an endpoint down, what brings it back, who hears of it and when; no Triton, no event loop."""

from __future__ import annotations

import pytest

from ara_reranker_server.endpoint_health import EndpointHealth

pytestmark = pytest.mark.unit

A, B = "a:8001", "b:8001"


class Clock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def tracked(failures_to_down: int = 3) -> tuple[EndpointHealth, list[tuple[str, bool]], Clock]:
    clock = Clock()
    health = EndpointHealth((A, B), failures_to_down, clock=clock)
    changes: list[tuple[str, bool]] = []
    health.on_change(lambda url, up: changes.append((url, up)))
    return health, changes, clock


def test_every_endpoint_starts_down_and_one_success_brings_it_up():
    health, changes, _ = tracked()
    assert health.healthy == {A: False, B: False} and not health.any_healthy
    health.record(A, True)
    assert health.healthy == {A: True, B: False} and health.any_healthy and changes == [(A, True)]
    health.record(A, True)
    assert changes == [(A, True)]  # no change, no news


def test_only_failures_to_down_failures_in_a_row_mark_an_endpoint_down():
    health, changes, _ = tracked(failures_to_down=3)
    health.record(A, True)
    health.record(A, False)
    health.record(A, False)
    assert health.healthy[A] and changes == [(A, True)]  # two failures in a row: still up
    health.record(A, True)  # a success starts the count again
    health.record(A, False)
    health.record(A, False)
    assert health.healthy[A]
    health.record(A, False)
    assert not health.healthy[A] and changes == [(A, True), (A, False)]
    health.record(A, False)
    assert changes == [(A, True), (A, False)]


def test_endpoints_are_counted_apart():
    health, changes, _ = tracked(failures_to_down=2)
    for url in (A, B):
        health.record(url, True)
    health.record(A, False)
    health.record(B, False)
    assert health.healthy == {A: True, B: True}
    health.record(A, False)
    assert health.healthy == {A: False, B: True} and health.any_healthy and changes[-1] == (A, False)


def test_mark_down_is_at_once_and_one_success_still_brings_it_back():
    health, changes, _ = tracked(failures_to_down=5)
    health.record(A, True)
    health.mark_down(A)
    assert not health.healthy[A] and changes == [(A, True), (A, False)]
    health.record(A, False)  # already down: nothing new
    health.record(A, True)
    assert health.healthy[A] and changes[-1] == (A, True)


def test_since_is_when_the_current_state_began_on_the_injected_clock():
    health, _, clock = tracked(failures_to_down=1)
    assert health.since(A) == health.since(B) == 100.0
    clock.now = 103.0
    health.record(A, True)
    clock.now = 110.0
    health.record(A, True)  # no change: the stamp stays
    assert health.since(A) == 103.0 and health.since(B) == 100.0
    health.record(A, False)
    assert health.since(A) == 110.0


def test_a_listeners_error_does_not_stop_tracking_nor_the_other_listeners():
    health = EndpointHealth((A,), failures_to_down=1)

    def broken(url, up):
        raise RuntimeError("listener bug")

    heard: list[bool] = []
    health.on_change(broken)
    health.on_change(lambda url, up: heard.append(up))
    health.record(A, True)
    health.record(A, False)
    assert heard == [True, False] and not health.healthy[A]
