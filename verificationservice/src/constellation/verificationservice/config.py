"""Settings of the VerificationService, parsed and validated once at start-up."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from constellation.attestation.service.flags import listen_address, tcp_port
from constellation.attestation.service.logging import LEVELS
from constellation.verificationservice.errors import ConfigError

DEFAULT_GRPC_PORT = 9090
DEFAULT_HTTP_PORT = 8080
DEFAULT_METRICS_PORT = 9091
#: TCTI names tpm2-tss can load here (``name:config``).
TCTI_NAMES = ("swtpm", "mssim", "device", "tabrmd")

EPILOG = """\
examples:
  # on a node, with the node's TPM through the kernel resource manager
  constellation-verificationservice --tpm device:/dev/tpmrm0 --variant qemu-vtpm

  # mini mode / tests: a swtpm on its private Unix socket, ephemeral ports (logged at start-up)
  constellation-verificationservice --tpm swtpm:path=/abs/node-1/tpm/sock \\
      --listen 127.0.0.1 --grpc-port 0 --http-port 0 --metrics-port 0

  # ask it for evidence over HTTP (nonce: base64url)
  curl 'http://127.0.0.1:8080/?nonce=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8'

gRPC: verify.API/GetAttestation and grpc.health.v1. Metrics: http://<listen>:<metrics-port>/metrics.
SIGTERM drains in-flight requests and exits 0; invalid configuration exits 2.
"""


#: An AK certificate is about a kilobyte; a larger file is not one.
MAX_AK_CERTIFICATE = 16 << 10


@dataclass(frozen=True)
class VerificationServiceConfig:
    tcti: str
    variant: str
    event_log: Path | None
    ak_certificate: bytes | None
    listen: str
    grpc_port: int
    http_port: int
    metrics_port: int
    log_level: str
    grace: float

    def address(self, port: int) -> str:
        """``host:port`` for gRPC, with IPv6 literals bracketed."""
        return listen_address(self.listen, port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="constellation-verificationservice",
        description="Hand out fresh attestation evidence of this node for `constellation verify`.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--tpm", required=True, metavar="TCTI", help="TPM to quote with, as a tpm2-tss TCTI"
    )
    parser.add_argument("--variant", default="qemu-vtpm", help="attestation variant")
    parser.add_argument(
        "--event-log",
        type=Path,
        metavar="PATH",
        help="TCG event log to attach (re-read per request)",
    )
    parser.add_argument(
        "--ak-certificate-file",
        type=Path,
        metavar="PATH",
        help="the platform's DER certificate for the TPM's attestation key (names the node "
        "and its role); attached to every attestation. qemu-vtpm verifiers refuse evidence "
        "without one",
    )
    parser.add_argument(
        "--listen",
        default="0.0.0.0",  # noqa: S104 - in-cluster pods listen on their pod IP
        help="address to bind (default: %(default)s)",
    )
    parser.add_argument("--grpc-port", type=tcp_port, default=DEFAULT_GRPC_PORT)
    parser.add_argument("--http-port", type=tcp_port, default=DEFAULT_HTTP_PORT)
    parser.add_argument("--metrics-port", type=tcp_port, default=DEFAULT_METRICS_PORT)
    parser.add_argument("--log-level", choices=LEVELS, default="info")
    parser.add_argument(
        "--grace", type=float, default=10.0, help="seconds to drain requests on SIGTERM"
    )
    return parser


def load_config(argv: Sequence[str] | None = None) -> VerificationServiceConfig:
    args = build_parser().parse_args(argv)
    name, sep, _ = args.tpm.partition(":")
    if not sep or name not in TCTI_NAMES:
        raise ConfigError(
            f"--tpm must be a TCTI such as swtpm:path=/abs/node-1/tpm/sock "
            f"({', '.join(TCTI_NAMES)}), got {args.tpm!r}"
        )
    if args.variant != "qemu-vtpm":
        raise ConfigError(
            f"--variant {args.variant!r} is not supported by this build; supported: qemu-vtpm"
        )
    if args.event_log is not None and not args.event_log.is_file():
        raise ConfigError(f"--event-log {args.event_log} is not a readable file")
    if args.grace < 0:
        raise ConfigError("--grace must not be negative")
    ak_certificate = None
    if args.ak_certificate_file is not None:
        try:
            ak_certificate = args.ak_certificate_file.read_bytes()[: MAX_AK_CERTIFICATE + 1]
        except OSError as exc:
            raise ConfigError(
                f"--ak-certificate-file {args.ak_certificate_file}: {exc.strerror}"
            ) from None
        if len(ak_certificate) > MAX_AK_CERTIFICATE:
            raise ConfigError(f"--ak-certificate-file is larger than {MAX_AK_CERTIFICATE} bytes")
    return VerificationServiceConfig(
        tcti=args.tpm,
        variant=args.variant,
        event_log=args.event_log,
        ak_certificate=ak_certificate,
        listen=args.listen,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        log_level=args.log_level,
        grace=args.grace,
    )
