"""The command lines the charts render are accepted by the services' own argument parsers, so a
flag renamed on either side fails here instead of in a crash-looping pod."""

from __future__ import annotations

import argparse
import contextlib
import io
from collections.abc import Callable
from typing import Any

import pytest

from constellation.joinservice.__main__ import parse_args as joinservice_parse_args
from constellation.keyservice.config import build_parser as keyservice_parser
from constellation.verificationservice.config import build_parser as verificationservice_parser

PARSERS: dict[str, Callable[[list[str]], argparse.Namespace]] = {
    "keyservice": lambda argv: keyservice_parser().parse_args(argv),
    "joinservice": joinservice_parse_args,
    "verificationservice": lambda argv: verificationservice_parser().parse_args(argv),
}

# Values that change what is rendered into the command line (no extraArgs: those are free-form).
VARIANTS: dict[str, list[dict[str, Any] | None]] = {
    "keyservice": [None, {"port": 9500, "metrics": {"enabled": False}, "logLevel": "debug"}],
    "joinservice": [
        None,
        {"healthPort": 9191, "apiServerEndpoint": "10.0.0.1:6443", "metrics": {"enabled": False}},
    ],
    "verificationservice": [
        None,
        {"attestationVariant": "azure-sev-snp", "eventLog": {"enabled": False}, "grpcPort": 9999},
    ],
}


def container_args(render: Any, chart: str, values: dict[str, Any] | None) -> list[str]:
    (workload,) = (
        m for m in render(chart, values=values) if m["kind"] in ("Deployment", "DaemonSet")
    )
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    # The kubelet expands $(VAR) from the container's env before the process starts.
    return [a.replace("$(HOST_IP)", "10.0.0.7") for a in container["args"]]


def parse(chart: str, argv: list[str]) -> argparse.Namespace:
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return PARSERS[chart](argv)
    except SystemExit as exc:
        pytest.fail(
            f"constellation-{chart} rejects the chart's arguments {argv}: {stderr.getvalue()}"
        )
        raise AssertionError from exc  # unreachable; pytest.fail raises


@pytest.mark.parametrize(
    ("chart", "index"), [(c, i) for c, variants in VARIANTS.items() for i in range(len(variants))]
)
def test_rendered_arguments_parse(render: Any, chart: str, index: int) -> None:
    values = VARIANTS[chart][index]
    args = parse(chart, container_args(render, chart, values))
    merged = values or {}
    if chart == "keyservice":
        assert args.port == merged.get("port", 9000)
        assert str(args.master_secret_file).endswith("/mastersecret")
        assert str(args.salt_file).endswith("/salt")
        assert args.log_level == merged.get("logLevel", "info")
    elif chart == "joinservice":
        assert args.port == 9090
        assert args.health_port == merged.get("healthPort", 9091)
        assert args.api_server_endpoint == merged.get("apiServerEndpoint", "10.0.0.7:6443")
        assert args.tpm_tcti == "device:/dev/tpmrm0"
        assert args.namespace == "kube-system"
    else:
        assert args.grpc_port == merged.get("grpcPort", 9090)
        assert args.http_port == 8080
        assert args.tpm == "device:/dev/tpmrm0"
        assert args.variant == merged.get("attestationVariant", "qemu-vtpm")
        assert (args.event_log is None) == (values is not None)


def test_a_flag_the_service_does_not_know_is_caught(render: Any) -> None:
    """This check can fail: an argument the service does not define is reported."""
    argv = [*container_args(render, "keyservice", None), "--no-such-flag"]
    with pytest.raises(pytest.fail.Exception, match="rejects the chart's arguments"):
        parse("keyservice", argv)
