"""aTLS connection setup with real vTPM evidence: server-only and mutual.

Usage: ``uv run python benchmarks/atls.py [--connections N]``

One aTLS server on loopback attests with a swtpm; a mutual client attests with a second swtpm.
Both are nodes as the test platform makes them (``attestation.testing.platform``): the image
measured with an event log, the AK certified by the test platform CA; every validation checks
the AK certificate and replays the log, as the product's validators do.
A "setup" is ``atls.connect`` (TLS fetch, pinned gRPC channel, Attest, validation, and for
mutual the client's own quote) plus the first call of a protected method (where the server
validates the client), then close. Sequential, so the rate is 1 / latency.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import grpc

from constellation.attestation import atls
from constellation.attestation.identity import Role
from constellation.attestation.measurements import Measurements
from constellation.attestation.service.logging import configure_logging
from constellation.attestation.swtpm import SwtpmManager
from constellation.attestation.testing.platform import measure_boot, node_issuer, node_validator
from constellation.attestation.vtpm import VtpmIssuer, VtpmValidator, open_tpm, read_pcrs

METHOD = "/bench.Echo/Echo"


def _node(tcti: str, name: str, role: Role) -> tuple[VtpmIssuer, VtpmValidator]:
    """A measured, certified node and a validator expecting exactly its PCRs."""
    issuer = node_issuer(tcti, name, role, event_log=measure_boot(tcti))
    with open_tpm(tcti) as esapi:
        _, pcrs = read_pcrs(esapi)
    expected = Measurements.from_dict({str(i): v.hex() for i, v in pcrs.items()})
    return issuer, node_validator(expected)


def _server(issuer: VtpmIssuer, client_validator: VtpmValidator | None) -> tuple[object, str]:
    validators = [client_validator] if client_validator else None
    server = atls.AttestedServer(issuer, client_validators=validators)
    echo = grpc.unary_unary_rpc_method_handler(lambda request, context: request)
    server.grpc_server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("bench.Echo", {"Echo": echo}),)
    )
    port = server.add_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


def _measure(target: str, validator: VtpmValidator, issuer: VtpmIssuer | None, n: int):
    latencies = []
    for _ in range(n):
        start = time.perf_counter()
        with atls.connect(target, [validator], issuer=issuer, timeout=30) as conn:
            conn.channel.unary_unary(METHOD)(b"x", timeout=30)
        latencies.append(time.perf_counter() - start)
    return latencies


def _report(name: str, latencies: list[float]) -> None:
    ordered = sorted(latencies)
    p90 = ordered[max(0, int(len(ordered) * 0.9) - 1)]
    print(
        f"{name}: {1 / statistics.mean(latencies):.1f} setups/s, median "
        f"{statistics.median(latencies) * 1000:.0f} ms, p90 {p90 * 1000:.0f} ms "
        f"({len(latencies)} setups)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args()
    configure_logging("warning")

    with SwtpmManager() as manager:
        server_tpm, client_tpm = manager.start(2)
        server_issuer, server_validator = _node(server_tpm.tcti, "server", Role.CONTROL_PLANE)
        client_issuer, client_validator = _node(client_tpm.tcti, "client", Role.WORKER)
        only, only_target = _server(server_issuer, None)
        mutual, mutual_target = _server(server_issuer, client_validator)
        try:
            _measure(only_target, server_validator, None, 2)  # warm-up
            server_only = _measure(only_target, server_validator, None, args.connections)
            both = _measure(mutual_target, server_validator, client_issuer, args.connections)
            with atls.connect(mutual_target, [server_validator], issuer=client_issuer) as conn:
                call = conn.channel.unary_unary(METHOD)
                call(b"x", timeout=30)
                start = time.perf_counter()
                for _ in range(200):
                    call(b"x", timeout=30)
                per_call = (time.perf_counter() - start) / 200
        finally:
            only.stop(None)  # type: ignore[attr-defined]
            mutual.stop(None)  # type: ignore[attr-defined]

    print(f"python {platform.python_version()}, grpcio {grpc.__version__}, {os.cpu_count()} CPUs")
    _report("server-only aTLS setup", server_only)
    _report("mutual aTLS setup", both)
    print(f"call on an established mutual channel: {per_call * 1e6:.0f} us")


if __name__ == "__main__":
    main()
