"""The VerificationService's requests: ``verify.API/GetAttestation`` bytes (first byte 0) or the
HTTP query string of ``GET /?nonce=...`` (first byte 1); each through the checks the service runs
before it asks the TPM for evidence."""

from __future__ import annotations

from collections.abc import Iterator

from constellation.attestation.service.handlers import decode_request
from constellation.proto import verify_pb2
from constellation.verificationservice.evidence import check_nonce, nonce_from_query

METHOD = "/verify.API/GetAttestation"


def seeds() -> Iterator[bytes]:
    yield b"\x00" + verify_pb2.GetAttestationRequest(nonce=bytes(range(32))).SerializeToString()
    yield b"\x01nonce=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
    yield b"\x01nonce=AAECAwQFBgcICQoLDA0ODw%3D%3D&x=1"


def target(data: bytes) -> None:
    if not data:
        return
    if data[0] % 2 == 0:
        request = decode_request(verify_pb2.GetAttestationRequest.FromString, data[1:], METHOD)
        check_nonce(request.nonce)
    else:
        nonce_from_query(data[1:].decode("latin-1"))
