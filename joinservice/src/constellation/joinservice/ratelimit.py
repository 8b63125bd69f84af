"""How often the JoinService admits a ticket request: token buckets per identity and overall.

Attestation proves *what* a machine runs, not that it asks politely: one attested machine can
open connection after connection, attest afresh each time, and ask for ticket after ticket
(each one a bootstrap token in the cluster and two KeyService calls). ``RateLimiter.admit``
runs before a request has any side effect and bounds that:

- **per identity**: each attested identity (its AK hash) has a bucket of ``per_identity.burst``
  tokens that refills one token every ``per_identity.refill_seconds`` (default 3, then one per
  20 s): enough for a join, a retry and a rejoin, too little to mint tokens in bulk;
- **overall** (optional): one bucket shared by every caller, so many identities together still
  cannot exhaust the API server or the KeyService.

A request is admitted only if both buckets hold a token, and only then are tokens taken;
otherwise ``RateLimitedError`` says which bound was hit and in how many seconds to retry.

The identity table is bounded (``max_identities``). A bucket that has refilled to ``burst``
is indistinguishable from a new one, so it is evicted without losing anything; if the table
is full of buckets still refilling, a *new* identity is refused until one of them is idle
(fail closed: nobody's history is forgotten early). The clock is injected (monotonic seconds).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from constellation.attestation.errors import Failure
from constellation.attestation.ratelimit import Bucket, Rate
from constellation.joinservice.errors import RateLimitedError

Clock = Callable[[], float]

#: Per attested identity: a join, a retry and a rejoin at once, then one every 20 s.
DEFAULT_PER_IDENTITY: Final = Rate(burst=3, refill_seconds=20.0)
#: Everyone together: 200 at once (a large cluster booting), then 100 per second - above what
#: one JoinService serves today (BENCHMARKS.md), so it bounds a flood, not a cluster's growth.
DEFAULT_OVERALL: Final = Rate(burst=200, refill_seconds=0.01)
DEFAULT_MAX_IDENTITIES: Final = 10_000


class RateLimiter:
    """Admits or refuses ticket requests by identity; thread-safe (one lock).

    A call is O(1) amortised; only when the table is full does it scan for idle buckets.
    """

    def __init__(
        self,
        *,
        per_identity: Rate = DEFAULT_PER_IDENTITY,
        overall: Rate | None = DEFAULT_OVERALL,
        max_identities: int = DEFAULT_MAX_IDENTITIES,
        clock: Clock = time.monotonic,
    ) -> None:
        if max_identities < 1:
            raise ValueError(f"max_identities must be >= 1, got {max_identities}")
        self._per_identity = per_identity
        self._overall_rate = overall
        self._max_identities = max_identities
        self._clock = clock
        self._lock = threading.Lock()
        # Least recently used first: the front is where idle buckets are found.
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()
        now = clock()
        self._overall = None if overall is None else Bucket(overall, now)

    def tracked(self) -> int:
        """How many identities have a bucket (for tests and metrics).

        Not ``__len__``: an empty limiter must not be falsy, or ``limiter or default`` would
        silently replace it.
        """
        with self._lock:
            return len(self._buckets)

    def admit(self, identity: str) -> None:
        """Take one token for ``identity`` (and one overall), or raise ``RateLimitedError``.

        Called before anything is created for the request, so a refused request costs the
        cluster nothing. Nothing is taken from either bucket when the request is refused.
        """
        with self._lock:
            now = self._clock()
            rate = self._per_identity
            bucket = self._buckets.get(identity)
            if bucket is None:
                self._make_room(now)
            if bucket is not None and not bucket.has_token(rate, now):
                raise RateLimitedError(
                    Failure(
                        check="rate.identity",
                        expected=f"ticket requests from one node identity {rate.describe()}",
                        actual="the bucket of this identity is empty",
                    ),
                    retry_after=bucket.wait(rate, now),
                )
            overall, overall_rate = self._overall, self._overall_rate
            if overall is not None and overall_rate is not None:
                if not overall.has_token(overall_rate, now):
                    raise RateLimitedError(
                        Failure(
                            check="rate.overall",
                            expected=f"ticket requests from all nodes {overall_rate.describe()}",
                            actual="the shared bucket is empty",
                        ),
                        retry_after=overall.wait(overall_rate, now),
                    )
                overall.take(overall_rate, now)
            if bucket is None:
                bucket = Bucket(rate, now)
                self._buckets[identity] = bucket
            else:
                self._buckets.move_to_end(identity)
            bucket.take(rate, now)

    def _make_room(self, now: float) -> None:
        """Evict idle (refilled) buckets so a new identity fits; refuse if none is idle."""
        rate = self._per_identity
        full = float(rate.burst)
        while self._buckets:
            _, oldest = next(iter(self._buckets.items()))
            if not oldest.is_full(rate, now):
                break
            self._buckets.popitem(last=False)
        if len(self._buckets) < self._max_identities:
            return
        # The LRU order is by last use, not by level: look further before refusing.
        idle = [key for key, b in self._buckets.items() if b.is_full(rate, now)]
        for key in idle:
            del self._buckets[key]
        if len(self._buckets) < self._max_identities:
            return
        soonest = min(
            (full - b.level(rate, now)) * rate.refill_seconds for b in self._buckets.values()
        )
        raise RateLimitedError(
            Failure(
                check="rate.identities",
                expected=f"at most {self._max_identities} node identities requesting at once",
                actual=f"{len(self._buckets)} identities still within their refill window",
            ),
            retry_after=soonest,
        )
