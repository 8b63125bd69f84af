"""The ticket decisions: identity, role, name, bindings, one ticket per attestation, rate.

Every refusal has a case here that asserts its failure name and the status code the service
maps it to; the positive controls (a worker joins, a control-plane node joins, a bound disk is
re-issued) show that the checks do not refuse the legitimate node.

What is real: the kubelet signer and its CA, the key derivation (the KeyService's own
``DataKeys``), the cluster files on disk, the expectations built from a parsed join-config,
the aTLS ``AttestationSession`` that claims are spent on, and ``kubernetes.IdentityBindings``.
What is local: the two ConfigMap calls the bindings make go to ``ConfigMaps``, an in-memory
store with the API server's create-if-absent answers (409/404); ``test_kubernetes.py`` runs
the same bindings against a real API server. Evidence is constructed directly, with the
``identity`` a validator would have verified from an AK certificate.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import structlog.testing
from cryptography import x509
from cryptography.x509.oid import NameOID
from kubernetes.client.exceptions import ApiException

from constellation.attestation.atls.nonces import AttestationSession
from constellation.attestation.evidence import VerifiedEvidence
from constellation.attestation.identity import NodeIdentity, Role
from constellation.attestation.kdf import derive_cluster_id
from constellation.attestation.measurements import (
    PCR_NODE_LOCK,
    SHA256_ZERO,
    Measurements,
    pcr15_for_cluster_id,
)
from constellation.attestation.secret import SecretBytes
from constellation.attestation.service.status import DEFAULT_STATUS_CODES, status_for
from constellation.attestation.vtpm import VtpmValidator
from constellation.joinservice.clusterfiles import ClusterFiles
from constellation.joinservice.errors import (
    AttestationSpentError,
    DiskBindingError,
    InvalidRequestError,
    JoinServiceError,
    NodeNameTakenError,
    RateLimitedError,
    RefusedError,
    UnknownDiskError,
)
from constellation.joinservice.expectations import EXPECTATION_DETAIL, Expectations
from constellation.joinservice.joinconfig import JoinConfig
from constellation.joinservice.kubelet_cert import KubeletCertSigner, SigningCA
from constellation.joinservice.kubernetes import (
    BINDING_PREFIX,
    MAX_OBJECT_NAME,
    NODE_NAME_PREFIX,
    DiskBindings,
    NodeNames,
)
from constellation.joinservice.ratelimit import Rate, RateLimiter
from constellation.joinservice.server import STATUS_CODES
from constellation.joinservice.tickets import (
    AK_DETAIL,
    MAX_CSR_SIZE,
    MAX_NODE_NAME,
    IssuedToken,
    JoinRequest,
    JoinTicket,
    RejoinTicket,
    TicketIssuer,
    canonical_disk_uuid,
    check_csr_size,
    node_identity,
)
from constellation.keyservice.keys import DataKeys, MasterSecret

from .test_kubelet_cert import NOW, make_ca, make_csr

NAMESPACE = "kube-system"
SALT = bytes(range(32))
PLATFORM = hashlib.sha256(b"the platform root of the tests").hexdigest()


# --- request validation (pure) --------------------------------------------------------------


def test_disk_uuid_is_lowercased() -> None:
    assert (
        canonical_disk_uuid("6BA7B810-9DAD-11D1-80B4-00C04FD430C8")
        == "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "6ba7b810-9dad-11d1-80b4-00c04fd430c",
        "6ba7b8109dad11d180b400c04fd430c8",
        "{6ba7b810-9dad-11d1-80b4-00c04fd430c8}",
        "6ba7b810-9dad-11d1-80b4-00c04fd430c8\n",
        "../../etc/passwd-9dad-11d1-80b4-00c04fd430c8",
        "g" * 8 + "-9dad-11d1-80b4-00c04fd430c8",
    ],
)
def test_disk_uuid_rejects(text: str) -> None:
    with pytest.raises(InvalidRequestError, match="disk_uuid"):
        canonical_disk_uuid(text)


def test_csr_size_limits() -> None:
    check_csr_size(b"x" * MAX_CSR_SIZE)
    with pytest.raises(InvalidRequestError, match="empty"):
        check_csr_size(b"")
    with pytest.raises(InvalidRequestError, match="limit"):
        check_csr_size(b"x" * (MAX_CSR_SIZE + 1))


def test_secret_bytes_never_show() -> None:
    secret = SecretBytes(b"\x01" * 32)
    assert "01" not in repr(secret)
    assert "\\x01" not in str(secret)
    assert f"{secret}" == str(secret)
    assert secret == SecretBytes(b"\x01" * 32)
    assert secret != SecretBytes(b"\x02" * 32)
    with pytest.raises(TypeError):
        hash(secret)


# --- identity ---------------------------------------------------------------------------------


def ak_of(label: str) -> str:
    return hashlib.sha256(b"ak of " + label.encode()).hexdigest()


def identity(name: str, role: Role = Role.WORKER, *, ak: str | None = None) -> NodeIdentity:
    return NodeIdentity(name=name, role=role, ak_sha256=ak or ak_of(name), platform=PLATFORM)


def evidence_of(
    who: NodeIdentity | None,
    *,
    state: str = "join",
    pcr15: bytes = SHA256_ZERO,
    quoted_ak: str | None = None,
) -> VerifiedEvidence:
    """Evidence as ``PeerValidator`` hands it to a handler (tagged with the matched state)."""
    ak = quoted_ak if quoted_ak is not None else (who.ak_sha256 if who else ak_of("anonymous"))
    return VerifiedEvidence(
        "qemu-vtpm",
        os.urandom(32),
        pcrs={PCR_NODE_LOCK: pcr15},
        details={AK_DETAIL: ak, EXPECTATION_DETAIL: state},
        identity=who,
    )


def checks(err: JoinServiceError) -> set[str]:
    return {f.check for f in getattr(err, "failures", ())}


def code_of(err: BaseException) -> grpc.StatusCode | None:
    """The status code the service's interceptor answers ``err`` with."""
    return status_for(err, {**DEFAULT_STATUS_CODES, **STATUS_CODES})


def test_node_identity_is_the_verified_identity() -> None:
    who = identity("worker-1")
    assert node_identity(evidence_of(who)) == who


def test_evidence_without_identity_is_refused() -> None:
    """No name means no ticket: the AK alone no longer suffices."""
    with pytest.raises(RefusedError) as info:
        node_identity(evidence_of(None))
    assert checks(info.value) == {"identity.present"}
    assert code_of(info.value) == grpc.StatusCode.PERMISSION_DENIED
    assert "AK certificate" in str(info.value)


@pytest.mark.parametrize("quoted", ["", "AB" * 32, ak_of("someone else")])
def test_identity_must_certify_the_quoting_ak(quoted: str) -> None:
    with pytest.raises(RefusedError) as info:
        node_identity(evidence_of(identity("worker-1"), quoted_ak=quoted))
    assert checks(info.value) == {"identity.ak"}


@pytest.mark.parametrize("name", ["", "Worker-1", "worker_1", "-w", "a" * (MAX_NODE_NAME + 1)])
def test_identity_name_must_be_a_usable_node_name(name: str) -> None:
    with pytest.raises(RefusedError) as info:
        node_identity(evidence_of(identity(name, ak=ak_of("x"))))
    assert checks(info.value) == {"identity.name"}


def test_longest_node_name_still_fits_an_object_name() -> None:
    assert len(NODE_NAME_PREFIX) + MAX_NODE_NAME == MAX_OBJECT_NAME
    node_identity(evidence_of(identity("a" * MAX_NODE_NAME)))


# --- the service's collaborators, local -------------------------------------------------------


class ConfigMaps:
    """The ConfigMap calls of ``IdentityBindings``, answered as the API server answers them."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def create_namespaced_config_map(self, namespace: str, body: Any, **_: Any) -> Any:
        with self._lock:
            key = (namespace, body.metadata.name)
            if key in self.objects:
                raise ApiException(status=409, reason="AlreadyExists")
            self.objects[key] = body
            return body

    def read_namespaced_config_map(self, name: str, namespace: str, **_: Any) -> Any:
        with self._lock:
            try:
                return self.objects[(namespace, name)]
            except KeyError:
                raise ApiException(status=404, reason="NotFound") from None

    def names(self) -> set[str]:
        return {name for _, name in self.objects}


class Tokens:
    """A ``TokenIssuer`` that records what it created."""

    def __init__(self) -> None:
        self.created: list[IssuedToken] = []

    def create(self) -> IssuedToken:
        token_id = f"t{len(self.created):05d}"
        issued = IssuedToken(token_id, SecretBytes(f"{token_id}.{os.urandom(8).hex()}".encode()))
        self.created.append(issued)
        return issued


class DerivedKeys:
    """The ticket's key source, derived exactly as the KeyService derives them."""

    def __init__(self, keys: DataKeys) -> None:
        self._keys = keys

    def state_disk_key(self, disk_uuid: str) -> SecretBytes:
        return SecretBytes(self._keys.derive(disk_uuid.lower(), 32))

    def measurement_secret(self) -> SecretBytes:
        return SecretBytes(self._keys.derive("measurementSecret", 32))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Cluster:
    """A ``TicketIssuer`` wired to local collaborators, and the aTLS session of the caller."""

    issuer: TicketIssuer
    config_maps: ConfigMaps
    tokens: Tokens
    keys: DerivedKeys
    expectations: Expectations
    clock: Clock
    pki: Path
    sessions: list[AttestationSession] = field(default_factory=list)

    def claim(self, purpose: str) -> bool:
        return self.sessions[-1].claim(purpose)

    def attest(self, who: NodeIdentity | None, **kwargs: Any) -> VerifiedEvidence:
        """A fresh attestation: a new aTLS session whose claims start unspent."""
        evidence = evidence_of(who, **kwargs)
        self.sessions.append(AttestationSession(evidence))
        return evidence

    def attest_rejoin(self, who: NodeIdentity) -> VerifiedEvidence:
        return self.attest(who, state="rejoin", pcr15=self.expectations.cluster_pcr15)

    def join(
        self,
        peer: VerifiedEvidence,
        disk: str,
        *,
        name: str | None = None,
        control_plane: bool | None = None,
    ) -> JoinTicket:
        who = peer.identity
        csr_name = name if name is not None else (who.name if who else "nobody")
        if control_plane is None:
            control_plane = who is not None and who.role is Role.CONTROL_PLANE
        request = JoinRequest(
            disk_uuid=disk,
            csr_pem=make_csr(
                attributes=[
                    (NameOID.ORGANIZATION_NAME, "system:nodes"),
                    (NameOID.COMMON_NAME, f"system:node:{csr_name}"),
                ]
            ),
            is_control_plane=control_plane,
        )
        return self.issuer.issue_join(request, peer)

    def rejoin(self, peer: VerifiedEvidence, disk: str) -> RejoinTicket:
        return self.issuer.issue_rejoin(disk, peer)


@pytest.fixture
def cluster(tmp_path: Path) -> Cluster:
    ca_cert_pem, ca_key_pem = make_ca()
    ca = SigningCA.from_pem(ca_cert_pem, ca_key_pem)
    pki = tmp_path / "pki"
    pki.mkdir()
    (pki / "ca.crt").write_bytes(ca_cert_pem)
    (pki / "ca.key").write_bytes(ca_key_pem)
    (pki / "sa.key").write_bytes(b"service account key")
    components = tmp_path / "components.json"
    components.write_text(json.dumps({"kubernetesVersion": "v1.31.1", "components": []}))
    keys = DerivedKeys(DataKeys(MasterSecret(key=os.urandom(32), salt=os.urandom(32))))
    # Handlers read only the config's digest and salt and the PCR 15 values from the
    # expectations; the validators ran before (in the aTLS gate) and are not called here.
    measurements = Measurements.from_dict({"4": "11" * 32, "9": "22" * 32})
    cluster_id = derive_cluster_id(keys.measurement_secret().reveal(), SALT)
    expectations = Expectations(
        config=JoinConfig("qemu-vtpm", measurements.with_pcr15(None), SALT, "digest"),
        join=VtpmValidator(measurements.with_pcr15(None)),
        rejoin=VtpmValidator(measurements.with_pcr15(cluster_id)),
        cluster_pcr15=pcr15_for_cluster_id(cluster_id),
    )
    config_maps = ConfigMaps()
    tokens = Tokens()
    clock = Clock()
    holder: list[Cluster] = []
    issuer = TicketIssuer(
        expectations=lambda: expectations,
        keys=keys,
        disks=DiskBindings(config_maps, namespace=NAMESPACE),  # type: ignore[arg-type]
        names=NodeNames(config_maps, namespace=NAMESPACE),  # type: ignore[arg-type]
        tokens=tokens,
        signer=KubeletCertSigner(ca, clock=lambda: NOW),
        cluster=ClusterFiles(pki / "ca.crt", pki, components),
        api_server_endpoint="127.0.0.1:6443",
        discovery=lambda pem: "sha256:" + hashlib.sha256(pem).hexdigest(),
        claim=lambda purpose: holder[0].claim(purpose),
        limiter=RateLimiter(per_identity=Rate(burst=3, refill_seconds=20.0), clock=clock),
    )
    holder.append(Cluster(issuer, config_maps, tokens, keys, expectations, clock, pki))
    return holder[0]


def new_disk() -> str:
    return str(uuid.uuid4())


def refused(logs: list[dict[str, Any]]) -> dict[str, Any]:
    (entry,) = [e for e in logs if e["event"] == "join.refused"]
    return entry


# --- positive controls ------------------------------------------------------------------------


def test_worker_joins_under_its_attested_name(cluster: Cluster) -> None:
    who = identity("worker-1")
    disk = new_disk().upper()
    with structlog.testing.capture_logs() as logs:
        ticket = cluster.join(cluster.attest(who), disk)
    cert = x509.load_pem_x509_certificate(ticket.kubelet_cert_pem)
    assert cert.subject.rfc4514_string() == "CN=system:node:worker-1,O=system:nodes"
    assert ticket.control_plane_files == ()
    assert ticket.state_disk_key == cluster.keys.state_disk_key(disk)
    assert ticket.measurement_secret == cluster.keys.measurement_secret()
    assert ticket.measurement_salt == SALT
    assert cluster.config_maps.names() == {
        BINDING_PREFIX + disk.lower(),
        NODE_NAME_PREFIX + "worker-1",
    }
    assert len(cluster.tokens.created) == 1
    (issued,) = [e for e in logs if e["event"] == "join.issued"]
    assert issued["node"] == "worker-1"
    assert issued["role"] == "worker"
    assert issued["peer"] == who.ak_sha256
    assert issued["binding"] == issued["name_binding"] == "created"
    dump = json.dumps(logs, default=repr)
    assert ticket.state_disk_key.reveal().hex() not in dump
    assert ticket.token.reveal().decode() not in dump


def test_control_plane_identity_gets_the_pki(cluster: Cluster) -> None:
    with structlog.testing.capture_logs() as logs:
        ticket = cluster.join(cluster.attest(identity("cp-0", Role.CONTROL_PLANE)), new_disk())
    files = dict(ticket.control_plane_files)
    assert files["ca.key"].reveal() == (cluster.pki / "ca.key").read_bytes()
    assert "sa.key" in files
    (issued,) = [e for e in logs if e["event"] == "join.issued"]
    assert issued["role"] == "control-plane"
    assert "PRIVATE KEY" not in json.dumps(logs, default=repr)


def test_retried_join_by_the_same_identity_is_confirmed(cluster: Cluster) -> None:
    who = identity("worker-1")
    disk = new_disk()
    first = cluster.join(cluster.attest(who), disk)
    with structlog.testing.capture_logs() as logs:
        again = cluster.join(cluster.attest(who), disk)
    assert again.state_disk_key == first.state_disk_key
    (issued,) = [e for e in logs if e["event"] == "join.issued"]
    assert issued["binding"] == issued["name_binding"] == "confirmed"


def test_rejoin_of_a_bound_disk(cluster: Cluster) -> None:
    who = identity("worker-1")
    disk = new_disk()
    joined = cluster.join(cluster.attest(who), disk)
    objects = set(cluster.config_maps.names())
    rejoined = cluster.rejoin(cluster.attest_rejoin(who), disk.upper())
    assert rejoined.state_disk_key == joined.state_disk_key
    assert rejoined.measurement_secret == joined.measurement_secret
    assert cluster.config_maps.names() == objects
    assert len(cluster.tokens.created) == 1


# --- refusals ---------------------------------------------------------------------------------


def assert_refused_and_nothing_created(
    cluster: Cluster,
    err: JoinServiceError,
    expected: set[str],
    before: set[str] | None = None,
    tokens: int = 0,
) -> None:
    """PERMISSION_DENIED with exactly ``expected`` failures, and no new object or token."""
    assert checks(err) == expected
    assert code_of(err) == grpc.StatusCode.PERMISSION_DENIED
    assert cluster.config_maps.names() == (before or set())
    assert len(cluster.tokens.created) == tokens


def test_join_without_identity_is_refused(cluster: Cluster) -> None:
    with structlog.testing.capture_logs() as logs, pytest.raises(RefusedError) as info:
        cluster.join(cluster.attest(None), new_disk(), name="worker-1")
    assert_refused_and_nothing_created(cluster, info.value, {"identity.present"})
    assert refused(logs)["outcome"] == "refused"


def test_csr_for_another_node_name_is_refused(cluster: Cluster) -> None:
    """The attack: a certificate for system:node:mini-cp-0 issued to another machine."""
    with structlog.testing.capture_logs() as logs, pytest.raises(RefusedError) as info:
        cluster.join(cluster.attest(identity("worker-7")), new_disk(), name="mini-cp-0")
    assert_refused_and_nothing_created(cluster, info.value, {"csr.node_name"})
    (failure,) = info.value.failures
    assert failure.expected == "CN=system:node:worker-7"
    assert failure.actual == "CN=system:node:mini-cp-0"
    entry = refused(logs)
    assert entry["node"] == "worker-7"
    assert [f["check"] for f in entry["failures"]] == ["csr.node_name"]


def test_worker_asking_for_control_plane_files_is_refused(cluster: Cluster) -> None:
    with pytest.raises(RefusedError) as info:
        cluster.join(cluster.attest(identity("worker-1")), new_disk(), control_plane=True)
    assert_refused_and_nothing_created(cluster, info.value, {"identity.role"})


def test_control_plane_identity_joining_as_worker_is_refused(cluster: Cluster) -> None:
    who = identity("cp-0", Role.CONTROL_PLANE)
    with pytest.raises(RefusedError) as info:
        cluster.join(cluster.attest(who), new_disk(), control_plane=False)
    assert_refused_and_nothing_created(cluster, info.value, {"identity.role"})


def test_every_entitlement_failure_is_reported_at_once(cluster: Cluster) -> None:
    """Wrong state, wrong role and a CSR for another name: one refusal naming all three."""
    peer = cluster.attest(identity("worker-1"), state="rejoin", pcr15=b"\x01" * 32)
    with pytest.raises(RefusedError) as info:
        cluster.join(peer, new_disk(), name="mini-cp-0", control_plane=True)
    assert_refused_and_nothing_created(
        cluster, info.value, {"node_state", "pcr[15]", "identity.role", "csr.node_name"}
    )


def test_malformed_csr_is_invalid_argument(cluster: Cluster) -> None:
    with pytest.raises(InvalidRequestError) as info:
        cluster.join(cluster.attest(identity("worker-1")), new_disk(), name="Not_A_Name")
    assert code_of(info.value) == grpc.StatusCode.INVALID_ARGUMENT
    assert cluster.config_maps.names() == set()


def test_name_registered_to_another_identity_is_refused(cluster: Cluster) -> None:
    cluster.join(cluster.attest(identity("worker-1")), new_disk())
    before = set(cluster.config_maps.names())
    impostor = identity("worker-1", ak=ak_of("impostor"))
    with structlog.testing.capture_logs() as logs, pytest.raises(NodeNameTakenError) as info:
        cluster.join(cluster.attest(impostor), new_disk())
    assert_refused_and_nothing_created(cluster, info.value, {"node.name_taken"}, before, tokens=1)
    assert len(cluster.tokens.created) == 1
    assert refused(logs)["error"] == "NodeNameTakenError"
    assert "an operator deletes ConfigMap" in str(info.value)


def test_disk_bound_to_another_identity_is_refused(cluster: Cluster) -> None:
    disk = new_disk()
    cluster.join(cluster.attest(identity("worker-1")), disk)
    with pytest.raises(DiskBindingError) as info:
        cluster.join(cluster.attest(identity("worker-2")), disk)
    assert checks(info.value) == {"disk.bound_elsewhere"}
    assert code_of(info.value) == grpc.StatusCode.PERMISSION_DENIED
    assert len(cluster.tokens.created) == 1


def test_rejoin_of_an_unknown_disk_is_refused_and_binds_nothing(cluster: Cluster) -> None:
    """The attack: a rejoin ticket for a never-bound disk used to create the binding."""
    with structlog.testing.capture_logs() as logs, pytest.raises(UnknownDiskError) as info:
        cluster.rejoin(cluster.attest_rejoin(identity("worker-1")), new_disk())
    assert_refused_and_nothing_created(cluster, info.value, {"disk.unknown"})
    assert refused(logs)["request"] == "rejoin"


def test_rejoin_of_another_identitys_disk_is_refused(cluster: Cluster) -> None:
    disk = new_disk()
    cluster.join(cluster.attest(identity("worker-1")), disk)
    before = set(cluster.config_maps.names())
    with pytest.raises(DiskBindingError) as info:
        cluster.rejoin(cluster.attest_rejoin(identity("worker-2")), disk)
    assert_refused_and_nothing_created(
        cluster, info.value, {"disk.bound_elsewhere"}, before, tokens=1
    )


def test_rejoin_without_identity_is_refused(cluster: Cluster) -> None:
    with pytest.raises(RefusedError) as info:
        cluster.rejoin(cluster.attest(None, state="rejoin"), new_disk())
    assert_refused_and_nothing_created(cluster, info.value, {"identity.present"})


def test_one_attestation_buys_one_join_ticket(cluster: Cluster) -> None:
    """The attack: one attested key re-used within the verdict cache minted many tickets."""
    who = identity("worker-1")
    peer = cluster.attest(who)
    disk = new_disk()
    cluster.join(peer, disk)
    before = set(cluster.config_maps.names())
    with structlog.testing.capture_logs() as logs, pytest.raises(AttestationSpentError) as info:
        cluster.join(peer, disk)  # same session: no fresh attestation
    assert_refused_and_nothing_created(cluster, info.value, {"attestation.spent"}, before, tokens=1)
    assert "attest again" in str(info.value)
    assert len(cluster.tokens.created) == 1
    assert refused(logs)["error"] == "AttestationSpentError"
    # A fresh attestation may ask again (an idempotent retry).
    cluster.join(cluster.attest(who), disk)
    assert len(cluster.tokens.created) == 2


def test_one_attestation_buys_one_rejoin_ticket(cluster: Cluster) -> None:
    who = identity("worker-1")
    disk = new_disk()
    cluster.join(cluster.attest(who), disk)
    peer = cluster.attest_rejoin(who)
    cluster.rejoin(peer, disk)
    with pytest.raises(AttestationSpentError) as info:
        cluster.rejoin(peer, disk)
    assert checks(info.value) == {"attestation.spent"}
    assert code_of(info.value) == grpc.StatusCode.PERMISSION_DENIED


def test_refused_request_does_not_spend_the_attestation(cluster: Cluster) -> None:
    """Claims are spent only once every side-effect-free check passed."""
    who = identity("worker-1")
    peer = cluster.attest(who)
    with pytest.raises(RefusedError):
        cluster.join(peer, new_disk(), name="someone-else")
    cluster.join(peer, new_disk())


def test_identity_is_rate_limited_before_anything_is_created(cluster: Cluster) -> None:
    """The attack: 25 join tickets in 3 s. Three fresh attestations pass, the fourth waits."""
    who = identity("worker-1")
    disk = new_disk()
    for _ in range(3):
        cluster.join(cluster.attest(who), disk)
    with structlog.testing.capture_logs() as logs, pytest.raises(RateLimitedError) as info:
        cluster.join(cluster.attest(who), disk)
    assert checks(info.value) == {"rate.identity"}
    assert code_of(info.value) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "retry in 20 s" in str(info.value)
    assert len(cluster.tokens.created) == 3
    assert refused(logs)["outcome"] == "limited"
    # Other identities are not held up by this one.
    cluster.join(cluster.attest(identity("worker-2")), new_disk())
    # After the refill interval one more request is admitted.
    cluster.clock.now += 20.0
    cluster.join(cluster.attest(who), disk)
    assert len(cluster.tokens.created) == 5


def test_rejoin_is_rate_limited_too(cluster: Cluster) -> None:
    who = identity("worker-1")
    for _ in range(3):
        with pytest.raises(UnknownDiskError):
            cluster.rejoin(cluster.attest_rejoin(who), new_disk())
    with pytest.raises(RateLimitedError) as info:
        cluster.rejoin(cluster.attest_rejoin(who), new_disk())
    assert code_of(info.value) == grpc.StatusCode.RESOURCE_EXHAUSTED
