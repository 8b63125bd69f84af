"""What a join or rejoin ticket contains and how the JoinService decides to issue one.

Invariant: a ticket goes only to the machine the platform vouched for, under the name and
role the platform gave it, once per fresh attestation. Nothing in the request can choose a
name, a role or someone else's disk: those come from ``VerifiedEvidence.identity`` (an AK
certificate the validator checked against the platform roots) and from records in the
cluster bound to that identity.

By the time a handler runs, the mutual-aTLS server has validated the caller's fresh evidence
against the current ``join-config`` (``expectations.PeerValidator``). A ticket is then issued
in this order; every step up to 6 is free of side effects, so a refusal leaves nothing behind:

1. the request is well-formed (disk UUID format, CSR size): else INVALID_ARGUMENT;
2. the peer has a platform identity (``node_identity``: ``identity.present``), whose AK is the
   key the quote verified with (``identity.ak``) and whose name Kubernetes can use
   (``identity.name``); name, role and AK hash are in every later log line;
3. the identity is within its request rate (``ratelimit.RateLimiter``): else
   RESOURCE_EXHAUSTED, with the seconds to wait;
4. the peer attested in the right state: PCR 15 zero for a join, the cluster's node-lock
   marker for a rejoin (``expectations.require``);
5. (join) the request claims what the identity backs: ``is_control_plane`` equals the
   identity's role (``identity.role``), the kubelet CSR names exactly
   ``system:node:<identity name>`` (``csr.node_name``) and is otherwise valid (``kubelet_cert``);
   (rejoin) the disk is already bound to this identity (``disk.unknown``,
   ``disk.bound_elsewhere``): a rejoin never creates a binding;
6. the attestation is spent on this kind of ticket (``attestation.spent``): a remembered aTLS
   verdict buys one ticket, another needs a fresh attestation;
7. (join) the node name and the disk UUID are bound to the identity, or found bound to it
   already (``node.name_taken``, ``disk.bound_elsewhere``; ``kubernetes.IdentityBindings``);
8. keys from the KeyService (disk key, measurement secret), the cluster files (control-plane
   files only for a control-plane identity) and, last, a bootstrap token.

Every decision is logged once, as ``join.issued`` or ``join.refused``, with the identity's
name, role and AK hash, the variant, the outcome and, for a refusal, every failed check. Keys
and tokens never reach the log: they travel in ``SecretBytes``.
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
from constellation.attestation.identity import NodeIdentity, Role
from constellation.attestation.secret import SecretBytes
from constellation.joinservice.clusterfiles import ClusterFiles, Component
from constellation.joinservice.errors import (
    AttestationSpentError,
    InvalidRequestError,
    JoinServiceError,
    RateLimitedError,
    RefusedError,
)
from constellation.joinservice.expectations import Expectation, Expectations, require
from constellation.joinservice.ratelimit import RateLimiter

#: A kubelet CSR is a few hundred bytes of PEM; anything far larger is refused unparsed.
MAX_CSR_SIZE: Final = 16 * 1024
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

#: Key of ``VerifiedEvidence.details`` under which TPM-based validators publish the hex SHA-256
#: of the attestation key's DER SubjectPublicKeyInfo.
AK_DETAIL: Final = "ak_spki_sha256"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")

#: A Kubernetes node name: a DNS-1123 subdomain.
NODE_NAME_PATTERN: Final = re.compile(
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
)
#: The longest node name the JoinService accepts: an object name holds 253 characters and the
#: name registry prefixes 19 (``kubernetes.NODE_NAME_PREFIX``).
MAX_NODE_NAME: Final = 234

#: What one attestation is spent on (``atls.server.claim_attestation``).
JOIN_PURPOSE: Final = "join-ticket"
REJOIN_PURPOSE: Final = "rejoin-ticket"

#: Spends the current call's attestation on a purpose: True the first time, False after.
#: In the service this is ``constellation.attestation.atls.server.claim_attestation``.
Claim = Callable[[str], bool]

log = structlog.get_logger("constellation.joinservice.tickets")


class BindingOutcome(enum.Enum):
    """How a bind request was decided (for the decision log)."""

    CREATED = "created"
    CONFIRMED = "confirmed"


@dataclass(frozen=True)
class Binding:
    """``subject`` (a disk UUID, a node name) is bound to ``identity`` (an AK hash)."""

    subject: str
    identity: str
    outcome: BindingOutcome


class DiskBinder(Protocol):
    """Disk UUID -> identity records (``kubernetes.DiskBindings``)."""

    def bind(self, disk_uuid: str, identity: str) -> Binding:
        """Create the binding or confirm an equal one; refuse another identity's disk."""
        ...

    def confirm(self, disk_uuid: str, identity: str) -> Binding:
        """Confirm an existing binding to ``identity``; never create one."""
        ...


class KeySource(Protocol):
    """The data keys a ticket carries (``keys.KeyServiceClient``)."""

    def state_disk_key(self, disk_uuid: str) -> SecretBytes: ...

    def measurement_secret(self) -> SecretBytes: ...


class NameRegistry(Protocol):
    """Node name -> identity records (``kubernetes.NodeNames``)."""

    def bind(self, name: str, identity: str) -> Binding: ...


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
    """Signs a node's kubelet CSR with the cluster CA, for ``node_name`` only.

    Raises ``InvalidRequestError`` (or a subclass) for a CSR that is not a valid kubelet
    request and ``RefusedError`` (``csr.node_name``) for one that names another node.
    """

    def sign(self, csr_pem: bytes, *, node_name: str) -> SignedKubeletCert: ...


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


def node_identity(evidence: VerifiedEvidence) -> NodeIdentity:
    """The platform identity of the attested node; refused if absent or inconsistent.

    No identity means no name and no role the JoinService could trust, so no ticket: the
    request's own claims are never a substitute. The identity's AK must be the key the quote
    verified with (``details["ak_spki_sha256"]``), or the certificate vouches for a different
    key than the one that attested. The name must be usable as a Kubernetes node name.
    """
    identity = evidence.identity
    if identity is None:
        raise RefusedError(
            [
                Failure(
                    check="identity.present",
                    expected="a platform identity (an AK certificate from the platform CA)",
                    actual="none",
                    detail=(
                        f"variant {evidence.variant} established no node identity; the node "
                        "needs an AK certificate that chains to the configured platform roots"
                    ),
                )
            ],
            subject="ticket request",
        )
    failures: list[Failure] = []
    quoted = evidence.details.get(AK_DETAIL)
    quoted_text = quoted if isinstance(quoted, str) and _SHA256_HEX.fullmatch(quoted) else None
    if not _SHA256_HEX.fullmatch(identity.ak_sha256) or identity.ak_sha256 != quoted_text:
        failures.append(
            Failure(
                check="identity.ak",
                expected=f"the quote verified with the certified AK {identity.ak_sha256[:64]}",
                actual=f"the quote verified with AK {quoted_text or 'unknown'}",
                detail="the AK certificate must certify the key that signed the quote",
            )
        )
    name = identity.name
    if len(name) > MAX_NODE_NAME or not NODE_NAME_PATTERN.fullmatch(name):
        failures.append(
            Failure(
                check="identity.name",
                expected=f"a DNS-1123 subdomain of at most {MAX_NODE_NAME} characters",
                actual=repr(name[:80]),
                detail="the platform named the node with a name Kubernetes cannot use",
            )
        )
    if failures:
        raise RefusedError(failures, subject="ticket request")
    return identity


def role_failures(identity: NodeIdentity, request: JoinRequest) -> list[Failure]:
    """``is_control_plane`` must say what the identity's role says, in both directions.

    A worker that asks for control-plane files is refused; so is a control-plane identity that
    asks to join as a worker (it would come up without the PKI it was meant to hold).
    """
    attested = identity.role is Role.CONTROL_PLANE
    if request.is_control_plane == attested:
        return []
    return [
        Failure(
            check="identity.role",
            expected=f"is_control_plane={attested} (the platform identity's role is "
            f"{identity.role.value})",
            actual=f"is_control_plane={request.is_control_plane}",
            detail="control-plane files go only to an attested control-plane identity",
        )
    ]


def identity_context(identity: NodeIdentity) -> dict[str, str]:
    """The log fields that name an identity (all public)."""
    return {
        "node": identity.name,
        "role": identity.role.value,
        "peer": identity.ak_sha256,
        "platform": identity.platform,
    }


class TicketIssuer:
    """The JoinService's domain logic; every collaborator is passed in.

    ``claim`` spends the current call's attestation (see ``Claim``); ``limiter`` bounds the
    request rate per identity (a default ``RateLimiter`` if None).
    """

    def __init__(
        self,
        *,
        expectations: Callable[[], Expectations],
        keys: KeySource,
        disks: DiskBinder,
        names: NameRegistry,
        tokens: TokenIssuer,
        signer: KubeletSigner,
        cluster: ClusterFiles,
        api_server_endpoint: str,
        discovery: Callable[[bytes], str],
        claim: Claim,
        limiter: RateLimiter | None = None,
    ) -> None:
        self._expectations = expectations
        self._keys = keys
        self._disks = disks
        self._names = names
        self._tokens = tokens
        self._signer = signer
        self._cluster = cluster
        self._api_server_endpoint = api_server_endpoint
        self._discovery = discovery
        self._claim = claim
        self._limiter = limiter if limiter is not None else RateLimiter()

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
            context.update(identity_context(identity))
            self._limiter.admit(identity.ak_sha256)
            require(peer, Expectation.REJOIN, expectations)
            binding = self._disks.confirm(uuid_text, identity.ak_sha256)
            self._spend(REJOIN_PURPOSE)
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
        context.update(identity_context(identity))
        self._limiter.admit(identity.ak_sha256)
        signed = self._entitled_cert(request, peer, identity, expectations)
        self._spend(JOIN_PURPOSE)
        # From here on the request changes the cluster. The name is bound before the disk: the
        # name is what another machine would want to take over.
        name_binding = self._names.bind(identity.name, identity.ak_sha256)
        disk_binding = self._disks.bind(uuid_text, identity.ak_sha256)
        state_disk_key = self._keys.state_disk_key(uuid_text)
        measurement_secret = self._keys.measurement_secret()
        ca_cert_pem = self._cluster.ca_cert_pem()
        discovery_hash = self._discovery(ca_cert_pem)
        components = self._cluster.components()
        control_plane_files = (
            self._cluster.control_plane_files() if identity.role is Role.CONTROL_PLANE else ()
        )
        # The bindings must exist before any key leaves; the token is the one other object this
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
        return ticket, {
            "binding": disk_binding.outcome.value,
            "name_binding": name_binding.outcome.value,
            "token_id": token.token_id,
        }

    def _entitled_cert(
        self,
        request: JoinRequest,
        peer: VerifiedEvidence,
        identity: NodeIdentity,
        expectations: Expectations,
    ) -> SignedKubeletCert:
        """The kubelet certificate, if the peer is entitled to every claim of its request.

        Node state, role and CSR name are judged together and refused at once with every
        failure. A malformed CSR is INVALID_ARGUMENT only when nothing else is wrong: a refusal
        says more than a format error. Signing is pure, so signing before the bindings exist
        creates nothing.
        """
        failures: list[Failure] = []
        try:
            require(peer, Expectation.JOIN, expectations)
        except RefusedError as err:
            failures.extend(err.failures)
        failures.extend(role_failures(identity, request))
        signed: SignedKubeletCert | None = None
        try:
            signed = self._signer.sign(request.csr_pem, node_name=identity.name)
        except RefusedError as err:
            failures.extend(err.failures)
        except InvalidRequestError:
            if not failures:
                raise
        if failures or signed is None:
            raise RefusedError(failures, subject="join request")
        return signed

    def _spend(self, purpose: str) -> None:
        """Spend the current attestation on ``purpose`` or refuse: one ticket per attestation."""
        if self._claim(purpose):
            return
        raise AttestationSpentError(
            [
                Failure(
                    check="attestation.spent",
                    expected=f"an attestation not yet spent on a {purpose}",
                    actual=f"this attestation already bought a {purpose}",
                    detail="attest again: one ticket per fresh attestation (a new connection)",
                )
            ],
            subject=f"{purpose} request",
        )


def outcome_of(err: JoinServiceError) -> str:
    """A stable label for why nothing was issued: the node was refused, its request was
    malformed, it asked too often, or a collaborator failed (the node may retry)."""
    if isinstance(err, RefusedError):
        return "refused"
    if isinstance(err, InvalidRequestError):
        return "invalid"
    if isinstance(err, RateLimitedError):
        return "limited"
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
