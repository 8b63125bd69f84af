"""The one place that talks to the KeyService.

The KeyService derives every key from the cluster's master secret (DESIGN.md §3):
``GetDataKey(id, L) = HKDF-SHA256(master_key, master_salt, "key-" + id, L)``. The JoinService
asks it for exactly two kinds of key:

- a node's state-disk key, ``GetDataKey(lowercase(disk_uuid), 32)``;
- the cluster's measurement secret, ``GetDataKey("measurementSecret", 32)``.

Keys come back wrapped in ``SecretBytes`` (:mod:`constellation.attestation.secret`) so that no
log line, exception message or debugger repr ever shows them. Every call has a deadline and a
bounded number of attempts.
"""

from __future__ import annotations

import time
from typing import Final

import grpc

from constellation.attestation.secret import SecretBytes
from constellation.joinservice.errors import UpstreamError
from constellation.proto import kms_pb2, kms_pb2_grpc

STATE_DISK_KEY_LENGTH: Final = 32
MEASUREMENT_SECRET_LENGTH: Final = 32
MEASUREMENT_SECRET_ID: Final = "measurementSecret"  # noqa: S105 - a key id, not a key

# Codes worth a second attempt: the KeyService pod may be restarting or briefly overloaded.
_RETRYABLE: Final = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


class KeyServiceClient:
    """Client of ``kms.API`` over plain gRPC (the KeyService is ClusterIP-only, DESIGN.md §6).

    ``channel`` is passed in so tests and the service decide where it points; the client owns
    neither its lifetime nor its address.
    """

    def __init__(
        self,
        channel: grpc.Channel,
        *,
        timeout: float = 5.0,
        attempts: int = 3,
        backoff: float = 0.2,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self._stub = kms_pb2_grpc.APIStub(channel)
        self._timeout = timeout
        self._attempts = attempts
        self._backoff = backoff

    def get_data_key(self, data_key_id: str, length: int) -> SecretBytes:
        """Fetch one derived key; raise ``UpstreamError`` after the bounded attempts fail."""
        request = kms_pb2.GetDataKeyRequest(data_key_id=data_key_id, length=length)
        last: grpc.RpcError | None = None
        for attempt in range(self._attempts):
            try:
                response = self._stub.GetDataKey(request, timeout=self._timeout)
            except grpc.RpcError as err:
                last = err
                if err.code() not in _RETRYABLE or attempt == self._attempts - 1:
                    break
                time.sleep(self._backoff * (2**attempt))
                continue
            if len(response.data_key) != length:
                raise UpstreamError(
                    f"KeyService returned {len(response.data_key)} bytes for a {length}-byte "
                    "key; check that the KeyService and JoinService versions match"
                )
            return SecretBytes(response.data_key)
        code = last.code().name if last is not None else "UNKNOWN"
        # The id is not secret (a disk UUID or a fixed name); the details string is the
        # KeyService's own, which never contains key material.
        details = last.details() if last is not None else ""
        raise UpstreamError(f"KeyService GetDataKey({data_key_id!r}) failed: {code} {details}")

    def state_disk_key(self, disk_uuid: str) -> SecretBytes:
        """The state-disk key of the disk with LUKS UUID ``disk_uuid`` (case-insensitive)."""
        return self.get_data_key(disk_uuid.lower(), STATE_DISK_KEY_LENGTH)

    def measurement_secret(self) -> SecretBytes:
        """The cluster's measurement secret, from which the cluster ID is derived."""
        return self.get_data_key(MEASUREMENT_SECRET_ID, MEASUREMENT_SECRET_LENGTH)
