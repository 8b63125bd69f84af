"""``atls.Handshake/Attest`` request bytes (the unauthenticated first step of every aTLS
connection): decoded as the server decodes them."""

from __future__ import annotations

from collections.abc import Iterator

from constellation.attestation.service.handlers import decode_request
from constellation.proto import atls_pb2

METHOD = "/atls.Handshake/Attest"


def seeds() -> Iterator[bytes]:
    yield atls_pb2.AttestRequest().SerializeToString()


def target(data: bytes) -> None:
    decode_request(atls_pb2.AttestRequest.FromString, data, METHOD)
