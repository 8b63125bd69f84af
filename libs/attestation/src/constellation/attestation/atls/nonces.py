"""Server-side freshness state of aTLS: issued nonces and already-verified client keys.

``NonceStore`` holds the nonces a server handed out in ``Attest``. A nonce is accepted exactly
once and only before it expires (P3). The store is bounded: when full, expired entries go
first, then the oldest outstanding nonce (its client simply has to handshake again), so an
unauthenticated caller flooding ``Attest`` can cost memory only up to the bound.

``VerifiedPeers`` remembers, per client certificate, the evidence that was verified for it.
Later calls over any TLS connection that authenticates the same certificate (and hence proves
possession of the same attested key) are let through without consuming another nonce. It is
bounded and expiring in the same way; an evicted client is asked for fresh evidence.

What it remembers is an ``AttestationSession``: the evidence plus the one-shot uses that
evidence has been spent on. Remembering a verdict keeps a connection usable; it must not let
one attestation buy a secret twice, so a handler that hands out something countable (a join
ticket) claims the session for that purpose and is refused a second claim
(``AttestationSession.claim``). A fresh attestation starts a fresh session.

Both take a monotonic clock so tests can drive expiry without sleeping.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from constellation.attestation.evidence import VerifiedEvidence

#: Length of every aTLS nonce (DESIGN.md §3: nonces are 32 random bytes).
NONCE_SIZE = 32

Clock = Callable[[], float]
_V = TypeVar("_V")


class _ExpiringMap(Generic[_V]):
    """A thread-safe, insertion-ordered map with a size bound and per-entry expiry."""

    def __init__(self, capacity: int, ttl: float, clock: Clock) -> None:
        if capacity < 1 or ttl <= 0:
            raise ValueError("capacity must be >= 1 and ttl > 0")
        self._capacity = capacity
        self._ttl = ttl
        self._clock = clock
        self._entries: OrderedDict[bytes, tuple[float, _V]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, key: bytes, value: _V) -> None:
        with self._lock:
            now = self._clock()
            self._expire(now)
            self._entries.pop(key, None)
            while len(self._entries) >= self._capacity:
                self._entries.popitem(last=False)
            self._entries[key] = (now + self._ttl, value)

    def get(self, key: bytes, *, remove: bool) -> _V | None:
        with self._lock:
            now = self._clock()
            entry = self._entries.pop(key, None) if remove else self._entries.get(key)
            if entry is None:
                return None
            deadline, value = entry
            if deadline <= now:
                self._entries.pop(key, None)
                return None
            return value

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def _expire(self, now: float) -> None:
        # Entries are in insertion order and share one ttl, so expired ones are at the front.
        while self._entries:
            key, (deadline, _) = next(iter(self._entries.items()))
            if deadline > now:
                break
            del self._entries[key]


class NonceStore:
    """Single-use, expiring server nonces."""

    def __init__(
        self, capacity: int = 4096, ttl: float = 120.0, clock: Clock = time.monotonic
    ) -> None:
        self._nonces: _ExpiringMap[bool] = _ExpiringMap(capacity, ttl, clock)

    def issue(self) -> bytes:
        """A fresh random nonce, remembered until consumed or expired."""
        nonce = os.urandom(NONCE_SIZE)
        self._nonces.put(nonce, True)
        return nonce

    def consume(self, nonce: bytes) -> bool:
        """True exactly once for a nonce this store issued and that has not expired."""
        return self._nonces.get(nonce, remove=True) is not None

    def __len__(self) -> int:
        return len(self._nonces)


class AttestationSession:
    """One verified attestation of a client key, and the one-shot purposes it was spent on."""

    def __init__(self, evidence: VerifiedEvidence) -> None:
        self.evidence = evidence
        self._claimed: set[str] = set()
        self._lock = threading.Lock()

    def claim(self, purpose: str) -> bool:
        """True the first time ``purpose`` is claimed on this attestation, False afterwards."""
        with self._lock:
            if purpose in self._claimed:
                return False
            self._claimed.add(purpose)
            return True


class VerifiedPeers:
    """Attestations already verified for a client certificate (keyed by SHA-256 of its DER)."""

    def __init__(
        self, capacity: int = 1024, ttl: float = 600.0, clock: Clock = time.monotonic
    ) -> None:
        self._peers: _ExpiringMap[AttestationSession] = _ExpiringMap(capacity, ttl, clock)

    def remember(self, cert_fingerprint: bytes, evidence: VerifiedEvidence) -> AttestationSession:
        """Start a new session for freshly verified ``evidence`` (replacing any older one)."""
        session = AttestationSession(evidence)
        self._peers.put(cert_fingerprint, session)
        return session

    def lookup(self, cert_fingerprint: bytes) -> AttestationSession | None:
        return self._peers.get(cert_fingerprint, remove=False)

    def forget_all(self) -> None:
        """Drop every remembered client, so each must attest again (new trusted inputs)."""
        self._peers.clear()
