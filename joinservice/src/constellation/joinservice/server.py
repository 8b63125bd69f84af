"""The JoinService's gRPC server: mutual aTLS, error mapping, health, metrics, shutdown.

Layers of a call, outside in (the shared plumbing of ``constellation.attestation.service``):

1. the request counter (``constellation_requests_total{service="joinservice", method,
   outcome}``);
2. ``ErrorStatusInterceptor`` with ``STATUS_CODES``, the one place the JoinService's typed
   errors become gRPC status codes:

   ===========================  ===================  ==========================================
   error                        status               failures (``Failure.check``)
   ===========================  ===================  ==========================================
   ``InvalidRequestError``      INVALID_ARGUMENT     malformed disk UUID or CSR (``csr.subject.*``,
                                                     ``csr.signature``, ``csr.public_key``, ...)
   ``RefusedError``             PERMISSION_DENIED    ``identity.present``, ``identity.ak``,
                                                     ``identity.name``, ``identity.role``,
                                                     ``node_state``, ``pcr[15]``
   ``CSRNodeNameError``         PERMISSION_DENIED    ``csr.node_name``
   ``NodeNameTakenError``       PERMISSION_DENIED    ``node.name_taken``
   ``DiskBindingError``         PERMISSION_DENIED    ``disk.bound_elsewhere``
   ``UnknownDiskError``         PERMISSION_DENIED    ``disk.unknown`` (rejoin never binds)
   ``AttestationSpentError``    PERMISSION_DENIED    ``attestation.spent`` (attest again)
   ``RateLimitedError``         RESOURCE_EXHAUSTED   ``rate.identity``, ``rate.overall``,
                                                     ``rate.identities`` (message: when to retry)
   ``UpstreamError``            UNAVAILABLE          (KeyService or Kubernetes API failed)
   ``NotReadyError``            UNAVAILABLE          (no valid join-config yet)
   ``ConfigError``              FAILED_PRECONDITION
   ``UndecodableRequestError``  INVALID_ARGUMENT     (the bytes are not the request message;
                                                     shared table, ``attestation.service``)
   any other error              INTERNAL             (fixed text; details only in the log)
   ===========================  ===================  ==========================================

   Several refusals of one request (say a wrong role *and* a CSR for another name) arrive as
   one ``RefusedError`` listing every failure.

3. the aTLS client gate (``constellation.attestation.atls``) validates the caller's evidence
   with ``expectations.PeerValidator`` (join *or* rejoin state; timed in
   ``constellation_attestation_seconds{operation="validate"}``) before any handler runs;
4. ``JoinServicer`` converts protobuf messages to and from ``tickets``; the decisions
   (identity, role, name, bindings, one ticket per attestation, rate) are all in ``tickets``.

Health (``grpc.health.v1``) and the aTLS handshake are not gated. On shutdown the health
status flips to NOT_SERVING first, then the server drains in-flight calls for a grace period.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import grpc
import structlog

from constellation.attestation.atls import AttestedServer
from constellation.attestation.atls.server import claim_attestation, verified_peer
from constellation.attestation.evidence import Issuer
from constellation.attestation.service import (
    ErrorStatusInterceptor,
    Health,
    PlaintextHealthPorts,
    ServiceMetrics,
)
from constellation.joinservice.bootstrap_token import discovery_hash
from constellation.joinservice.clusterfiles import ClusterFiles
from constellation.joinservice.config import Settings
from constellation.joinservice.errors import (
    ConfigError,
    InvalidRequestError,
    NotReadyError,
    RateLimitedError,
    RefusedError,
    UpstreamError,
)
from constellation.joinservice.expectations import (
    Expectations,
    PeerValidator,
    ValidatorFactory,
    build_expectations,
)
from constellation.joinservice.joinconfig import JoinConfigWatcher
from constellation.joinservice.keys import KeyServiceClient
from constellation.joinservice.kubelet_cert import KubeletCertSigner, SigningCA
from constellation.joinservice.kubernetes import BootstrapTokens, DiskBindings, NodeNames
from constellation.joinservice.ratelimit import RateLimiter
from constellation.joinservice.tickets import JoinRequest, TicketIssuer, TokenIssuer
from constellation.proto import components_pb2, join_pb2, join_pb2_grpc

SERVICE_NAME: Final = "join.API"
METRICS_SERVICE: Final = "joinservice"

log = structlog.get_logger("constellation.joinservice.server")

STATUS_CODES: Final[Mapping[type[BaseException], grpc.StatusCode]] = {
    InvalidRequestError: grpc.StatusCode.INVALID_ARGUMENT,
    RefusedError: grpc.StatusCode.PERMISSION_DENIED,
    RateLimitedError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    UpstreamError: grpc.StatusCode.UNAVAILABLE,
    NotReadyError: grpc.StatusCode.UNAVAILABLE,
    ConfigError: grpc.StatusCode.FAILED_PRECONDITION,
}


class JoinServicer(join_pb2_grpc.APIServicer):
    """Protobuf in, ``tickets`` call, protobuf out. No decisions are taken here."""

    def __init__(self, tickets: TicketIssuer) -> None:
        self._tickets = tickets

    def IssueJoinTicket(
        self, request: join_pb2.IssueJoinTicketRequest, context: grpc.ServicerContext
    ) -> join_pb2.IssueJoinTicketResponse:
        ticket = self._tickets.issue_join(
            JoinRequest(
                disk_uuid=request.disk_uuid,
                csr_pem=request.certificate_request,
                is_control_plane=request.is_control_plane,
            ),
            verified_peer(),
        )
        return join_pb2.IssueJoinTicketResponse(
            state_disk_key=ticket.state_disk_key.reveal(),
            measurement_salt=ticket.measurement_salt,
            measurement_secret=ticket.measurement_secret.reveal(),
            kubelet_cert=ticket.kubelet_cert_pem,
            api_server_endpoint=ticket.api_server_endpoint,
            token=ticket.token.reveal().decode("ascii"),
            discovery_token_ca_cert_hash=ticket.discovery_hash,
            control_plane_files=[
                join_pb2.ControlPlaneCertOrKey(name=name, data=data.reveal())
                for name, data in ticket.control_plane_files
            ],
            kubernetes_version=ticket.kubernetes_version,
            kubernetes_components=[
                components_pb2.Component(
                    url=c.url,
                    hash=c.hash,
                    install_path=c.install_path,
                    extract=c.extract,
                    name=c.name,
                )
                for c in ticket.components
            ],
            ca_cert=ticket.ca_cert_pem,
        )

    def IssueRejoinTicket(
        self, request: join_pb2.IssueRejoinTicketRequest, context: grpc.ServicerContext
    ) -> join_pb2.IssueRejoinTicketResponse:
        ticket = self._tickets.issue_rejoin(request.disk_uuid, verified_peer())
        return join_pb2.IssueRejoinTicketResponse(
            state_disk_key=ticket.state_disk_key.reveal(),
            measurement_secret=ticket.measurement_secret.reveal(),
        )


class JoinServer:
    """The assembled server. ``start`` listens; ``shutdown`` drains and stops it."""

    def __init__(
        self,
        *,
        issuer: Issuer,
        tickets: TicketIssuer,
        peer_validator: PeerValidator,
        metrics: ServiceMetrics,
        max_workers: int = 16,
    ) -> None:
        self.metrics = metrics
        self.health = Health([SERVICE_NAME])
        self.atls = AttestedServer(
            issuer,
            client_validators=lambda: [peer_validator],
            max_workers=max_workers,
            interceptors=[metrics.interceptor(), ErrorStatusInterceptor(STATUS_CODES)],
        )
        join_pb2_grpc.add_APIServicer_to_server(JoinServicer(tickets), self.atls.grpc_server)
        self.health.attach(self.atls.grpc_server)
        # Kubelet gRPC probes speak neither TLS nor aTLS: health also gets a plaintext server
        # that serves nothing else.
        self.health_ports = PlaintextHealthPorts(self.health)
        self._stopped = threading.Event()

    @property
    def grpc_servers(self) -> list[grpc.Server]:
        return [self.atls.grpc_server, *self.health_ports.servers]

    def add_port(self, address: str) -> int:
        """Serve the attested API (and health) on ``address``; returns the bound port."""
        return self.atls.add_port(address)

    def add_health_port(self, address: str) -> int:
        """Serve only ``grpc.health.v1``, in plaintext, on ``address``."""
        port = self.health_ports.add(address)
        if port == 0:
            raise ConfigError(f"cannot listen for health checks on {address}")
        return port

    def start(self) -> None:
        self.atls.start()
        self.health_ports.start()
        self.health.serving()
        log.info("joinservice.started")

    def shutdown(self, grace: float = 10.0) -> None:
        """Stop taking new calls, let in-flight ones finish within ``grace`` seconds."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.health.not_serving()
        stopping = [server.stop(grace) for server in self.grpc_servers]
        for event in stopping:
            event.wait(grace + 1.0)
        log.info("joinservice.stopped")


def build_join_server(
    settings: Settings,
    *,
    issuer: Issuer,
    validator_factory: ValidatorFactory,
    core: Any,
    keyservice: grpc.Channel,
    metrics: ServiceMetrics | None = None,
    token_issuer: TokenIssuer | None = None,
    rate_limiter: RateLimiter | None = None,
    max_workers: int = 16,
) -> tuple[JoinServer, JoinConfigWatcher[Expectations]]:
    """Assemble the service from its settings and its collaborators.

    ``core`` is a ``kubernetes.client.CoreV1Api``; ``keyservice`` a channel to the KeyService;
    ``rate_limiter`` bounds ticket requests (``ratelimit`` defaults when None).
    Start-up fails (typed error) unless the CA, the join-config and the measurement secret are
    all usable: a JoinService that could only refuse is better not running.
    """
    metrics = metrics or ServiceMetrics(METRICS_SERVICE)
    keys = KeyServiceClient(keyservice)
    measurement_secret = keys.measurement_secret()
    watcher = JoinConfigWatcher(
        settings.join_config_dir,
        lambda config: build_expectations(config, measurement_secret, validator_factory),
        interval=settings.poll_interval,
        salt_file=settings.measurement_salt_file,
    )
    ca = SigningCA.from_pem(
        _read_file(settings.ca_cert_file, "CA certificate"),
        _read_file(settings.ca_key_file, "CA key"),
    )
    tickets = TicketIssuer(
        expectations=lambda: watcher.current.built,
        keys=keys,
        disks=DiskBindings(core, namespace=settings.namespace),
        names=NodeNames(core, namespace=settings.namespace),
        tokens=token_issuer or BootstrapTokens(core),
        signer=KubeletCertSigner(ca),
        cluster=ClusterFiles(settings.ca_cert_file, settings.pki_dir, settings.components_file),
        api_server_endpoint=settings.api_server_endpoint,
        discovery=discovery_hash,
        claim=claim_attestation,
        limiter=rate_limiter,
    )
    peer_validator = PeerValidator(lambda: watcher.current.built, timer=metrics.time_attestation)
    server = JoinServer(
        issuer=issuer,
        tickets=tickets,
        peer_validator=peer_validator,
        metrics=metrics,
        max_workers=max_workers,
    )
    gate = server.atls.client_gate
    if gate is not None:
        # New measurements revoke the old ones at once: a client verified under the previous
        # join-config must attest again instead of keeping its remembered verdict.
        watcher.on_change(lambda _loaded: gate.set_validators(lambda: [peer_validator]))
    return server, watcher


def _read_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
