"""Token buckets per identity and overall: every bound has a case where it must refuse."""

from __future__ import annotations

import threading

import grpc
import pytest

from constellation.attestation.service.status import DEFAULT_STATUS_CODES, status_for
from constellation.joinservice.errors import RateLimitedError
from constellation.joinservice.ratelimit import (
    DEFAULT_PER_IDENTITY,
    Rate,
    RateLimiter,
)
from constellation.joinservice.server import STATUS_CODES


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def limiter(clock: Clock, **kwargs: object) -> RateLimiter:
    kwargs.setdefault("per_identity", Rate(burst=3, refill_seconds=20.0))
    kwargs.setdefault("overall", None)
    return RateLimiter(clock=clock, **kwargs)  # type: ignore[arg-type]


def refusal(limit: RateLimiter, identity: str) -> RateLimitedError:
    with pytest.raises(RateLimitedError) as info:
        limit.admit(identity)
    return info.value


def test_defaults_are_a_join_a_retry_and_a_rejoin() -> None:
    assert Rate(burst=3, refill_seconds=20.0) == DEFAULT_PER_IDENTITY


def test_burst_then_refill() -> None:
    clock = Clock()
    limit = limiter(clock)
    for _ in range(3):
        limit.admit("a")
    err = refusal(limit, "a")
    assert [f.check for f in err.failures] == ["rate.identity"]
    assert err.retry_after == pytest.approx(20.0)
    assert "retry in 20 s" in str(err)
    assert "at most 3 at once, then 1 every 20 s" in str(err)
    assert status_for(err, {**DEFAULT_STATUS_CODES, **STATUS_CODES}) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED
    )
    clock.now += 5.0
    assert refusal(limit, "a").retry_after == pytest.approx(15.0)
    clock.now += 15.0
    limit.admit("a")
    refusal(limit, "a")


def test_refused_request_takes_no_token() -> None:
    clock = Clock()
    limit = limiter(clock)
    for _ in range(3):
        limit.admit("a")
    for _ in range(10):
        refusal(limit, "a")
    clock.now += 20.0
    limit.admit("a")


def test_identities_are_independent() -> None:
    clock = Clock()
    limit = limiter(clock)
    for _ in range(3):
        limit.admit("a")
    refusal(limit, "a")
    for _ in range(3):
        limit.admit("b")


def test_refill_stops_at_the_burst() -> None:
    clock = Clock()
    limit = limiter(clock)
    limit.admit("a")
    clock.now += 3600.0
    for _ in range(3):
        limit.admit("a")
    refusal(limit, "a")


def test_overall_bucket_bounds_all_identities_together() -> None:
    clock = Clock()
    limit = limiter(clock, overall=Rate(burst=4, refill_seconds=1.0))
    for name in "abcd":
        limit.admit(name)
    err = refusal(limit, "e")
    assert [f.check for f in err.failures] == ["rate.overall"]
    assert err.retry_after == pytest.approx(1.0)
    # The refused identity lost nothing: its own bucket is still full once the shared refills.
    clock.now += 3.0
    for _ in range(3):
        limit.admit("e")


def test_identity_table_is_bounded_and_forgets_only_idle_identities() -> None:
    clock = Clock()
    limit = limiter(clock, max_identities=2)
    limit.admit("a")
    limit.admit("b")
    err = refusal(limit, "c")  # both still refilling: nobody's history is dropped
    assert [f.check for f in err.failures] == ["rate.identities"]
    assert err.retry_after == pytest.approx(20.0)
    assert limit.tracked() == 2
    clock.now += 20.0  # a and b are full again, as good as new
    limit.admit("c")
    assert limit.tracked() == 1


def test_busy_identity_is_not_evicted_for_an_idle_one_behind_it() -> None:
    clock = Clock()
    limit = limiter(clock, max_identities=2)
    for _ in range(3):
        limit.admit("busy")
    limit.admit("idle")
    clock.now += 20.0  # idle is full; busy has one token back, not three
    limit.admit("new")
    assert limit.tracked() == 2
    limit.admit("busy")
    refusal(limit, "busy")  # busy kept its history: only one token had come back


def test_concurrent_callers_get_exactly_the_burst() -> None:
    clock = Clock()
    limit = limiter(clock, per_identity=Rate(burst=5, refill_seconds=60.0))
    admitted: list[bool] = []
    lock = threading.Lock()

    def call() -> None:
        try:
            limit.admit("a")
            ok = True
        except RateLimitedError:
            ok = False
        with lock:
            admitted.append(ok)

    threads = [threading.Thread(target=call) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert admitted.count(True) == 5


@pytest.mark.parametrize(
    ("burst", "refill"), [(0, 1.0), (1, 0.0), (1, -1.0), (1, float("inf")), (1, float("nan"))]
)
def test_nonsense_rates_are_refused(burst: int, refill: float) -> None:
    with pytest.raises(ValueError, match="rate"):
        Rate(burst=burst, refill_seconds=refill)


def test_empty_table_size_is_refused() -> None:
    with pytest.raises(ValueError, match="max_identities"):
        RateLimiter(max_identities=0)
