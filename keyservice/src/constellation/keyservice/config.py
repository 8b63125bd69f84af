"""Settings of the KeyService: flags parsed and secret files read once, at start-up."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from constellation.attestation.service.flags import listen_address, tcp_port
from constellation.attestation.service.logging import LEVELS
from constellation.keyservice.errors import ConfigError
from constellation.keyservice.keys import MasterSecret

DEFAULT_PORT = 9000
DEFAULT_METRICS_PORT = 9001
#: A mounted Secret file is tiny; refuse to read something that is clearly not one.
MAX_SECRET_FILE_SIZE = 4096

EPILOG = """\
examples:
  # in the cluster (files mounted from the constellation-mastersecret Secret)
  constellation-keyservice --master-secret-file /var/secrets/mastersecret \\
      --salt-file /var/secrets/salt

  # locally, on loopback, with ephemeral ports (the bound ports are logged at start-up)
  constellation-keyservice --master-secret-file key.bin --salt-file salt.bin \\
      --listen 127.0.0.1 --port 0 --metrics-port 0

The files hold raw bytes: the master key (at least 16 bytes) and the salt (at least 32).
Health: grpc.health.v1 on the gRPC port. Metrics: http://<listen>:<metrics-port>/metrics.
SIGTERM drains in-flight calls and exits 0; invalid configuration exits 2.
"""


@dataclass(frozen=True)
class KeyServiceConfig:
    secret: MasterSecret
    listen: str
    port: int
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
        "--listen",
        default="0.0.0.0",  # noqa: S104 - in-cluster pods listen on their pod IP
        help="address to bind (default: %(default)s)",
    )
    parser.add_argument("--port", type=tcp_port, default=DEFAULT_PORT, help="gRPC port (0: any)")
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


def read_secret_file(path: Path, what: str) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_SECRET_FILE_SIZE:
            raise ConfigError(f"{what} file {path} has {size} bytes; expected a small raw secret")
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file {path}: {exc.strerror}") from exc


def load_config(argv: Sequence[str] | None = None) -> KeyServiceConfig:
    """Parse flags, read the secret files; raises ``ConfigError`` (argparse exits on bad flags)."""
    args = build_parser().parse_args(argv)
    secret = MasterSecret(
        key=read_secret_file(args.master_secret_file, "master secret"),
        salt=read_secret_file(args.salt_file, "salt"),
    )
    if args.grace < 0:
        raise ConfigError("--grace must not be negative")
    return KeyServiceConfig(
        secret=secret,
        listen=args.listen,
        port=args.port,
        metrics_port=args.metrics_port,
        log_level=args.log_level,
        grace=args.grace,
    )
