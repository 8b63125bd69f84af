"""``join.API/IssueRejoinTicket`` request bytes: decoded as the server decodes them, then the
disk-UUID check the JoinService applies before any I/O."""

from __future__ import annotations

from collections.abc import Iterator

from constellation.attestation.service.handlers import decode_request
from constellation.joinservice.tickets import canonical_disk_uuid
from constellation.proto import join_pb2

METHOD = "/join.API/IssueRejoinTicket"


def seeds() -> Iterator[bytes]:
    yield join_pb2.IssueRejoinTicketRequest(
        disk_uuid="6ba7b810-9dad-11d1-80b4-00c04fd430c8"
    ).SerializeToString()
    yield join_pb2.IssueRejoinTicketRequest(disk_uuid="not-a-uuid").SerializeToString()


def target(data: bytes) -> None:
    request = decode_request(join_pb2.IssueRejoinTicketRequest.FromString, data, METHOD)
    canonical_disk_uuid(request.disk_uuid)
