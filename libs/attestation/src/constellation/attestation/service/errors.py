"""Errors of the service plumbing shared by every Constellation gRPC server.

``ServiceError`` is the root; ``UndecodableRequestError`` is what a caller gets (as
INVALID_ARGUMENT, ``status.DEFAULT_STATUS_CODES``) when the bytes it sent are not a message of
the method's request type. grpcio's own answer would be INTERNAL ("Exception deserializing
request!"), which blames the server for the caller's bytes.
"""

from __future__ import annotations

from constellation.attestation.errors import ConstellationError


class ServiceError(ConstellationError):
    """Root of the errors the shared service plumbing raises."""


class UndecodableRequestError(ServiceError):
    """The request bytes do not decode as the method's request message."""

    def __init__(self, method: str, reason: str) -> None:
        self.method = method
        self.reason = reason
        super().__init__(
            f"request to {method or 'this method'} is not a valid protobuf message of its "
            f"request type ({reason}); send a message built from the service's .proto"
        )
