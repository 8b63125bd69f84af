"""Plumbing every Constellation service shares, so each service's ``server.py`` stays short.

- ``logging``: structlog configured for one JSON object per line on stderr.
- ``health``: the standard gRPC health service, flipped to NOT_SERVING on shutdown.
- ``metrics``: Prometheus counters (requests by outcome) and an attestation latency histogram,
  with their own registry and HTTP endpoint.
- ``status``: the one place that maps exceptions to gRPC status codes; unexpected exceptions
  become INTERNAL without their text, so no traceback or secret reaches a caller, and request
  bytes that do not decode become INVALID_ARGUMENT (``errors.UndecodableRequestError``).
- ``lifecycle``: run until SIGTERM/SIGINT, then drain gracefully.
- ``handlers``: wrapping gRPC method handlers (what the interceptors above build on), and the
  one decoding path for request bytes (``decode_request``, also used by the fuzz targets).
- ``errors``: the typed errors of this plumbing.
"""

from constellation.attestation.service.health import Health, PlaintextHealthPorts
from constellation.attestation.service.lifecycle import Shutdown, run_until_shutdown
from constellation.attestation.service.logging import configure_logging
from constellation.attestation.service.metrics import MetricsServer, ServiceMetrics
from constellation.attestation.service.status import DEFAULT_STATUS_CODES, ErrorStatusInterceptor

__all__ = [
    "DEFAULT_STATUS_CODES",
    "ErrorStatusInterceptor",
    "Health",
    "MetricsServer",
    "PlaintextHealthPorts",
    "ServiceMetrics",
    "Shutdown",
    "configure_logging",
    "run_until_shutdown",
]
