"""The gRPC code is generated at build time and matches the service names clients rely on."""

from __future__ import annotations

import pytest

from constellation.proto import (
    atls_pb2,
    init_pb2,
    join_pb2,
    kms_pb2,
    recover_pb2,
    verify_pb2,
)


@pytest.mark.parametrize(
    ("module", "full_name"),
    [
        (init_pb2, "init.API"),
        (join_pb2, "join.API"),
        (kms_pb2, "kms.API"),
        (verify_pb2, "verify.API"),
        (recover_pb2, "recoverproto.API"),
        (atls_pb2, "atls.Handshake"),
    ],
)
def test_service_full_names(module: object, full_name: str) -> None:
    services = module.DESCRIPTOR.services_by_name  # type: ignore[attr-defined]
    assert [s.full_name for s in services.values()] == [full_name]


def test_kms_field_numbers() -> None:
    req = kms_pb2.GetDataKeyRequest.DESCRIPTOR.fields_by_name
    assert (req["data_key_id"].number, req["length"].number) == (1, 2)
    assert kms_pb2.GetDataKeyResponse.DESCRIPTOR.fields_by_name["data_key"].number == 1


def test_verify_field_numbers() -> None:
    assert verify_pb2.GetAttestationRequest.DESCRIPTOR.fields_by_name["nonce"].number == 2
    assert verify_pb2.GetAttestationResponse.DESCRIPTOR.fields_by_name["attestation"].number == 1


def test_join_ticket_round_trip() -> None:
    msg = join_pb2.IssueJoinTicketResponse(token="abcdef.0123456789abcdef", state_disk_key=b"k")
    again = join_pb2.IssueJoinTicketResponse.FromString(msg.SerializeToString())
    assert again.token == msg.token
    assert again.state_disk_key == b"k"
