"""``join.API/IssueJoinTicket`` request bytes: decoded as the server decodes them, then every
check the JoinService applies to the request before any I/O (disk UUID, CSR size, kubelet CSR).
"""

from __future__ import annotations

from collections.abc import Iterator

from constellation.attestation.service.handlers import decode_request
from constellation.joinservice.kubelet_cert import check_kubelet_csr
from constellation.joinservice.tickets import canonical_disk_uuid, check_csr_size
from constellation.proto import join_pb2
from targets import kubelet_csr

METHOD = "/join.API/IssueJoinTicket"


def seeds() -> Iterator[bytes]:
    for csr in list(kubelet_csr.seeds())[:3]:
        pem = csr if csr.startswith(b"-----BEGIN") else kubelet_csr.pem_of(csr)
        yield join_pb2.IssueJoinTicketRequest(
            disk_uuid="6ba7b810-9dad-11d1-80b4-00c04fd430c8",
            certificate_request=pem,
            is_control_plane=False,
        ).SerializeToString()
    yield join_pb2.IssueJoinTicketRequest(
        disk_uuid="6BA7B810-9DAD-11D1-80B4-00C04FD430C8", is_control_plane=True
    ).SerializeToString()


def target(data: bytes) -> None:
    request = decode_request(join_pb2.IssueJoinTicketRequest.FromString, data, METHOD)
    canonical_disk_uuid(request.disk_uuid)
    check_csr_size(request.certificate_request)
    check_kubelet_csr(request.certificate_request)
