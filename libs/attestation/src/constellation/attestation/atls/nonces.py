"""Server-side freshness state of aTLS: stateless server nonces and already-verified clients.

``NonceStore`` issues the server nonces of ``Attest`` *without remembering them*, so no number
of unauthenticated ``Attest`` calls can push out the nonce a legitimate client is about to use
(the old bounded store of outstanding nonces could be flushed by 4,097 calls). A nonce is::

    random(16) || expiry (u64be) || HMAC-SHA256(key, random || expiry || binding)[:16]

- ``key``: 32 random bytes drawn when the server starts, never leaving its memory;
- ``binding``: SHA-256 of the DER client certificate of the ``Attest`` call. A mutual server
  always sees one (TLS demands it), and the attested call that spends the nonce must come with
  the same certificate: a nonce obtained over one TLS identity is refused for any other;
- ``expiry``: whole seconds of ``time.monotonic()`` (rounded up) after which the nonce is
  refused. A monotonic clock suffices and is the right one: only this process knows the key,
  so only this process ever checks its nonces, against the same clock that stamped them, and
  that clock never jumps when the wall clock is stepped (NTP, an operator, a suspended VM's
  catch-up). Nonces of an earlier process die with its key.

Spending (P3): the gate first ``check``s a nonce (tag for *this* call's certificate, not
expired, not spent), then verifies the evidence, and only then ``spend``s it. The spent set
holds only nonces whose evidence verified, so unauthenticated callers cannot grow it; entries
leave it when their nonce expires. It is bounded: when full of unexpired nonces the store fails
closed (``NonceCapacityError``) rather than forgetting a spent nonce, which would re-open it.

``VerifiedPeers`` remembers, per client certificate, the evidence that was verified for it.
Later calls over any TLS connection that authenticates the same certificate (and hence proves
possession of the same attested key) are let through without spending another nonce. It is
bounded and expiring; an evicted client is asked for fresh evidence. Only verified clients
enter it.

What it remembers is an ``AttestationSession``: the evidence plus the one-shot uses that
evidence has been spent on. Remembering a verdict keeps a connection usable; it must not let
one attestation buy a secret twice, so a handler that hands out something countable (a join
ticket) claims the session for that purpose and is refused a second claim
(``AttestationSession.claim``). A fresh attestation starts a fresh session.

Both take a monotonic clock so tests can drive expiry without sleeping.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from constellation.attestation.atls.errors import NonceCapacityError, NonceRefusedError
from constellation.attestation.atls.protocol import CLIENT_NONCE_SIZE, SERVER_NONCE_SIZE
from constellation.attestation.evidence import VerifiedEvidence

#: Length of the client's nonce (DESIGN.md §3: nonces are 32 random bytes).
NONCE_SIZE = CLIENT_NONCE_SIZE

_RANDOM_SIZE = 16
_EXPIRY_SIZE = 8
_TAG_SIZE = SERVER_NONCE_SIZE - _RANDOM_SIZE - _EXPIRY_SIZE
_BINDING_SIZE = 32

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
    """Stateless, certificate-bound, expiring server nonces and the set of spent ones."""

    def __init__(
        self,
        capacity: int = 4096,
        ttl: float = 120.0,
        clock: Clock = time.monotonic,
        *,
        key: bytes | None = None,
    ) -> None:
        if capacity < 1 or ttl <= 0:
            raise ValueError("capacity must be >= 1 and ttl > 0")
        self._capacity = capacity
        self.ttl = ttl
        self._clock = clock
        self._key = key if key is not None else os.urandom(32)
        self._spent: dict[bytes, float] = {}
        self._lock = threading.Lock()

    def issue(self, binding: bytes) -> bytes:
        """A fresh nonce for the client certificate whose SHA-256 is ``binding``. Stores nothing."""
        _check_binding(binding)
        random = os.urandom(_RANDOM_SIZE)
        expiry = math.ceil(self._clock() + self.ttl).to_bytes(_EXPIRY_SIZE, "big")
        return random + expiry + self._tag(random, expiry, binding)

    def check(self, nonce: bytes, binding: bytes) -> None:
        """Raise ``NonceRefusedError`` unless the nonce is ours, for ``binding``, live, unspent."""
        _check_binding(binding)
        if len(nonce) != SERVER_NONCE_SIZE:
            raise NonceRefusedError(
                f"aTLS: server nonce must be {SERVER_NONCE_SIZE} bytes, got {len(nonce)}; "
                "repeat the handshake"
            )
        random = nonce[:_RANDOM_SIZE]
        expiry = nonce[_RANDOM_SIZE : _RANDOM_SIZE + _EXPIRY_SIZE]
        tag = nonce[_RANDOM_SIZE + _EXPIRY_SIZE :]
        if not hmac.compare_digest(tag, self._tag(random, expiry, binding)):
            raise NonceRefusedError(
                "aTLS: nonce was not issued by this server to this client certificate; "
                "repeat the handshake with the certificate that will make the call"
            )
        if self._clock() >= int.from_bytes(expiry, "big"):
            raise NonceRefusedError(
                f"aTLS: nonce expired (nonces are valid for {self.ttl:g} s); repeat the handshake"
            )
        with self._lock:
            if nonce in self._spent:
                raise NonceRefusedError("aTLS: nonce already used; repeat the handshake")

    def spend(self, nonce: bytes) -> None:
        """Record a checked nonce whose evidence verified; it is refused from now on.

        Raises ``NonceRefusedError`` if a concurrent call spent it first, and
        ``NonceCapacityError`` if the spent set is full of unexpired nonces (fail closed).
        """
        expiry = float(int.from_bytes(nonce[_RANDOM_SIZE : _RANDOM_SIZE + _EXPIRY_SIZE], "big"))
        with self._lock:
            if nonce in self._spent:
                raise NonceRefusedError("aTLS: nonce already used; repeat the handshake")
            if len(self._spent) >= self._capacity:
                now = self._clock()
                self._spent = {n: e for n, e in self._spent.items() if e > now}
            if len(self._spent) >= self._capacity:
                raise NonceCapacityError(
                    f"aTLS: {self._capacity} attestations were accepted within the last "
                    f"{self.ttl:g} s, the most this server tracks; retry later"
                )
            self._spent[nonce] = expiry

    def __len__(self) -> int:
        """The number of spent nonces held (expired ones may linger until the set fills)."""
        with self._lock:
            return len(self._spent)

    def _tag(self, random: bytes, expiry: bytes, binding: bytes) -> bytes:
        return hmac.new(self._key, random + expiry + binding, hashlib.sha256).digest()[:_TAG_SIZE]


def _check_binding(binding: bytes) -> None:
    if len(binding) != _BINDING_SIZE:
        raise ValueError(f"a nonce binding is a SHA-256 digest, got {len(binding)} bytes")


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
