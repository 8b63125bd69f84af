"""Malformed input against the live mini cluster, the way a loopback attacker sends it.

Issue 14 made every parser of untrusted bytes answer with a typed refusal; the unit tests and
the fuzz targets prove it function by function. This module proves it at the doors an attacker
on the loopback actually reaches, on the running services:

- **every gRPC method it can reach** (the JoinService's ``IssueJoinTicket``,
  ``IssueRejoinTicket``, the aTLS ``Attest`` step and health on its mutual aTLS port; each
  VerificationService's ``GetAttestation`` and health; the KeyService's plaintext health port)
  gets bytes that are no request message at all, a real request cut short, a string field
  that is not UTF-8, and a message above the receive limit. The bytes are sent as they are
  (``channel.unary_unary(path, request_serializer=None, ...)``), so no client library
  stands between them and the server. Undecodable bytes are INVALID_ARGUMENT (the shared
  ``attestation.service`` decoder, before any caller check), an oversized message
  RESOURCE_EXHAUSTED (grpcio's default 4 MiB receive limit: no server configures another);
- **requests that decode but have every field of the wrong length or shape**: an outsider
  never gets past the aTLS client gate (UNAUTHENTICATED), whatever the fields hold; a
  platform-certified insider gets through, and its malformed disk UUIDs and CSRs (the kubelet
  CSR findings of FUZZING.md) are INVALID_ARGUMENT naming what was wrong; malformed aTLS
  metadata (evidence, nonce, variant) is refused by the gate with its own codes;
- **the KeyService's mutual TLS port** refuses any bytes of a caller without a client
  certificate of its cluster CA at the TLS handshake (UNAVAILABLE): nothing is decoded;
- **the nodes' bootstrappers** serve nothing once the cluster is up (their init ports close);
- **the VerificationService's HTTP endpoint** answers malformed queries and request lines with
  the documented 4xx (400 for a bad nonce, 404, 405, 414), never 500.

After each attack a positive control shows the service still serves. When the session ends,
the ``attacker`` fixture (conftest) scans every log of the cluster for a traceback or a status
INTERNAL: no attack of any tamper module may produce an untyped error server-side.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import socket
import ssl
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from constellation.attestation.atls.certificates import new_client_identity
from constellation.attestation.atls.protocol import MAX_EVIDENCE_SIZE
from constellation.bootstrapper.registration import create_kubelet_identity
from constellation.joinservice.tickets import MAX_CSR_SIZE
from constellation.proto import atls_pb2, join_pb2, kms_pb2, verify_pb2, verify_pb2_grpc

from .conftest import LOOPBACK, RPC_TIMEOUT_S, Attacker, Refusal, ServerLogs

pytestmark = [pytest.mark.tamper, pytest.mark.e2e, pytest.mark.slow, pytest.mark.swtpm]

INVALID = grpc.StatusCode.INVALID_ARGUMENT
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
DENIED = grpc.StatusCode.PERMISSION_DENIED

#: grpcio's default ``grpc.max_receive_message_length``. No Constellation server sets another
#: (the aTLS servers raise only the metadata limits, ``atls.protocol.GRPC_OPTIONS``).
RECEIVE_LIMIT = 4 * 1024 * 1024
#: What the shared decoder says about bytes that are not the method's request message.
UNDECODABLE = "not a valid protobuf message of its request type"
#: What grpcio says about a message above the receive limit.
TOO_LARGE = "larger than max"


# -- sending bytes as they are ------------------------------------------------------------------


def send(
    channel: grpc.Channel,
    method: str,
    data: bytes,
    metadata: Sequence[tuple[str, str | bytes]] = (),
) -> Refusal:
    """``data`` as the request of ``method``, unserialized: exactly these bytes reach the server."""
    call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    return Refusal.of(lambda: call(data, metadata=tuple(metadata), timeout=RPC_TIMEOUT_S))


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field_bytes(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field: tag, length, payload."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def oversized() -> bytes:
    """A well-formed message (one bytes field 1) a little above the receive limit."""
    return field_bytes(1, b"\0" * (RECEIVE_LIMIT + 16))


@dataclass(frozen=True)
class Door:
    """One gRPC method on one port, with a genuine request and a positive control."""

    name: str
    method: str
    message: type[Message]
    genuine: Callable[[], Message]
    #: Field 1 is a ``string`` (UTF-8 is checked when decoding) rather than ``bytes``.
    string_field: bool
    channel: Callable[[Attacker], grpc.Channel]
    serves: Callable[[Attacker], None]

    def malformed(self) -> dict[str, bytes]:
        """Bytes that do not decode as ``message``, by kind (checked here, locally)."""
        real = self.genuine().SerializeToString()
        kinds = {
            "not-protobuf": b"\xff\xff\xff\xff",
            "http-text": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            "truncated": real[: len(real) // 2],
            "length-overrun": varint(1 << 3 | 2) + varint(100) + b"abc",
            "unterminated-group": varint(1 << 3 | 3) + b"\x08\x01",
        }
        if self.string_field:
            kinds["string-not-utf8"] = field_bytes(1, b"\xff\xfe\xfd")
        for kind, data in kinds.items():
            with pytest.raises(DecodeError):
                self.message.FromString(data)
            assert data, kind
        return kinds


def _joinservice(attacker: Attacker) -> grpc.Channel:
    return attacker.tls_channel()[0]


def _verification(node: str) -> Callable[[Attacker], grpc.Channel]:
    def channel(attacker: Attacker) -> grpc.Channel:
        return grpc.insecure_channel(f"{LOOPBACK}:{attacker.verification(node)['grpcPort']}")

    return channel


def _keyservice_health(attacker: Attacker) -> grpc.Channel:
    return grpc.insecure_channel(f"{LOOPBACK}:{keyservice_health_port(attacker)}")


def started_ports(attacker: Attacker, log_name: str, key: str) -> list[int]:
    """Ports a service logged at start-up (``service.started``) under ``key``: the cluster
    record keeps only the API ports; a port scan would find these too."""
    log = attacker.workspace / "mini" / "logs" / log_name
    entries = (json.loads(line) for line in log.read_text().splitlines() if line[:1] == "{")
    return [
        int(entry[key])
        for entry in entries
        if entry.get("event") == "service.started" and entry.get(key)
    ]


def keyservice_health_port(attacker: Attacker) -> int:
    """The KeyService's plaintext health port (the last start's, should it have restarted)."""
    ports = started_ports(attacker, "keyservice.log", "health_port")
    assert ports, "keyservice.log names no health port"
    return ports[-1]


def _joinservice_serves(attacker: Attacker) -> None:
    """A fresh handshake still answers with evidence and a server nonce."""
    session = attacker.raw_session()
    try:
        assert session.server_evidence
        assert session.server_nonce
        _is_serving(session.channel)
    finally:
        session.close()


def _verification_serves(node: str) -> Callable[[Attacker], None]:
    def serves(attacker: Attacker) -> None:
        with _verification(node)(attacker) as channel:
            stub = verify_pb2_grpc.APIStub(channel)
            request = verify_pb2.GetAttestationRequest(nonce=os.urandom(32))
            answer = stub.GetAttestation(request, timeout=RPC_TIMEOUT_S)
            assert answer.attestation
            _is_serving(channel)
        assert attacker.public_document(node)

    return serves


def _keyservice_serves(attacker: Attacker) -> None:
    with _keyservice_health(attacker) as channel:
        _is_serving(channel)


def _is_serving(channel: grpc.Channel) -> None:
    answer = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(), timeout=RPC_TIMEOUT_S
    )
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


HEALTH_CHECK = "/grpc.health.v1.Health/Check"

DOORS = [
    Door(
        "joinservice-attest",
        "/atls.Handshake/Attest",
        atls_pb2.AttestRequest,
        lambda: atls_pb2.AttestRequest(client_nonce=os.urandom(32)),
        False,
        _joinservice,
        _joinservice_serves,
    ),
    Door(
        "joinservice-join",
        "/join.API/IssueJoinTicket",
        join_pb2.IssueJoinTicketRequest,
        lambda: join_pb2.IssueJoinTicketRequest(
            disk_uuid=str(uuid.uuid4()),
            certificate_request=create_kubelet_identity("mini-worker-9", LOOPBACK).csr_pem,
        ),
        True,
        _joinservice,
        _joinservice_serves,
    ),
    Door(
        "joinservice-rejoin",
        "/join.API/IssueRejoinTicket",
        join_pb2.IssueRejoinTicketRequest,
        lambda: join_pb2.IssueRejoinTicketRequest(disk_uuid=str(uuid.uuid4())),
        True,
        _joinservice,
        _joinservice_serves,
    ),
    Door(
        "joinservice-health",
        HEALTH_CHECK,
        health_pb2.HealthCheckRequest,
        lambda: health_pb2.HealthCheckRequest(service="join.API"),
        True,
        _joinservice,
        _joinservice_serves,
    ),
    *(
        door
        for node in ("mini-cp-0", "mini-worker-0")
        for door in (
            Door(
                f"{node}-verification",
                "/verify.API/GetAttestation",
                verify_pb2.GetAttestationRequest,
                lambda: verify_pb2.GetAttestationRequest(nonce=os.urandom(32)),
                False,
                _verification(node),
                _verification_serves(node),
            ),
            Door(
                f"{node}-verification-health",
                HEALTH_CHECK,
                health_pb2.HealthCheckRequest,
                lambda: health_pb2.HealthCheckRequest(service="verify.API"),
                True,
                _verification(node),
                _verification_serves(node),
            ),
        )
    ),
    Door(
        "keyservice-health",
        HEALTH_CHECK,
        health_pb2.HealthCheckRequest,
        lambda: health_pb2.HealthCheckRequest(service="kms.API"),
        True,
        _keyservice_health,
        _keyservice_serves,
    ),
]


# -- every reachable gRPC method -----------------------------------------------------------------


@pytest.mark.parametrize("door", DOORS, ids=[d.name for d in DOORS])
def test_bytes_that_are_no_request_are_invalid_argument(attacker: Attacker, door: Door) -> None:
    """Garbage, a cut-short real request, a length running past the end, an unterminated
    group, a string that is not UTF-8: each is INVALID_ARGUMENT naming the method, never
    INTERNAL (grpcio's own answer) and never a caller check first (an outsider sends them)."""
    with door.channel(attacker) as channel:
        for kind, data in door.malformed().items():
            refusal = send(channel, door.method, data)
            assert refusal.code == INVALID, f"{kind}: {refusal}"
            refusal.is_(INVALID, UNDECODABLE, door.method)
    door.serves(attacker)


@pytest.mark.parametrize("door", DOORS, ids=[d.name for d in DOORS])
def test_a_message_above_the_receive_limit_is_resource_exhausted(
    attacker: Attacker, door: Door
) -> None:
    with door.channel(attacker) as channel:
        send(channel, door.method, oversized()).is_(EXHAUSTED, TOO_LARGE)
    door.serves(attacker)


@pytest.mark.parametrize("door", DOORS, ids=[d.name for d in DOORS])
def test_a_genuine_request_still_decodes(attacker: Attacker, door: Door) -> None:
    """The control of the two tests above: the same bytes path with a real request is not
    refused as undecodable (it gets the method's own answer or refusal)."""
    with door.channel(attacker) as channel:
        refusal = send(channel, door.method, door.genuine().SerializeToString())
    assert UNDECODABLE not in refusal.details
    assert refusal.code != grpc.StatusCode.INTERNAL, refusal.details
    door.serves(attacker)


# -- decodable, but every field of the wrong length or shape -------------------------------------


def test_verificationservice_fields_of_the_wrong_shape(attacker: Attacker) -> None:
    """A nonce sent with the wire type of an integer (decodes as an unknown field: no nonce),
    only unknown fields, a 1 MiB nonce: each a nonce refusal."""
    node = "mini-worker-0"
    with _verification(node)(attacker) as channel:
        for data in (
            varint(1 << 3 | 0) + varint(2**63),
            field_bytes(15, os.urandom(32)),
            field_bytes(1, os.urandom(1024 * 1024)),
        ):
            send(channel, "/verify.API/GetAttestation", data).is_(INVALID, "nonce")
    _verification_serves(node)(attacker)


def test_attest_fields_of_the_wrong_shape(attacker: Attacker) -> None:
    channel, _ = attacker.tls_channel()
    with channel:
        for data, size in (
            (varint(1 << 3 | 0) + varint(32), 0),
            (field_bytes(7, os.urandom(32)), 0),
            (field_bytes(1, os.urandom(1024 * 1024)), 1024 * 1024),
        ):
            send(channel, "/atls.Handshake/Attest", data).is_(
                INVALID, "client_nonce", f"got {size}"
            )
    _joinservice_serves(attacker)


@pytest.mark.parametrize(
    ("method", "message"),
    [
        (
            "/join.API/IssueJoinTicket",
            join_pb2.IssueJoinTicketRequest(
                disk_uuid="\u2603" * 4096,
                certificate_request=os.urandom(MAX_CSR_SIZE * 4),
                is_control_plane=True,
            ),
        ),
        ("/join.API/IssueJoinTicket", join_pb2.IssueJoinTicketRequest()),
        ("/join.API/IssueRejoinTicket", join_pb2.IssueRejoinTicketRequest(disk_uuid="../" * 999)),
        ("/join.API/IssueRejoinTicket", join_pb2.IssueRejoinTicketRequest()),
    ],
    ids=["join-all-wrong", "join-empty", "rejoin-all-wrong", "rejoin-empty"],
)
def test_an_outsider_never_reaches_the_field_checks(
    attacker: Attacker, method: str, message: Message
) -> None:
    """Whatever a decodable request holds, without attestation the gate refuses it first."""
    channel, _ = attacker.tls_channel()
    with channel:
        send(channel, method, message.SerializeToString()).is_(
            UNAUTHENTICATED, "client attestation"
        )
    _joinservice_serves(attacker)


# -- the aTLS gate's own input: malformed metadata --------------------------------------------


@pytest.mark.parametrize(
    ("evidence", "variant", "code", "named"),
    [
        (b"\xff" * 64, "qemu-vtpm", UNAUTHENTICATED, "aTLS"),
        (b'{"user_data": 5, "quote": []}', "qemu-vtpm", UNAUTHENTICATED, "aTLS"),
        (b"[" * 100_000, "qemu-vtpm", UNAUTHENTICATED, "aTLS"),
        (b"{" + b" " * (MAX_EVIDENCE_SIZE + 1) + b"}", "qemu-vtpm", UNAUTHENTICATED, "exceeds"),
        (b"{}", "x" * 4096, DENIED, "atls.variant"),
    ],
    ids=["not-json", "wrong-json-shape", "deep-nesting", "too-large", "unknown-variant"],
)
def test_malformed_client_evidence_is_refused_by_the_gate(
    attacker: Attacker, evidence: bytes, variant: str, code: grpc.StatusCode, named: str
) -> None:
    """With a genuine server nonce, so the evidence itself is what the gate parses."""
    session = attacker.raw_session()
    try:
        session.join(
            attacker.request(), variant=variant, evidence=evidence, nonce=session.server_nonce
        ).is_(code, named)
    finally:
        session.close()
    _joinservice_serves(attacker)


@pytest.mark.parametrize(
    "nonce", [b"", b"\x00", os.urandom(39), os.urandom(41), os.urandom(4096)], ids=str
)
def test_a_malformed_server_nonce_is_refused_by_the_gate(attacker: Attacker, nonce: bytes) -> None:
    session = attacker.raw_session()
    try:
        session.join(attacker.request(), evidence=b"{}", nonce=nonce).is_(UNAUTHENTICATED, "nonce")
    finally:
        session.close()
    _joinservice_serves(attacker)


def test_metadata_above_the_servers_limit_is_refused(attacker: Attacker) -> None:
    """Evidence larger than the metadata the aTLS server accepts at all (``GRPC_OPTIONS``):
    grpcio refuses the call before the gate reads it."""
    session = attacker.raw_session()
    try:
        session.join(
            attacker.request(), evidence=b"\0" * (2 * MAX_EVIDENCE_SIZE), nonce=session.server_nonce
        ).is_(EXHAUSTED, "metadata size exceeds")
    finally:
        session.close()
    _joinservice_serves(attacker)


# -- an insider's malformed requests: through the gate, refused by the field checks -------------


def _patched(csr_pem: bytes, old: bytes, new: bytes) -> bytes:
    """``csr_pem`` with the first DER occurrence of ``old`` replaced by ``new``."""
    der = x509.load_pem_x509_csr(csr_pem).public_bytes(serialization.Encoding.DER)
    assert old in der
    body = base64.encodebytes(der.replace(old, new, 1)).decode().replace("\n", "")
    lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    armored = f"-----BEGIN CERTIFICATE REQUEST-----\n{lines}\n-----END CERTIFICATE REQUEST-----\n"
    return armored.encode()


def _version_5(csr: bytes) -> bytes:
    # The CSR's version INTEGER 0 (the first in the DER) made version 5: InvalidVersion before.
    return _patched(csr, bytes.fromhex("020100"), bytes.fromhex("020105"))


def _subject_unparseable(csr: bytes) -> bytes:
    # O=system:nodes as a BOOLEAN of 12 bytes: ASN.1 ValueError from ``csr.subject`` before.
    organization = b"\x0c\x0c" + b"system:nodes"
    return _patched(csr, organization, b"\x01\x0c" + b"system:nodes")


def _cut_in_half(csr: bytes) -> bytes:
    return csr[: len(csr) // 2]


def _der_not_pem(csr: bytes) -> bytes:
    return x509.load_pem_x509_csr(csr).public_bytes(serialization.Encoding.DER)


def _oversized(csr: bytes) -> bytes:
    return csr + b"\n" * MAX_CSR_SIZE


CSR_DAMAGE: dict[str, tuple[Callable[[bytes], bytes], tuple[str, ...]]] = {
    "version-5": (_version_5, ("kubelet CSR is not a PEM PKCS#10 request", "InvalidVersion")),
    "subject-unparseable": (_subject_unparseable, ("kubelet CSR subject does not parse",)),
    "cut-in-half": (_cut_in_half, ("kubelet CSR is not a PEM PKCS#10 request",)),
    "der-not-pem": (_der_not_pem, ("kubelet CSR is not a PEM PKCS#10 request",)),
    "oversized": (_oversized, ("certificate_request is", f"{MAX_CSR_SIZE}-byte")),
}


@pytest.mark.parametrize("damage", list(CSR_DAMAGE))
def test_an_insiders_malformed_csr_is_invalid_argument(attacker: Attacker, damage: str) -> None:
    """The FUZZING.md kubelet CSR findings, sent over a well-formed, genuinely attested
    handshake: INVALID_ARGUMENT naming what is wrong. The control: the same machine then joins
    with its genuine CSR (a malformed CSR spends neither its attestation nor its name)."""
    insider = attacker.insider()
    mangle, named = CSR_DAMAGE[damage]
    request = attacker.request(insider.name)
    request.certificate_request = mangle(request.certificate_request)
    attacker.join(insider.issuer(), request).is_(INVALID, *named)
    attacker.join(insider.issuer(), attacker.request(insider.name)).is_accepted()


@pytest.mark.parametrize(
    "disk",
    ["", "not-a-uuid", "\u2603" * 36, str(uuid.uuid4()) + "\0", "{" + str(uuid.uuid4()) + "}"],
    ids=["empty", "word", "unicode", "nul", "braced"],
)
def test_an_insiders_malformed_disk_uuid_is_invalid_argument(attacker: Attacker, disk: str) -> None:
    insider = attacker.insider()
    request = attacker.request(insider.name)
    request.disk_uuid = disk
    attacker.join(insider.issuer(), request).is_(INVALID, "disk_uuid must be a UUID")
    attacker.rejoin(insider.issuer(), disk).is_(INVALID, "disk_uuid must be a UUID")
    attacker.join(insider.issuer(), attacker.request(insider.name)).is_accepted()


# -- the KeyService's mutual TLS port and the bootstrappers -------------------------------------


def _keyservice_channel(attacker: Attacker, client: tuple[bytes, bytes] | None) -> grpc.Channel:
    """TLS to the KeyService trusting whatever it shows, with ``client`` (key, chain) if any."""
    host, port = attacker.keyservice.rsplit(":", 1)
    served = ssl.get_server_certificate((host, int(port)), timeout=RPC_TIMEOUT_S).encode()
    key, chain = client if client is not None else (None, None)
    credentials = grpc.ssl_channel_credentials(served, private_key=key, certificate_chain=chain)
    names = (
        x509.load_pem_x509_certificate(served)
        .extensions.get_extension_for_class(x509.SubjectAlternativeName)
        .value.get_values_for_type(x509.DNSName)
    )
    return grpc.secure_channel(
        attacker.keyservice, credentials, options=[("grpc.ssl_target_name_override", names[0])]
    )


def _atls_client_pair() -> tuple[bytes, bytes]:
    identity = new_client_identity()
    return identity.key_pem, identity.cert_pem


@pytest.mark.parametrize(
    "connect",
    [
        lambda attacker: grpc.insecure_channel(attacker.keyservice),
        lambda attacker: _keyservice_channel(attacker, None),
        lambda attacker: _keyservice_channel(attacker, _atls_client_pair()),
    ],
    ids=["plaintext", "tls-without-client-certificate", "public-atls-client-certificate"],
)
def test_keyservice_decodes_nothing_for_a_caller_without_its_client_certificate(
    attacker: Attacker, connect: Callable[[Attacker], grpc.Channel]
) -> None:
    """Mutual TLS refuses the connection before a single request byte is read: UNAVAILABLE for
    garbage, for an oversized message and for a well-formed request alike."""
    genuine = kms_pb2.GetDataKeyRequest(data_key_id="measurementSecret", length=32)
    with connect(attacker) as channel:
        for data in (b"\xff\xff\xff\xff", oversized(), genuine.SerializeToString()):
            send(channel, "/kms.API/GetDataKey", data).is_(UNAVAILABLE)
    _keyservice_serves(attacker)


def test_keyservice_health_port_serves_only_health(attacker: Attacker) -> None:
    with _keyservice_health(attacker) as channel:
        genuine = kms_pb2.GetDataKeyRequest(data_key_id="measurementSecret", length=32)
        send(channel, "/kms.API/GetDataKey", genuine.SerializeToString()).is_(
            grpc.StatusCode.UNIMPLEMENTED
        )
        send(channel, "/kms.API/GetDataKey", b"\xff\xff").is_(grpc.StatusCode.UNIMPLEMENTED)
    _keyservice_serves(attacker)


def test_no_bootstrapper_listens_once_the_cluster_is_up(attacker: Attacker) -> None:
    """After Init and the joins, a node's init server is closed: nothing of the bootstrapper
    is left for an attacker's bytes (the recover API is served only by a node that could not
    get its keys)."""
    for node in attacker.record["nodes"]:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((LOOPBACK, int(node["initPort"])), timeout=5).close()


# -- the VerificationService's HTTP endpoint ---------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


def _http(attacker: Attacker, target: str, *, method: str = "GET") -> tuple[int, bytes]:
    url = f"http://{LOOPBACK}:{attacker.verification('mini-worker-0')['httpPort']}{target}"
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=RPC_TIMEOUT_S) as answer:  # noqa: S310 (http://, built above)
            return int(answer.status), answer.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


GOOD = _b64(os.urandom(32))

HTTP_QUERIES: dict[str, tuple[str, int]] = {
    "bad-base64": ("/?nonce=***" + "A" * 40, 400),
    "standard-base64-alphabet": ("/?nonce=" + "+/" * 22, 400),
    "not-ascii": ("/?nonce=" + "%ff%fe" * 20, 400),
    "nul-bytes": ("/?nonce=" + "%00" * 40, 400),
    "too-much-padding": (f"/?nonce={GOOD}====", 400),
    "too-short": (f"/?nonce={_b64(os.urandom(15))}", 400),
    "too-long": (f"/?nonce={_b64(os.urandom(65))}", 400),
    "repeated": (f"/?nonce={GOOD}&nonce={GOOD}", 400),
    "many-parameters": ("/?" + "&".join(f"p{i}=1" for i in range(64)) + f"&nonce={GOOD}", 400),
    "over-query-limit": (f"/?nonce={GOOD}&pad={'x' * 2000}", 400),
    "semicolons": (f"/?nonce={GOOD};nonce={GOOD}", 400),
    "other-path": (f"/../../etc/passwd?nonce={GOOD}", 404),
    "huge-request-line": (f"/?nonce={GOOD}&pad={'x' * 70_000}", 414),
}


@pytest.mark.parametrize("case", list(HTTP_QUERIES))
def test_verificationservice_http_refuses_malformed_queries(attacker: Attacker, case: str) -> None:
    target, status = HTTP_QUERIES[case]
    code, body = _http(attacker, target)
    assert code == status, f"{case}: {code} {body[:300]!r}"
    assert attacker.public_document()


def test_verificationservice_http_refuses_other_methods(attacker: Attacker) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        assert _http(attacker, f"/?nonce={GOOD}", method=method)[0] == 405
    assert attacker.public_document()


#: What ``http.server`` answers to a request line it cannot parse: an HTML error page (an
#: HTTP/0.9-style answer, no status line), naming the code.
_ERROR_CODE = re.compile(rb"Error code: (\d+)|^HTTP/1\.[01] (\d+)")


@pytest.mark.parametrize(
    ("line", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n", 400),
        (b"GET / HTTP/1.1 trailing words\r\n\r\n", 400),
        (b"GET /?nonce=AAAA HTTP/9.9\r\n\r\n", 505),
        (b"GET /?nonce=" + GOOD.encode() + b" HTTP/1.1\r\nX: " + b"x" * 70_000 + b"\r\n\r\n", 431),
        (b"GET /?nonce=" + GOOD.encode() + b" HTTP/1.1\r\n" + b"X: x\r\n" * 200 + b"\r\n", 431),
    ],
    ids=[
        "one-word",
        "tls-client-hello",
        "too-many-words",
        "http-9.9",
        "huge-header",
        "200-headers",
    ],
)
def test_verificationservice_http_refuses_malformed_requests(
    attacker: Attacker, line: bytes, status: int
) -> None:
    port = int(attacker.verification("mini-worker-0")["httpPort"])
    with socket.create_connection((LOOPBACK, port), timeout=RPC_TIMEOUT_S) as connection:
        connection.sendall(line)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    found = _ERROR_CODE.search(answer)
    assert found, answer[:300]
    assert int(found.group(1) or found.group(2)) == status, answer[:300]
    assert attacker.public_document()


# -- an insider's genuine evidence, each field of the wrong shape -------------------------------

#: Where in a ``qemu-vtpm`` document (``vtpm.document``) to put the wrong thing: every
#: top-level field, one PCR, and the fields of the first quote.
DOCUMENT_FIELDS: list[tuple[str | int, ...]] = [
    ("version",),
    ("variant",),
    ("user_data",),
    ("ak_public",),
    ("ak_certificate",),
    ("instance_info",),
    ("event_log",),
    ("pcrs",),
    ("pcrs", "0"),
    ("quotes",),
    ("quotes", 0, "attest"),
    ("quotes", 0, "signature"),
]


def _replacements(value: object) -> dict[str, object]:
    """Wrong JSON types, wrong encodings and wrong lengths for one field's ``value``."""
    kinds: dict[str, object] = {
        "number": 7,
        "huge-number": 10**40,
        "null": None,
        "list": [1],
        "object": {"a": 1},
        "not-base64": "!!!",
        "empty": "",
    }
    if isinstance(value, str) and len(value) > 4:
        kinds["cut-in-half"] = value[: len(value) // 2]
        kinds["doubled"] = value + value
    return kinds


def _at(document: Any, path: tuple[str | int, ...]) -> Any:
    for step in path:
        document = document[step]
    return document


@pytest.mark.parametrize("path", DOCUMENT_FIELDS, ids=lambda path: ".".join(map(str, path)))
def test_an_insiders_evidence_with_a_field_of_the_wrong_shape_is_refused_by_the_gate(
    attacker: Attacker, path: tuple[str | int, ...]
) -> None:
    """Genuine evidence of a certified machine, for the session's real nonce and key, with one
    field replaced: the gate refuses it as malformed (UNAUTHENTICATED, ``aTLS: ...`` naming
    the part) or as failing a check (PERMISSION_DENIED, the failed checks), never otherwise.
    A fresh connection each time: a client verified once is remembered by its key."""
    insider = attacker.insider()
    first = attacker.raw_session()
    first.close()
    genuine = json.loads(insider.issuer().issue(first.user_data, first.server_nonce))
    for kind, replacement in _replacements(_at(genuine, path)).items():
        if replacement == _at(genuine, path):
            continue
        session = attacker.raw_session()
        try:
            document = json.loads(insider.issuer().issue(session.user_data, session.server_nonce))
            changed = copy.deepcopy(document)
            _at(changed, path[:-1])[path[-1]] = replacement
            refusal = session.join(
                attacker.request(insider.name),
                evidence=json.dumps(changed).encode(),
                nonce=session.server_nonce,
            )
        finally:
            session.close()
        where = f"{'.'.join(map(str, path))} = {kind}"
        if refusal.code == UNAUTHENTICATED:
            assert refusal.details.startswith("aTLS: "), f"{where}: {refusal}"
        else:
            assert refusal.code == DENIED, f"{where}: {refusal}"
            assert "evidence rejected" in refusal.details, f"{where}: {refusal}"
    attacker.join(insider.issuer(), attacker.request(insider.name)).is_accepted()


# -- the session-end log check itself -----------------------------------------------------------


def test_the_log_check_names_each_untyped_error_logged_after_the_mark(tmp_path: Path) -> None:
    """The check the ``attacker`` fixture runs at session end, on logs written here: it must
    report a traceback, ``rpc.failed`` and a status INTERNAL with file and line, and ignore
    typed refusals and whatever was logged before the attacks began."""
    logs = tmp_path / "mini" / "logs"
    node_logs = tmp_path / "mini" / "nodes" / "mini-cp-0" / "state" / "control-plane" / "logs"
    logs.mkdir(parents=True)
    node_logs.mkdir(parents=True)
    service = logs / "joinservice.log"
    service.write_text('{"event": "rpc.failed", "method": "/old"}\n')
    record = {"processes": [{"log": str(tmp_path / "elsewhere.log")}], "nodes": []}
    marked = ServerLogs.mark(tmp_path, record)

    refused = {"event": "rpc.refused", "code": "INVALID_ARGUMENT", "error": "INTERNAL to it"}
    failed = {"event": "rpc.failed", "exception": "Traceback (most recent call last):\n  ..."}
    with service.open("a") as log:
        log.write(json.dumps(refused) + "\n")
        log.write(json.dumps(failed) + "\n")
        log.write(json.dumps({"event": "rpc.refused", "code": "INTERNAL"}) + "\n")
    (node_logs / "kubeadm.log").write_text("ok\nTraceback (most recent call last):\n")
    (tmp_path / "elsewhere.log").write_text('{"outcome": "INTERNAL"}\n')

    found = marked.untyped_errors()
    assert [line.split(": ", 1)[0] for line in found] == [
        f"{tmp_path / 'elsewhere.log'}:1",
        f"{service}:3",
        f"{service}:4",
        f"{node_logs / 'kubeadm.log'}:2",
    ]
    assert ServerLogs.mark(tmp_path, record).untyped_errors() == []
    assert "no log file found" in ServerLogs.mark(tmp_path / "empty", {}).untyped_errors()[0]


# -- the services' metrics endpoints (plain HTTP, Prometheus) -----------------------------------


def _metrics_ports(attacker: Attacker) -> dict[str, int]:
    logs = {"keyservice": "keyservice.log"} | {
        v["node"]: f"{v['node']}-verificationservice.log" for v in attacker.record["verification"]
    }
    ports = {name: started_ports(attacker, log, "metrics_port") for name, log in logs.items()}
    return {name: found[-1] for name, found in ports.items() if found}


def _raw_http(port: int, request: bytes) -> int:
    with socket.create_connection((LOOPBACK, port), timeout=RPC_TIMEOUT_S) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    found = _ERROR_CODE.search(answer)
    assert found, answer[:300]
    return int(found.group(1) or found.group(2))


def test_metrics_endpoints_refuse_malformed_requests(attacker: Attacker) -> None:
    """Every metrics endpoint a service opened: malformed request lines get 4xx, and the
    endpoint still serves its counters."""
    ports = _metrics_ports(attacker)
    assert "keyservice" in ports, ports
    for name, port in ports.items():
        assert _raw_http(port, b"GARBAGE\r\n\r\n") == 400, name
        assert _raw_http(port, b"GET /" + b"x" * 70_000 + b" HTTP/1.1\r\n\r\n") == 414, name
        assert _raw_http(port, b"GET /metrics HTTP/1.0\r\n\r\n") == 200, name
