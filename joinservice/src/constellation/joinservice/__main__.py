"""``constellation-joinservice``: parse flags, wire the collaborators, serve until SIGTERM.

No decisions are taken here; see ``server.build_join_server`` for what is assembled and
``tickets`` for what is decided.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import structlog
from cryptography import x509

from constellation.attestation.errors import ConstellationError
from constellation.attestation.evidence import Issuer, Validator
from constellation.attestation.measurements import Measurements
from constellation.attestation.ratelimit import Rate
from constellation.attestation.service import (
    MetricsServer,
    ServiceMetrics,
    Shutdown,
    configure_logging,
    run_until_shutdown,
)
from constellation.attestation.service.logging import LEVELS
from constellation.attestation.variants import get_variant
from constellation.joinservice.config import (
    DEFAULT_HEALTH_PORT,
    DEFAULT_METRICS_PORT,
    DEFAULT_NAMESPACE,
    DEFAULT_PORT,
    DEFAULT_TCTI,
    Settings,
)
from constellation.joinservice.errors import ConfigError
from constellation.joinservice.joinconfig import load_join_config
from constellation.joinservice.keys import DEFAULT_SERVER_NAME, KeyServiceTLS, keyservice_channel
from constellation.joinservice.kubernetes import core_api
from constellation.joinservice.ratelimit import DEFAULT_OVERALL, DEFAULT_PER_IDENTITY, RateLimiter
from constellation.joinservice.server import METRICS_SERVICE, build_join_server

EXAMPLES = """\
examples:
  # in a pod (in-cluster Kubernetes credentials, join-config mounted from the ConfigMap,
  # the KeyService client certificate from the constellation-keyservice-client Secret)
  constellation-joinservice --join-config-dir /var/config/join \\
      --keyservice-endpoint keyservice.kube-system:9000 \\
      --keyservice-ca-file /var/ks/ca.crt --keyservice-cert-file /var/ks/tls.crt \\
      --keyservice-key-file /var/ks/tls.key \\
      --ca-cert /etc/kubernetes/pki/ca.crt --ca-key /etc/kubernetes/pki/ca.key \\
      --api-server-endpoint 10.0.0.2:6443 --components-file /var/config/components.json

  # mini mode on loopback, with the first node's swtpm and an admin kubeconfig
  constellation-joinservice --listen 127.0.0.1 --port 30090 --metrics-port 0 \\
      --join-config-dir ./join-config --keyservice-endpoint 127.0.0.1:9000 \\
      --keyservice-ca-file ./ks/ca.crt --keyservice-cert-file ./ks/tls.crt \\
      --keyservice-key-file ./ks/tls.key \\
      --kubeconfig ./admin.conf --ca-cert ./pki/ca.crt --ca-key ./pki/ca.key \\
      --api-server-endpoint 127.0.0.1:6443 --components-file ./components.json \\
      --tpm-tcti swtpm:path=/abs/node-1/tpm/sock --ak-certificate-file ./ak-cert.der

  # a looser bound on one node's ticket requests (5 at once, then one per 10 s)
  constellation-joinservice ... --identity-ticket-rate 5/10
"""

log = structlog.get_logger("constellation.joinservice")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="constellation-joinservice",
        description=(
            "Attest joining nodes over mutual aTLS against the join-config, then issue their "
            "disk key, measurement secret, kubelet certificate and bootstrap token."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--listen", default="0.0.0.0", help="IP address to serve on")  # noqa: S104
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="aTLS gRPC port")
    parser.add_argument(
        "--health-port",
        type=int,
        default=DEFAULT_HEALTH_PORT,
        help="plaintext gRPC health port for kubelet probes (0 disables)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=DEFAULT_METRICS_PORT,
        help="Prometheus /metrics port (0 disables)",
    )
    parser.add_argument("--join-config-dir", type=Path, required=True)
    parser.add_argument(
        "--measurement-salt-file",
        type=Path,
        default=None,
        help="measurement salt (default: measurementSalt in the join-config dir)",
    )
    parser.add_argument(
        "--poll-interval", type=float, default=2.0, help="join-config check interval, seconds"
    )
    parser.add_argument("--keyservice-endpoint", required=True, help="host:port of the KeyService")
    parser.add_argument(
        "--keyservice-ca-file",
        type=Path,
        required=True,
        help="CA of the KeyService's mutual TLS (ca.crt of constellation-keyservice-client)",
    )
    parser.add_argument(
        "--keyservice-cert-file",
        type=Path,
        required=True,
        help="this service's client certificate for the KeyService (tls.crt)",
    )
    parser.add_argument(
        "--keyservice-key-file", type=Path, required=True, help="its private key (tls.key)"
    )
    parser.add_argument(
        "--keyservice-server-name",
        default=DEFAULT_SERVER_NAME,
        help="DNS name the KeyService's certificate must carry (default: %(default)s)",
    )
    parser.add_argument(
        "--kubeconfig", type=Path, default=None, help="kubeconfig (default: in-cluster account)"
    )
    parser.add_argument(
        "--ca-cert", "--ca-cert-file", type=Path, required=True, help="cluster CA certificate"
    )
    parser.add_argument(
        "--ca-key", "--ca-key-file", type=Path, required=True, help="cluster CA private key"
    )
    parser.add_argument(
        "--pki-dir", type=Path, default=None, help="control-plane PKI (default: the CA's dir)"
    )
    parser.add_argument("--api-server-endpoint", required=True, help="host:port nodes join")
    parser.add_argument("--components-file", type=Path, required=True)
    parser.add_argument("--namespace", default=DEFAULT_NAMESPACE, help="for disk bindings")
    parser.add_argument("--tpm-tcti", default=DEFAULT_TCTI, help="this node's (v)TPM")
    parser.add_argument(
        "--event-log",
        type=Path,
        default=None,
        help="this node's TCG event log, attached to its evidence "
        "(e.g. /sys/kernel/security/tpm0/binary_bios_measurements)",
    )
    parser.add_argument(
        "--ak-certificate-file",
        type=Path,
        default=None,
        help="the platform's DER certificate for this node's TPM attestation key, attached to "
        "the service's own evidence (joining qemu-vtpm nodes refuse a JoinService without one)",
    )
    parser.add_argument(
        "--identity-ticket-rate",
        type=_rate,
        default=DEFAULT_PER_IDENTITY,
        metavar="BURST/SECONDS",
        help="ticket requests one attested node identity may make: BURST at once, then one "
        "per SECONDS (default: %(default)s)",
    )
    parser.add_argument(
        "--ticket-rate",
        type=_rate,
        default=DEFAULT_OVERALL,
        metavar="BURST/SECONDS",
        help="ticket requests of all nodes together, same form (default: %(default)s)",
    )
    parser.add_argument("--log-level", default="info", choices=LEVELS)
    return parser.parse_args(argv)


def _rate(text: str) -> Rate:
    """``BURST/SECONDS`` (e.g. ``3/20``) as a ``Rate``; argparse reports a ValueError."""
    burst, sep, seconds = text.partition("/")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected BURST/SECONDS such as 3/20, got {text!r}")
    try:
        return Rate(int(burst), float(seconds))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def validator_for(
    variant: str, measurements: Measurements, platform_roots: Sequence[x509.Certificate]
) -> Validator:
    """The variant registry's validator: event log required (its default), nodes' attestation
    keys rooted by the join-config's platform roots."""
    return get_variant(variant).validator(
        measurements, platform_roots=tuple(platform_roots) or None
    )


def own_issuer(settings: Settings) -> Issuer:
    """The JoinService attests itself with the variant the cluster runs on.

    The event log is re-read for every quote: it grows while the node runs.
    """
    variant = load_join_config(settings.join_config_dir, settings.measurement_salt_file).variant
    ak_certificate = (
        None if settings.ak_certificate_file is None else settings.ak_certificate_file.read_bytes()
    )
    path = settings.event_log
    if path is None:
        return get_variant(variant).issuer(settings.tpm_tcti, ak_certificate=ak_certificate)

    def current_log() -> bytes | None:
        try:
            return path.read_bytes()
        except OSError:
            return None  # validators that require a log then say so in their report

    return get_variant(variant).issuer(
        settings.tpm_tcti, event_log=current_log, ak_certificate=ak_certificate
    )


def run(args: argparse.Namespace) -> int:
    settings = Settings.create(
        listen_host=args.listen,
        port=args.port,
        health_port=args.health_port or None,
        metrics_port=args.metrics_port or None,
        join_config_dir=args.join_config_dir,
        measurement_salt_file=args.measurement_salt_file,
        poll_interval=args.poll_interval,
        keyservice_endpoint=args.keyservice_endpoint,
        kubeconfig=args.kubeconfig,
        ca_cert_file=args.ca_cert,
        ca_key_file=args.ca_key,
        pki_dir=args.pki_dir,
        api_server_endpoint=args.api_server_endpoint,
        components_file=args.components_file,
        namespace=args.namespace,
        tpm_tcti=args.tpm_tcti,
        event_log=args.event_log,
        ak_certificate_file=args.ak_certificate_file,
        keyservice_ca_file=args.keyservice_ca_file,
        keyservice_cert_file=args.keyservice_cert_file,
        keyservice_key_file=args.keyservice_key_file,
        keyservice_server_name=args.keyservice_server_name,
    )
    tls_files = settings.keyservice_tls_files
    if tls_files is None:  # argparse requires all three; kept for the type checker
        raise ConfigError("the KeyService client certificate files are required")
    keyservice_tls = KeyServiceTLS.from_files(*tls_files, settings.keyservice_server_name)
    metrics = ServiceMetrics(METRICS_SERVICE)
    shutdown = Shutdown()
    shutdown.install_signal_handlers()
    keyservice = keyservice_channel(settings.keyservice_endpoint, keyservice_tls)
    closers = [keyservice.close]
    try:
        server, watcher = build_join_server(
            settings,
            issuer=own_issuer(settings),
            validator_factory=validator_for,
            core=core_api(settings.kubeconfig),
            keyservice=keyservice,
            metrics=metrics,
            rate_limiter=RateLimiter(
                per_identity=args.identity_ticket_rate, overall=args.ticket_rate
            ),
        )
        port = server.add_port(f"{settings.listen_host}:{settings.port}")
        if settings.health_port is not None:
            server.add_health_port(f"{settings.listen_host}:{settings.health_port}")
        closers.insert(0, watcher.stop)
        if settings.metrics_port is not None:
            endpoint = MetricsServer.start(metrics, settings.listen_host, settings.metrics_port)
            closers.insert(0, endpoint.close)
        watcher.start()
        server.start()
        log.info("joinservice.listening", address=settings.listen_host, port=port)
        return run_until_shutdown(
            shutdown, servers=server.grpc_servers, health=server.health, closers=closers
        )
    except BaseException:
        for close in closers:
            close()
        raise


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level)
    try:
        return run(args)
    except ConstellationError as err:
        log.error("joinservice.failed", error=str(err), kind=type(err).__name__)
        return 1


if __name__ == "__main__":
    sys.exit(main())
