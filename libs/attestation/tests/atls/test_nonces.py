"""Freshness state: stateless bound nonces, single use, expiry, fail-closed bound (P3)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from constellation.attestation.atls.errors import NonceCapacityError, NonceRefusedError
from constellation.attestation.atls.nonces import NonceStore, VerifiedPeers
from constellation.attestation.atls.protocol import SERVER_NONCE_SIZE
from constellation.attestation.evidence import VerifiedEvidence


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


CERT = hashlib.sha256(b"client certificate DER").digest()
OTHER_CERT = hashlib.sha256(b"another client certificate DER").digest()


def _spend(store: NonceStore, nonce: bytes, binding: bytes = CERT) -> None:
    """What the gate does around a successful verification."""
    store.check(nonce, binding)
    store.spend(nonce)


def test_nonce_layout_is_random_expiry_tag():
    clock = Clock()
    store = NonceStore(ttl=120, clock=clock, key=b"k" * 32)
    nonce = store.issue(CERT)
    assert len(nonce) == SERVER_NONCE_SIZE == 40
    assert int.from_bytes(nonce[16:24], "big") == 1120
    tag = hmac.new(b"k" * 32, nonce[:24] + CERT, hashlib.sha256).digest()[:16]
    assert nonce[24:] == tag
    assert store.issue(CERT)[:16] != nonce[:16]


def test_nonce_is_accepted_exactly_once():
    store = NonceStore()
    nonce = store.issue(CERT)
    _spend(store, nonce)
    with pytest.raises(NonceRefusedError, match="already used"):
        store.check(nonce, CERT)
    with pytest.raises(NonceRefusedError, match="already used"):
        store.spend(nonce)  # a concurrent call that checked before the first one spent


def test_issuing_stores_nothing():
    store = NonceStore(capacity=1)
    for _ in range(5000):
        store.issue(CERT)
    assert len(store) == 0


def test_nonce_of_another_certificate_refused():
    store = NonceStore()
    nonce = store.issue(CERT)
    with pytest.raises(NonceRefusedError, match="this client certificate"):
        store.check(nonce, OTHER_CERT)


@pytest.mark.parametrize(
    "forge",
    [
        lambda n: bytes(40),
        lambda n: n[:-1] + bytes([n[-1] ^ 1]),  # tag
        lambda n: n[:16] + (2**63).to_bytes(8, "big") + n[24:],  # a later expiry
        lambda n: bytes([n[0] ^ 1]) + n[1:],  # random part
    ],
)
def test_forged_nonce_refused(forge):
    store = NonceStore()
    with pytest.raises(NonceRefusedError, match="not issued by this server"):
        store.check(forge(store.issue(CERT)), CERT)


@pytest.mark.parametrize("size", [0, 32, 39, 41])
def test_nonce_of_wrong_length_refused(size):
    with pytest.raises(NonceRefusedError, match="40 bytes"):
        NonceStore().check(bytes(size), CERT)


def test_nonce_of_another_server_process_refused():
    with pytest.raises(NonceRefusedError, match="not issued by this server"):
        NonceStore().check(NonceStore().issue(CERT), CERT)


def test_expired_nonce_refused():
    clock = Clock()
    store = NonceStore(ttl=10, clock=clock)
    nonce = store.issue(CERT)
    clock.now += 9.5
    store.check(nonce, CERT)
    clock.now += 1
    with pytest.raises(NonceRefusedError, match="expired"):
        store.check(nonce, CERT)


def test_spent_set_is_bounded_and_fails_closed():
    clock = Clock()
    store = NonceStore(capacity=3, ttl=10, clock=clock)
    spent = [store.issue(CERT) for _ in range(3)]
    for nonce in spent:
        _spend(store, nonce)
    extra = store.issue(CERT)
    store.check(extra, CERT)
    with pytest.raises(NonceCapacityError, match="retry later"):
        store.spend(extra)
    # Nothing was forgotten to make room: the spent nonces stay refused.
    for nonce in spent:
        with pytest.raises(NonceRefusedError, match="already used"):
            store.check(nonce, CERT)


def test_spent_entries_leave_with_their_expiry():
    clock = Clock()
    store = NonceStore(capacity=2, ttl=5, clock=clock)
    _spend(store, store.issue(CERT))
    _spend(store, store.issue(CERT))
    clock.now += 6
    _spend(store, store.issue(CERT))
    assert len(store) == 1


@pytest.mark.parametrize(("capacity", "ttl"), [(0, 1.0), (1, 0.0)])
def test_nonsense_bounds_rejected(capacity, ttl):
    with pytest.raises(ValueError, match="capacity"):
        NonceStore(capacity=capacity, ttl=ttl)


def test_verified_peers_expire():
    clock = Clock()
    peers = VerifiedPeers(ttl=60, clock=clock)
    evidence = VerifiedEvidence("v", b"u")
    session = peers.remember(b"fp", evidence)
    assert session.evidence is evidence
    assert peers.lookup(b"fp") is session
    assert peers.lookup(b"fp") is session  # lookups do not consume
    clock.now += 60
    assert peers.lookup(b"fp") is None


def test_an_attestation_is_spent_once_per_purpose():
    peers = VerifiedPeers()
    session = peers.remember(b"fp", VerifiedEvidence("v", b"u"))
    assert session.claim("join-ticket")
    assert not session.claim("join-ticket")
    assert peers.lookup(b"fp").claim("rejoin-ticket")
    # A fresh attestation of the same certificate is a new session with nothing spent.
    assert peers.remember(b"fp", VerifiedEvidence("v", b"u")).claim("join-ticket")
