"""``kms.API/GetDataKey`` request bytes: decoded as the server decodes them, then the request
checks and the key derivation the KeyService runs (no I/O)."""

from __future__ import annotations

from collections.abc import Iterator

from constellation.attestation.service.handlers import decode_request
from constellation.keyservice.keys import DataKeys, MasterSecret
from constellation.proto import kms_pb2

METHOD = "/kms.API/GetDataKey"
KEYS = DataKeys(MasterSecret(key=b"K" * 32, salt=b"S" * 32))


def seeds() -> Iterator[bytes]:
    yield kms_pb2.GetDataKeyRequest(
        data_key_id="key-6ba7b810-9dad-11d1-80b4-00c04fd430c8", length=32
    ).SerializeToString()
    yield kms_pb2.GetDataKeyRequest(data_key_id="measurementSecret", length=32).SerializeToString()


def target(data: bytes) -> None:
    request = decode_request(kms_pb2.GetDataKeyRequest.FromString, data, METHOD)
    KEYS.derive(request.data_key_id, request.length)
