"""Token buckets: the one rate-limiting primitive every service shares. Pure arithmetic.

A bucket holds at most ``Rate.burst`` tokens and gains one every ``Rate.refill_seconds``; a unit
of work takes one token, and an empty bucket refuses with the wait until the next token. The
level at any time is computed from the level at the last update, so a bucket stores two floats
and needs no timer. Callers own the clock (monotonic seconds, injectable in tests) and the lock:
the aTLS handshake bound (``atls.ratelimit``) keeps one global bucket, the JoinService
(``joinservice.ratelimit``) one per attested identity plus one overall.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Clock differences are floats: 10.1 - 10.0 is a hair below 0.1, which must still refill.
_EPSILON = 1e-9


@dataclass(frozen=True)
class Rate:
    """A bucket's shape: ``burst`` units at once, then one every ``refill_seconds``."""

    burst: int
    refill_seconds: float

    def __post_init__(self) -> None:
        if self.burst < 1 or not math.isfinite(self.refill_seconds) or self.refill_seconds <= 0:
            raise ValueError(
                f"a rate needs burst >= 1 and a positive refill interval, got burst="
                f"{self.burst}, refill_seconds={self.refill_seconds}"
            )

    @classmethod
    def per_second(cls, rate: float, burst: int) -> Rate:
        """``rate`` units per second with room for ``burst`` at once."""
        if not rate > 0:
            raise ValueError(f"a rate needs a positive number per second, got {rate}")
        return cls(burst, 1.0 / rate)

    def describe(self) -> str:
        return f"at most {self.burst} at once, then 1 every {self.refill_seconds:g} s"

    def __str__(self) -> str:
        """``BURST/SECONDS``, the form command lines take."""
        return f"{self.burst}/{self.refill_seconds:g}"


class Bucket:
    """Tokens as of ``updated``; not thread-safe (its owner holds the lock)."""

    __slots__ = ("tokens", "updated")

    def __init__(self, rate: Rate, now: float) -> None:
        self.tokens = float(rate.burst)
        self.updated = now

    def level(self, rate: Rate, now: float) -> float:
        """Tokens at ``now`` (never above the burst)."""
        elapsed = max(0.0, now - self.updated)
        return min(float(rate.burst), self.tokens + elapsed / rate.refill_seconds)

    def has_token(self, rate: Rate, now: float) -> bool:
        return self.level(rate, now) >= 1.0 - _EPSILON

    def take(self, rate: Rate, now: float) -> None:
        """Take one token (call only after ``has_token``)."""
        self.tokens = max(0.0, self.level(rate, now) - 1.0)
        self.updated = now

    def wait(self, rate: Rate, now: float) -> float:
        """Seconds until the next token."""
        return max(0.0, (1.0 - self.level(rate, now)) * rate.refill_seconds)

    def is_full(self, rate: Rate, now: float) -> bool:
        """A full bucket is indistinguishable from a new one (its owner may forget it)."""
        return self.level(rate, now) >= rate.burst - _EPSILON
