"""The JoinService's gRPC server: mutual aTLS, error mapping, health, metrics, shutdown.

Layers of a call, outside in:

1. ``StatusInterceptor`` counts every call by outcome and turns the JoinService's typed
   errors into gRPC status codes - the only place that does so:

   ===========================  ===================
   ``InvalidRequestError``      INVALID_ARGUMENT
   ``RefusedError`` (+binding)  PERMISSION_DENIED
   ``UpstreamError``            UNAVAILABLE
   ``NotReadyError``            UNAVAILABLE
   ``ConfigError``              FAILED_PRECONDITION
   any other error              INTERNAL (generic message, details only in the log)
   ===========================  ===================

2. the aTLS client gate (``constellation.attestation.atls``) validates the caller's evidence
   with ``expectations.PeerValidator`` (join *or* rejoin state) before any handler runs;
3. ``JoinServicer`` converts protobuf messages to and from ``tickets``.

Health (``grpc.health.v1``) and the aTLS handshake are not gated. On ``shutdown`` the health
status flips to NOT_SERVING first, then the server drains in-flight calls for a grace period.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, cast

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry, Counter, Histogram

from constellation.attestation.atls import AttestedServer
from constellation.attestation.atls.server import verified_peer
from constellation.attestation.errors import ConstellationError
from constellation.attestation.evidence import Issuer
from constellation.joinservice.bootstrap_token import discovery_hash
from constellation.joinservice.clusterfiles import ClusterFiles
from constellation.joinservice.config import Settings
from constellation.joinservice.errors import (
    ConfigError,
    InvalidRequestError,
    NotReadyError,
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
from constellation.joinservice.kubernetes import BootstrapTokens, DiskBindings
from constellation.joinservice.tickets import JoinRequest, TicketIssuer, TokenIssuer
from constellation.proto import components_pb2, join_pb2, join_pb2_grpc

SERVICE_NAME: Final = "join.API"
ATTESTATION_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

log = structlog.get_logger("constellation.joinservice.server")

_STATUS: Final[tuple[tuple[type[ConstellationError], grpc.StatusCode], ...]] = (
    (InvalidRequestError, grpc.StatusCode.INVALID_ARGUMENT),
    (RefusedError, grpc.StatusCode.PERMISSION_DENIED),
    (UpstreamError, grpc.StatusCode.UNAVAILABLE),
    (NotReadyError, grpc.StatusCode.UNAVAILABLE),
    (ConfigError, grpc.StatusCode.FAILED_PRECONDITION),
)


def status_for(error: ConstellationError) -> grpc.StatusCode:
    for kind, code in _STATUS:
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL


class Metrics:
    """The JoinService's Prometheus metrics, in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "joinservice_requests",
            "JoinService calls by method and outcome (gRPC status code name).",
            ["method", "outcome"],
            registry=self.registry,
        )
        self.attestation_seconds = Histogram(
            "joinservice_attestation_seconds",
            "Time to validate a joining node's evidence, by outcome (join, rejoin, refused).",
            ["outcome"],
            buckets=ATTESTATION_BUCKETS,
            registry=self.registry,
        )

    def observe_attestation(self, outcome: str, seconds: float) -> None:
        self.attestation_seconds.labels(outcome=outcome).observe(seconds)


class StatusInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]  # generic only in the stubs
    """Maps errors to status codes and counts outcomes (see the module docstring)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method.rsplit("/", 1)[-1]
        behaviour = handler.unary_unary
        requests = self._metrics.requests

        def run(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                response = behaviour(request, context)
            except ConstellationError as err:
                code = status_for(err)
                requests.labels(method=method, outcome=code.name).inc()
                if code is grpc.StatusCode.INTERNAL:
                    log.error("joinservice.internal_error", method=method, error=str(err))
                    context.abort(code, "internal error; see the JoinService log")
                context.abort(code, str(err))
            except Exception as err:
                # ServicerContext.code() exists at run time (grpcio >= 1.38), not in the stubs.
                already = cast(Any, context).code()
                if already is not None:  # aborted below us (the aTLS gate): keep its status
                    requests.labels(method=method, outcome=already.name).inc()
                    raise
                requests.labels(method=method, outcome="INTERNAL").inc()
                log.exception("joinservice.internal_error", method=method, error=type(err).__name__)
                context.abort(grpc.StatusCode.INTERNAL, "internal error; see the JoinService log")
            requests.labels(method=method, outcome="OK").inc()
            return response

        return grpc.unary_unary_rpc_method_handler(
            run,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


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
        metrics: Metrics,
        max_workers: int = 16,
    ) -> None:
        self.metrics = metrics
        self.health = health.HealthServicer()
        self.atls = AttestedServer(
            issuer,
            client_validators=lambda: [peer_validator],
            max_workers=max_workers,
            interceptors=[StatusInterceptor(metrics)],
        )
        join_pb2_grpc.add_APIServicer_to_server(JoinServicer(tickets), self.atls.grpc_server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.atls.grpc_server)
        self._stopped = threading.Event()

    def add_port(self, address: str) -> int:
        return self.atls.add_port(address)

    def start(self) -> None:
        self.atls.start()
        for service in ("", SERVICE_NAME):
            self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        log.info("joinservice.started")

    def shutdown(self, grace: float = 10.0) -> None:
        """Stop taking new calls, let in-flight ones finish within ``grace`` seconds."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.health.enter_graceful_shutdown()
        self.atls.stop(grace).wait(grace + 1.0)
        log.info("joinservice.stopped")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until ``shutdown`` was called (or ``timeout`` passed)."""
        return self._stopped.wait(timeout)


def build_join_server(
    settings: Settings,
    *,
    issuer: Issuer,
    validator_factory: ValidatorFactory,
    core: Any,
    keyservice: grpc.Channel,
    metrics: Metrics | None = None,
    token_issuer: TokenIssuer | None = None,
) -> tuple[JoinServer, JoinConfigWatcher[Expectations]]:
    """Assemble the service from its settings and its collaborators.

    ``core`` is a ``kubernetes.client.CoreV1Api``; ``keyservice`` a channel to the KeyService.
    Start-up fails (typed error) unless the CA, the join-config and the measurement secret are
    all usable: a JoinService that could only refuse is better not running.
    """
    metrics = metrics or Metrics()
    keys = KeyServiceClient(keyservice)
    measurement_secret = keys.measurement_secret()
    watcher = JoinConfigWatcher(
        settings.join_config_dir,
        lambda config: build_expectations(config, measurement_secret, validator_factory),
        interval=settings.poll_interval,
    )
    ca = SigningCA.from_pem(
        _read_file(settings.ca_cert_file, "CA certificate"),
        _read_file(settings.ca_key_file, "CA key"),
    )
    tickets = TicketIssuer(
        expectations=lambda: watcher.current.built,
        keys=keys,
        bindings=DiskBindings(core, namespace=settings.namespace),
        tokens=token_issuer or BootstrapTokens(core),
        signer=KubeletCertSigner(ca),
        cluster=ClusterFiles(settings.ca_cert_file, settings.pki_dir, settings.components_file),
        api_server_endpoint=settings.api_server_endpoint,
        discovery=discovery_hash,
    )
    peer_validator = PeerValidator(
        lambda: watcher.current.built, observe=metrics.observe_attestation
    )
    server = JoinServer(
        issuer=issuer, tickets=tickets, peer_validator=peer_validator, metrics=metrics
    )
    return server, watcher


def _read_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
