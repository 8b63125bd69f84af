"""``recoverproto.API/Recover`` request bytes: decoded as the server decodes them, then the
request checks and the key derivations the recovery server runs before it touches the disk."""

from __future__ import annotations

from collections.abc import Iterator

from constellation.attestation.kdf import derive_cluster_id, derive_measurement_secret
from constellation.attestation.service.handlers import decode_request
from constellation.bootstrapper.initserver import state_disk_key
from constellation.bootstrapper.recoveryserver import validate_recover_message
from constellation.proto import recover_pb2

METHOD = "/recoverproto.API/Recover"


def seeds() -> Iterator[bytes]:
    yield recover_pb2.RecoverMessage(
        master_secret=b"M" * 32, master_salt=b"S" * 32
    ).SerializeToString()
    yield recover_pb2.RecoverMessage(
        master_secret=b"M" * 512, master_salt=b"S" * 31
    ).SerializeToString()


def target(data: bytes) -> None:
    request = decode_request(recover_pb2.RecoverMessage.FromString, data, METHOD)
    validate_recover_message(request)
    state_disk_key(
        request.master_secret, request.master_salt, "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
    )
    derive_cluster_id(
        derive_measurement_secret(request.master_secret, request.master_salt), b"\0" * 32
    )
