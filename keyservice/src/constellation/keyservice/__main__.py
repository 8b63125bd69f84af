"""``constellation-keyservice``: wiring only (flags -> config -> server -> run until SIGTERM).

The configuration (master secret and TLS files) is checked before any port opens; the gRPC
port is mutual TLS only, the health port plaintext health only (see ``server``).
"""

from __future__ import annotations

import os

# Every refused caller is a failed TLS handshake, which gRPC's C core reports as a plain-text
# INFO line on stderr; the service's log is one JSON object per line, so the core is kept to
# errors unless the operator sets GRPC_VERBOSITY. The core reads it once, when grpc is imported.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import sys
from collections.abc import Sequence

import structlog

from constellation.attestation.service.lifecycle import Shutdown, run_until_shutdown
from constellation.attestation.service.logging import configure_logging
from constellation.attestation.service.metrics import MetricsServer, ServiceMetrics
from constellation.keyservice.config import load_config
from constellation.keyservice.errors import KeyServiceError
from constellation.keyservice.keys import DataKeys
from constellation.keyservice.server import KeyServiceServer

EXIT_CONFIG = 2


def main(argv: Sequence[str] | None = None) -> int:
    shutdown = Shutdown()
    shutdown.install_signal_handlers()
    try:
        config = load_config(argv)
    except KeyServiceError as exc:
        print(f"constellation-keyservice: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(config.log_level)
    log = structlog.get_logger("constellation.keyservice")
    metrics = ServiceMetrics("keyservice")
    server = KeyServiceServer(DataKeys(config.secret), metrics, config.tls)
    try:
        port = server.add_port(config.address(config.port))
        health_port = server.add_health_port(config.address(config.health_port))
        metrics_server = MetricsServer.start(metrics, config.listen, config.metrics_port)
    except (KeyServiceError, RuntimeError, OSError) as exc:
        log.error("service.listen_failed", error=str(exc))
        return EXIT_CONFIG
    server.start()
    log.info(
        "service.started",
        service="keyservice",
        grpc_port=port,
        transport="mutual-tls",
        health_port=health_port,
        metrics_port=metrics_server.port,
    )
    return run_until_shutdown(
        shutdown,
        servers=server.grpc_servers,
        health=server.health,
        closers=[metrics_server.close],
        grace=config.grace,
    )


if __name__ == "__main__":
    sys.exit(main())
