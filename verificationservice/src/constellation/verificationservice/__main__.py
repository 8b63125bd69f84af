"""``constellation-verificationservice``: wiring only (flags -> issuer -> servers -> run)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import structlog

from constellation.attestation.service.lifecycle import Shutdown, run_until_shutdown
from constellation.attestation.service.logging import configure_logging
from constellation.attestation.service.metrics import MetricsServer, ServiceMetrics
from constellation.attestation.vtpm import VtpmIssuer
from constellation.verificationservice.config import VerificationServiceConfig, load_config
from constellation.verificationservice.errors import VerificationServiceError
from constellation.verificationservice.evidence import EvidenceSource, event_log_reader
from constellation.verificationservice.server import (
    VerificationGrpcServer,
    VerificationHttpServer,
)

EXIT_CONFIG = 2


def _issuer(config: VerificationServiceConfig) -> VtpmIssuer:
    log = event_log_reader(config.event_log) if config.event_log is not None else None
    return VtpmIssuer(
        config.tcti, variant=config.variant, event_log=log, ak_certificate=config.ak_certificate
    )


def main(argv: Sequence[str] | None = None) -> int:
    shutdown = Shutdown()
    shutdown.install_signal_handlers()
    try:
        config = load_config(argv)
    except VerificationServiceError as exc:
        print(f"constellation-verificationservice: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(config.log_level)
    log = structlog.get_logger("constellation.verificationservice")
    metrics = ServiceMetrics("verificationservice")
    source = EvidenceSource(_issuer(config), metrics)
    grpc_server = VerificationGrpcServer(source, metrics)
    try:
        grpc_port = grpc_server.add_port(config.address(config.grpc_port))
        http_server = VerificationHttpServer(source, metrics, config.listen, config.http_port)
        metrics_server = MetricsServer.start(metrics, config.listen, config.metrics_port)
    except (RuntimeError, OSError) as exc:
        log.error("service.listen_failed", error=str(exc))
        return EXIT_CONFIG
    grpc_server.start()
    http_server.start()
    log.info(
        "service.started",
        service="verificationservice",
        variant=config.variant,
        grpc_port=grpc_port,
        http_port=http_server.port,
        metrics_port=metrics_server.port,
    )
    return run_until_shutdown(
        shutdown,
        servers=[grpc_server.grpc_server],
        health=grpc_server.health,
        closers=[http_server.close, metrics_server.close],
        grace=config.grace,
    )


if __name__ == "__main__":
    sys.exit(main())
