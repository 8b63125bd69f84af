"""What a join or rejoin ticket contains and how the JoinService decides to issue one.

By the time a handler runs, the mutual-aTLS server has validated the caller's fresh evidence
against the current ``join-config`` (``expectations.PeerValidator``). A ticket is then issued
in this order, each step able to refuse before anything is created in the cluster:

1. the request is well-formed (disk UUID format, CSR size): else INVALID_ARGUMENT;
2. the peer has an identity, the SHA-256 of its attestation key's public key (named in every
   later log line);
3. the peer attested in the right state: PCR 15 zero for a join, the cluster's node-lock
   marker for a rejoin (``expectations.require``);
4. (join) the kubelet CSR is valid and signed by the cluster CA (``kubelet_cert``);
5. the disk UUID is bound to that identity, or becomes bound to it now
   (``kubernetes.DiskBindings``): a disk key is never handed to a second machine;
6. keys from the KeyService (disk key, measurement secret), the cluster files and, last, a
   bootstrap token created through the API.

Every decision is logged once, as ``join.issued`` or ``join.refused``, with the peer identity,
the variant, the outcome and, for a refusal, every failed check. Keys and tokens never reach
the log: they travel in ``SecretBytes``.
"""

from __future__ import annotations

import enum
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

import structlog

from constellation.attestation.errors import Failure
from constellation.attestation.evidence import VerifiedEvidence
from constellation.attestation.secret import SecretBytes
from constellation.joinservice.clusterfiles import ClusterFiles, Component
from constellation.joinservice.errors import InvalidRequestError, JoinServiceError, RefusedError
from constellation.joinservice.expectations import Expectation, Expectations, require
from constellation.joinservice.keys import KeyServiceClient

#: A kubelet CSR is a few hundred bytes of PEM; anything far larger is refused unparsed.
MAX_CSR_SIZE: Final = 16 * 1024
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

#: Key of ``VerifiedEvidence.details`` under which TPM-based validators publish the hex SHA-256
#: of the attestation key's DER SubjectPublicKeyInfo.
AK_DETAIL: Final = "ak_spki_sha256"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")

log = structlog.get_logger("constellation.joinservice.tickets")


class BindingOutcome(enum.Enum):
    """How a bind request was decided (for the decision log)."""

    CREATED = "created"
    CONFIRMED = "confirmed"


@dataclass(frozen=True)
class DiskBinding:
    disk_uuid: str
    identity: str
    outcome: BindingOutcome


class DiskBinder(Protocol):
    def bind(self, disk_uuid: str, identity: str) -> DiskBinding: ...


@dataclass(frozen=True)
class IssuedToken:
    """A bootstrap token as created in the cluster. ``token`` is ``<id>.<secret>``."""

    token_id: str
    token: SecretBytes


class TokenIssuer(Protocol):
    def create(self) -> IssuedToken: ...


@dataclass(frozen=True)
class SignedKubeletCert:
    node_name: str
    cert_pem: bytes


class KubeletSigner(Protocol):
    """Signs a node's kubelet CSR with the cluster CA; raises ``InvalidRequestError`` (or a
    subclass) for a CSR that is not a valid kubelet request."""

    def sign(self, csr_pem: bytes) -> SignedKubeletCert: ...


@dataclass(frozen=True)
class JoinRequest:
    disk_uuid: str
    csr_pem: bytes
    is_control_plane: bool


@dataclass(frozen=True)
class JoinTicket:
    state_disk_key: SecretBytes
    measurement_salt: bytes
    measurement_secret: SecretBytes
    kubelet_cert_pem: bytes
    api_server_endpoint: str
    token: SecretBytes
    discovery_hash: str
    control_plane_files: tuple[tuple[str, SecretBytes], ...]
    kubernetes_version: str
    components: tuple[Component, ...]
    ca_cert_pem: bytes


@dataclass(frozen=True)
class RejoinTicket:
    state_disk_key: SecretBytes
    measurement_secret: SecretBytes


def canonical_disk_uuid(text: str) -> str:
    """The lowercase form of a LUKS UUID; INVALID_ARGUMENT unless it is 8-4-4-4-12 hex."""
    if not _UUID.fullmatch(text):
        shown = text[:40] + ("..." if len(text) > 40 else "")
        raise InvalidRequestError(
            f"disk_uuid must be a UUID like 6ba7b810-9dad-11d1-80b4-00c04fd430c8, got {shown!r}"
        )
    return str(uuid.UUID(text))


def check_csr_size(csr_pem: bytes) -> None:
    if not csr_pem:
        raise InvalidRequestError("certificate_request is empty; send the kubelet's PEM CSR")
    if len(csr_pem) > MAX_CSR_SIZE:
        raise InvalidRequestError(
            f"certificate_request is {len(csr_pem)} bytes, more than the {MAX_CSR_SIZE}-byte "
            "limit for a kubelet CSR"
        )


def node_identity(evidence: VerifiedEvidence) -> str:
    """The attested node's identity: hex SHA-256 of its attestation key's public key.

    The AK is what the quote was verified with, so the identity is exactly as strong as the
    attestation. Evidence without an AK cannot be bound to a disk and is refused.
    """
    value = evidence.details.get(AK_DETAIL)
    if isinstance(value, str) and _SHA256_HEX.fullmatch(value):
        return value
    raise RefusedError(
        [
            Failure(
                check="node_identity",
                expected="an attestation key in the verified evidence",
                actual="none",
                detail=f"variant {evidence.variant} did not report its attestation key",
            )
        ]
    )


class TicketIssuer:
    """The JoinService's domain logic; every collaborator is passed in."""

    def __init__(
        self,
        *,
        expectations: Callable[[], Expectations],
        keys: KeyServiceClient,
        bindings: DiskBinder,
        tokens: TokenIssuer,
        signer: KubeletSigner,
        cluster: ClusterFiles,
        api_server_endpoint: str,
        discovery: Callable[[bytes], str],
    ) -> None:
        self._expectations = expectations
        self._keys = keys
        self._bindings = bindings
        self._tokens = tokens
        self._signer = signer
        self._cluster = cluster
        self._api_server_endpoint = api_server_endpoint
        self._discovery = discovery

    def issue_join(self, request: JoinRequest, peer: VerifiedEvidence) -> JoinTicket:
        context: dict[str, Any] = {
            "request": "join",
            "variant": peer.variant,
            "disk_uuid": request.disk_uuid[:64],
            "control_plane": request.is_control_plane,
        }
        try:
            ticket, extra = self._issue_join(request, peer, context)
        except JoinServiceError as err:
            _log_refusal(err, context)
            raise
        log.info("join.issued", outcome="issued", **context, **extra)
        return ticket

    def issue_rejoin(self, disk_uuid: str, peer: VerifiedEvidence) -> RejoinTicket:
        context: dict[str, Any] = {
            "request": "rejoin",
            "variant": peer.variant,
            "disk_uuid": disk_uuid[:64],
        }
        try:
            uuid_text = canonical_disk_uuid(disk_uuid)
            expectations = self._expectations()
            context["join_config"] = expectations.config.digest
            identity = node_identity(peer)
            context["peer"] = identity
            require(peer, Expectation.REJOIN, expectations)
            binding = self._bindings.bind(uuid_text, identity)
            ticket = RejoinTicket(
                state_disk_key=self._keys.state_disk_key(uuid_text),
                measurement_secret=self._keys.measurement_secret(),
            )
        except JoinServiceError as err:
            _log_refusal(err, context)
            raise
        log.info("join.issued", outcome="issued", binding=binding.outcome.value, **context)
        return ticket

    def _issue_join(
        self, request: JoinRequest, peer: VerifiedEvidence, context: dict[str, Any]
    ) -> tuple[JoinTicket, Mapping[str, Any]]:
        uuid_text = canonical_disk_uuid(request.disk_uuid)
        check_csr_size(request.csr_pem)
        expectations = self._expectations()
        context["join_config"] = expectations.config.digest
        identity = node_identity(peer)
        context["peer"] = identity
        require(peer, Expectation.JOIN, expectations)
        signed = self._signer.sign(request.csr_pem)
        context["node"] = signed.node_name
        binding = self._bindings.bind(uuid_text, identity)
        state_disk_key = self._keys.state_disk_key(uuid_text)
        measurement_secret = self._keys.measurement_secret()
        ca_cert_pem = self._cluster.ca_cert_pem()
        discovery_hash = self._discovery(ca_cert_pem)
        components = self._cluster.components()
        control_plane_files = (
            self._cluster.control_plane_files() if request.is_control_plane else ()
        )
        # The binding must exist before any key leaves; the token is the one other object this
        # request creates, and it is created last so a failure above leaves no live credential.
        token = self._tokens.create()
        ticket = JoinTicket(
            state_disk_key=state_disk_key,
            measurement_salt=expectations.config.measurement_salt,
            measurement_secret=measurement_secret,
            kubelet_cert_pem=signed.cert_pem,
            api_server_endpoint=self._api_server_endpoint,
            token=token.token,
            discovery_hash=discovery_hash,
            control_plane_files=control_plane_files,
            kubernetes_version=components.kubernetes_version,
            components=components.components,
            ca_cert_pem=ca_cert_pem,
        )
        return ticket, {"binding": binding.outcome.value, "token_id": token.token_id}


def outcome_of(err: JoinServiceError) -> str:
    """A stable label for why nothing was issued: the node was refused, its request was
    malformed, or a collaborator failed (the node may retry)."""
    if isinstance(err, RefusedError):
        return "refused"
    if isinstance(err, InvalidRequestError):
        return "invalid"
    return "failed"


def _log_refusal(err: JoinServiceError, context: Mapping[str, Any]) -> None:
    failures = getattr(err, "failures", ())
    log.warning(
        "join.refused",
        stage="ticket",
        outcome=outcome_of(err),
        error=type(err).__name__,
        reason=str(err),
        failures=[f.to_dict() for f in failures],
        **context,
    )
