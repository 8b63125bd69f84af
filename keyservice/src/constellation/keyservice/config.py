"""Settings of the KeyService: flags parsed and secret files read once, at start-up.

Everything the service needs is read and checked here, before any port opens: the master
secret (``keys.MasterSecret``) and the TLS material that lets only the JoinService call it
(``tls.load_server_tls``). A missing or unusable file ends the process with a ``ConfigError``
that names the file and exit code 2.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from constellation.attestation.service.flags import listen_address, tcp_port
from constellation.attestation.service.logging import LEVELS
from constellation.keyservice.errors import ConfigError
from constellation.keyservice.keys import MasterSecret
from constellation.keyservice.tls import ServerTLS, load_server_tls

DEFAULT_PORT = 9000
DEFAULT_METRICS_PORT = 9001
#: Plaintext ``grpc.health.v1`` only: kubelet gRPC probes cannot present a client certificate.
DEFAULT_HEALTH_PORT = 9091
#: A mounted Secret file is tiny; refuse to read something that is clearly not one.
MAX_SECRET_FILE_SIZE = 4096
#: PEM certificates and keys are larger than raw secrets, but never this large.
MAX_PEM_FILE_SIZE = 65536

EPILOG = """\
examples:
  # in the cluster (files mounted from the constellation-mastersecret and
  # constellation-keyservice-tls Secrets)
  constellation-keyservice --master-secret-file /var/secrets/mastersecret \\
      --salt-file /var/secrets/salt --tls-cert-file /var/tls/tls.crt \\
      --tls-key-file /var/tls/tls.key --client-ca-file /var/tls/ca.crt

  # locally, on loopback, with ephemeral ports (the bound ports are logged at start-up)
  constellation-keyservice --master-secret-file key.bin --salt-file salt.bin \\
      --tls-cert-file tls.crt --tls-key-file tls.key --client-ca-file ca.crt \\
      --listen 127.0.0.1 --port 0 --health-port 0 --metrics-port 0

The secret files hold raw bytes: the master key (at least 16 bytes) and the salt (at least 32).
GetDataKey is served over mutual TLS only: the caller must present a certificate from
--client-ca-file naming the JoinService (CN constellation-joinservice). `constellation apply`
creates that CA, the KeyService's and the JoinService's certificates, and discards the CA key.
Health: grpc.health.v1 in plaintext on --health-port (and over TLS on the gRPC port).
Metrics: http://<listen>:<metrics-port>/metrics.
SIGTERM drains in-flight calls and exits 0; invalid configuration exits 2.
"""


@dataclass(frozen=True)
class KeyServiceConfig:
    secret: MasterSecret
    tls: ServerTLS
    listen: str
    port: int
    health_port: int
    metrics_port: int
    log_level: str
    grace: float

    def address(self, port: int) -> str:
        """``host:port`` for gRPC, with IPv6 literals bracketed."""
        return listen_address(self.listen, port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="constellation-keyservice",
        description="Serve kms.API/GetDataKey: HKDF-SHA256 data keys from the master secret.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--master-secret-file", type=Path, required=True, metavar="PATH")
    parser.add_argument("--salt-file", type=Path, required=True, metavar="PATH")
    parser.add_argument(
        "--tls-cert-file",
        type=Path,
        required=True,
        metavar="PATH",
        help="the KeyService's server certificate (PEM; tls.crt of its TLS Secret)",
    )
    parser.add_argument(
        "--tls-key-file",
        type=Path,
        required=True,
        metavar="PATH",
        help="its private key (PEM; tls.key)",
    )
    parser.add_argument(
        "--client-ca-file",
        type=Path,
        required=True,
        metavar="PATH",
        help="the only CA whose client certificates may connect (PEM; ca.crt)",
    )
    parser.add_argument(
        "--listen",
        default="0.0.0.0",  # noqa: S104 - in-cluster pods listen on their pod IP
        help="address to bind (default: %(default)s)",
    )
    parser.add_argument(
        "--port", type=tcp_port, default=DEFAULT_PORT, help="mutual-TLS gRPC port (0: any)"
    )
    parser.add_argument(
        "--health-port",
        type=tcp_port,
        default=DEFAULT_HEALTH_PORT,
        help="plaintext gRPC port serving grpc.health.v1 only, for kubelet probes (0: any)",
    )
    parser.add_argument(
        "--metrics-port",
        type=tcp_port,
        default=DEFAULT_METRICS_PORT,
        help="Prometheus port (0: any)",
    )
    parser.add_argument("--log-level", choices=LEVELS, default="info")
    parser.add_argument(
        "--grace", type=float, default=10.0, help="seconds to drain calls on SIGTERM"
    )
    return parser


def read_secret_file(
    path: Path, what: str, *, limit: int = MAX_SECRET_FILE_SIZE, kind: str = "a small raw secret"
) -> bytes:
    try:
        size = path.stat().st_size
        if size > limit:
            raise ConfigError(f"{what} file {path} has {size} bytes; expected {kind}")
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file {path}: {exc.strerror}") from exc


def read_pem_file(path: Path, what: str) -> bytes:
    return read_secret_file(path, what, limit=MAX_PEM_FILE_SIZE, kind="a PEM file")


def load_config(argv: Sequence[str] | None = None) -> KeyServiceConfig:
    """Parse flags, read the secret files; raises ``ConfigError`` (argparse exits on bad flags)."""
    args = build_parser().parse_args(argv)
    secret = MasterSecret(
        key=read_secret_file(args.master_secret_file, "master secret"),
        salt=read_secret_file(args.salt_file, "salt"),
    )
    tls = load_server_tls(
        cert_pem=read_pem_file(args.tls_cert_file, "TLS certificate"),
        key_pem=read_pem_file(args.tls_key_file, "TLS key"),
        client_ca_pem=read_pem_file(args.client_ca_file, "client CA"),
    )
    if args.grace < 0:
        raise ConfigError("--grace must not be negative")
    return KeyServiceConfig(
        secret=secret,
        tls=tls,
        listen=args.listen,
        port=args.port,
        health_port=args.health_port,
        metrics_port=args.metrics_port,
        log_level=args.log_level,
        grace=args.grace,
    )
