"""The token bucket that bounds unauthenticated attestation work."""

from __future__ import annotations

import pytest

from constellation.attestation.atls import RateLimitedError, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 10.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_refusal_with_the_wait():
    clock = Clock()
    bucket = TokenBucket(rate=4, burst=3, clock=clock)
    for _ in range(3):
        bucket.acquire()
    with pytest.raises(RateLimitedError) as limited:
        bucket.acquire()
    assert limited.value.retry_after == pytest.approx(0.25)
    assert str(limited.value) == "attestation rate exceeded; retry in 250 ms"


def test_refill_is_proportional_and_capped_at_burst():
    clock = Clock()
    bucket = TokenBucket(rate=10, burst=2, clock=clock)
    bucket.acquire()
    bucket.acquire()
    clock.now += 0.1
    bucket.acquire()
    with pytest.raises(RateLimitedError):
        bucket.acquire()
    clock.now += 3600  # a long pause refills to the burst, not beyond
    bucket.acquire()
    bucket.acquire()
    with pytest.raises(RateLimitedError):
        bucket.acquire()


def test_refusals_do_not_consume():
    clock = Clock()
    bucket = TokenBucket(rate=1, burst=1, clock=clock)
    bucket.acquire()
    for _ in range(100):
        with pytest.raises(RateLimitedError):
            bucket.acquire()
    clock.now += 1
    bucket.acquire()


def test_clock_going_backwards_grants_nothing():
    clock = Clock()
    bucket = TokenBucket(rate=1, burst=1, clock=clock)
    bucket.acquire()
    clock.now -= 100
    with pytest.raises(RateLimitedError):
        bucket.acquire()


def test_defaults_are_generous():
    bucket = TokenBucket()
    assert (bucket.rate, bucket.burst) == (200.0, 400)


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (1, 0), (-1, 5)])
def test_nonsense_bounds_rejected(rate, burst):
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(rate=rate, burst=burst)
