"""What an aTLS peer sends: evidence with its variant, server nonces, TLS certificates.

Modes (first input byte):

0. the evidence a peer presents (handshake answer or call metadata): a variant name and a
   document (u16-length-split), through ``verify_peer_evidence`` with a vTPM validator;
1. a server nonce a client returns, through ``NonceStore.check`` and ``spend`` (fixed key and
   clock; a genuine nonce is a seed);
2. a server certificate's DER (the client pins its SPKI hash: ``spki_hash_of_der``);
3. a client certificate's PEM as the TLS layer hands it to the server
   (``server._client_certificate``) and ``spki_hash_of_pem``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from constellation.attestation.atls import server
from constellation.attestation.atls.certificates import (
    new_client_identity,
    spki_hash_of_der,
    spki_hash_of_pem,
)
from constellation.attestation.atls.nonces import NonceStore
from constellation.attestation.atls.protocol import atls_user_data, verify_peer_evidence
from constellation.attestation.measurements import Measurements
from constellation.attestation.testing.platform import node_validator
from targets._shapes import join, split
from targets.vtpm_document import FIELDS, NONCE

VALIDATORS = (node_validator(Measurements()),)
BINDING = hashlib.sha256(b"client certificate").digest()
NONCES = NonceStore(key=bytes(32), clock=lambda: 1000.0)
IDENTITY = new_client_identity()


class _Context:
    """The one thing ``_client_certificate`` reads from a gRPC call: its auth context."""

    def __init__(self, pem: bytes) -> None:
        self._pem = pem

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"x509_pem_cert": [self._pem]}


def seeds() -> Iterator[bytes]:
    yield b"\x00" + join(b"qemu-vtpm", FIELDS.encoded)
    yield b"\x01" + NONCES.issue(BINDING)
    yield b"\x02" + IDENTITY.cert_der
    yield b"\x03" + IDENTITY.cert_pem


def target(data: bytes) -> None:
    if not data:
        return
    mode, rest = data[0] % 4, data[1:]
    if mode == 0:
        variant, document = split(rest, 2)
        verify_peer_evidence(
            VALIDATORS,
            variant=variant.decode("utf-8", "replace"),
            document=document,
            nonce=NONCE,
            expected_user_data=atls_user_data(bytes(32)),
            subject="aTLS peer",
        )
    elif mode == 1:
        NONCES.check(rest, BINDING)
    elif mode == 2:
        spki_hash_of_der(rest)
    else:
        server._client_certificate(_Context(rest))  # type: ignore[arg-type]
        spki_hash_of_pem(rest)
