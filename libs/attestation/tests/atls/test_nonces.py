"""Freshness state: single use, expiry and the size bound (P3)."""

from __future__ import annotations

import pytest

from constellation.attestation.atls.nonces import NONCE_SIZE, NonceStore, VerifiedPeers
from constellation.attestation.evidence import VerifiedEvidence


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_nonce_is_accepted_exactly_once():
    store = NonceStore()
    nonce = store.issue()
    assert len(nonce) == NONCE_SIZE
    assert store.consume(nonce)
    assert not store.consume(nonce)


def test_unknown_nonce_refused():
    assert not NonceStore().consume(b"\x00" * NONCE_SIZE)


def test_expired_nonce_refused():
    clock = Clock()
    store = NonceStore(ttl=10, clock=clock)
    nonce = store.issue()
    clock.now += 10
    assert not store.consume(nonce)


def test_store_is_bounded_and_evicts_oldest():
    store = NonceStore(capacity=3)
    nonces = [store.issue() for _ in range(5)]
    assert len(store) == 3
    assert not store.consume(nonces[0])
    assert not store.consume(nonces[1])
    assert all(store.consume(n) for n in nonces[2:])


def test_expired_entries_are_dropped_on_insert():
    clock = Clock()
    store = NonceStore(ttl=5, clock=clock)
    for _ in range(10):
        store.issue()
    clock.now += 6
    store.issue()
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
