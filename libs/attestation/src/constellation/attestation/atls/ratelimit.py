"""A token bucket bounding how fast unauthenticated callers can make a server attest.

Issuing evidence (a TPM quote) and validating a peer's evidence cost milliseconds of a scarce
resource, and anybody who can reach the port may ask for either. One global bucket per server
bounds that work: it holds at most ``burst`` tokens, refills at ``rate`` tokens per second,
and each unit of work takes one token. When it is empty the caller is refused at once with
:class:`RateLimitedError`, which says how long to wait - no queue builds up, and legitimate
clients (which retry with backoff) get through as soon as the flood pauses.

The bucket is global on purpose: per-caller buckets need a caller identity, and before
attestation there is none worth trusting (addresses are cheap, certificates are free).
The clock is injectable (monotonic by default) so tests drive refills without sleeping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from constellation.attestation.atls.errors import RateLimitedError
from constellation.attestation.ratelimit import Bucket, Rate

#: Defaults: generous for a cluster's joins and verifications, far below what floods a TPM.
DEFAULT_RATE_PER_SECOND = 200.0
DEFAULT_BURST = 400


class TokenBucket:
    """Thread-safe, global token bucket; :meth:`acquire` takes one token or raises."""

    def __init__(
        self,
        rate: float = DEFAULT_RATE_PER_SECOND,
        burst: int = DEFAULT_BURST,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = float(rate)
        self.burst = burst
        self._shape = Rate.per_second(rate, burst)
        self._clock = clock
        self._bucket = Bucket(self._shape, clock())
        self._lock = threading.Lock()

    def acquire(self) -> None:
        """Take one token; raise ``RateLimitedError`` (with the wait) if none is left."""
        with self._lock:
            now = self._clock()
            if not self._bucket.has_token(self._shape, now):
                raise RateLimitedError(self._bucket.wait(self._shape, now))
            self._bucket.take(self._shape, now)
