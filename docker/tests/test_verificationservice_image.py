"""The VerificationService image, run with podman against a real swtpm's Unix socket, serves
evidence that validates: proves the compiled tpm2-pytss, the tpm2-tss libraries and the swtpm
TCTI module in the runtime stage work together, as uid 65532 on a read-only root.

The swtpm is a node as the test platform makes one: its image measured with an event log and
its AK certified by the test platform CA; the service attaches both to its evidence, and the
validator roots the AK in that CA and replays the log, as ``constellation verify`` does."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from constellation.attestation.errors import ValidationError
from constellation.attestation.identity import Role
from constellation.attestation.measurements import Measurement, Measurements
from constellation.attestation.testing.platform import (
    cached_platform_ca,
    measure_boot,
    node_validator,
    provision_node,
)
from constellation.attestation.vtpm import VtpmValidator, open_tpm, read_pcrs
from constellation.proto import verify_pb2, verify_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
TAG = "localhost/constellation/verificationservice:0.1.0"
PODMAN = ["podman", "--storage-driver", "vfs", "--runtime", "runc"]
READY_TIMEOUT = 120.0
CONTAINER_UID = 65532  # the image's USER

pytestmark = [pytest.mark.slow, pytest.mark.swtpm, pytest.mark.timeout(3600)]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def validator_for(tcti: str) -> VtpmValidator:
    """A qemu-vtpm validator expecting exactly the swtpm's current PCRs, an AK certified by the
    test platform CA and a replaying event log."""
    with open_tpm(tcti) as esapi:
        _, pcrs = read_pcrs(esapi)
    return node_validator(Measurements({i: Measurement(v, False) for i, v in pcrs.items()}))


def platform_files(swtpm: Any) -> list[str]:
    """Boot the swtpm's node (event log) and certify its AK; the service's arguments naming the
    files, written beside the socket (the directory the container mounts), readable by it."""
    directory = swtpm.socket_path.parent
    files = {
        "--event-log": (directory / "eventlog.bin", measure_boot(swtpm.tcti)),
        "--ak-certificate-file": (
            directory / "ak-cert.der",
            provision_node(swtpm.tcti, cached_platform_ca(), "verify-node", Role.WORKER),
        ),
    }
    arguments = []
    for flag, (path, data) in files.items():
        path.write_bytes(data)
        path.chmod(0o644)
        arguments += [flag, str(path)]
    return arguments


@pytest.fixture(scope="module")
def image() -> str:
    for tool in ("buildah", "podman", "debootstrap"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (Debian packages buildah podman debootstrap)")
    if os.geteuid() != 0:
        pytest.skip("buildah/podman with the vfs driver and debootstrap need root here")
    build = subprocess.run(
        [str(REPO / "hack" / "build-images"), "verificationservice"],
        capture_output=True,
        text=True,
        timeout=3500,
        check=False,
    )
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    return TAG


@pytest.fixture
def container(image: str, swtpm: Any) -> Iterator[dict[str, int]]:
    """The service in a container on the host's loopback; always removed afterwards.

    The swtpm's private socket directory is mounted in and handed to the container's user, as
    a node hands its vTPM to its own service and to no one else.
    """
    name = f"constellation-test-{uuid.uuid4().hex[:12]}"
    platform = platform_files(swtpm)
    for path in (swtpm.socket_path.parent, swtpm.socket_path, swtpm.ctrl_path):
        os.chown(path, CONTAINER_UID, CONTAINER_UID)
    ports = {"grpc": free_port(), "http": free_port(), "metrics": free_port()}
    subprocess.run(
        [
            *PODMAN,
            "run",
            "--detach",
            "--name",
            name,
            "--network",
            "host",
            "--read-only",
            "--volume",
            f"{swtpm.socket_path.parent}:{swtpm.socket_path.parent}",
            "--ulimit",
            "nofile=1024:20000",
            "--ulimit",
            "nproc=1024:1024",
            image,
            *("--tpm", swtpm.tcti, "--listen", "127.0.0.1", *platform),
            *("--grpc-port", str(ports["grpc"]), "--http-port", str(ports["http"])),
            *("--metrics-port", str(ports["metrics"])),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    try:
        yield ports
    finally:
        logs = subprocess.run(
            [*PODMAN, "logs", name], capture_output=True, text=True, timeout=60, check=False
        )
        print(logs.stdout[-3000:], logs.stderr[-3000:])  # shown by pytest when a test fails
        subprocess.run(
            [*PODMAN, "rm", "--force", "--time", "5", name],
            capture_output=True,
            timeout=120,
            check=False,
        )


def wait_serving(port: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                status = (
                    health_pb2_grpc.HealthStub(channel)
                    .Check(health_pb2.HealthCheckRequest(), timeout=5)
                    .status
                )
            if status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError as exc:
            last = exc
        time.sleep(1)
    pytest.fail(f"the container did not report SERVING within {READY_TIMEOUT}s: {last}")


def test_image_serves_valid_evidence_from_a_swtpm(container: dict[str, int], swtpm: Any) -> None:
    validator = validator_for(swtpm.tcti)
    wait_serving(container["grpc"])

    nonce = os.urandom(32)
    with grpc.insecure_channel(f"127.0.0.1:{container['grpc']}") as channel:
        answer = verify_pb2_grpc.APIStub(channel).GetAttestation(
            verify_pb2.GetAttestationRequest(nonce=nonce), timeout=60
        )
    assert validator.validate(answer.attestation, nonce) == b"constellation/verify/v1\x00"

    query = base64.urlsafe_b64encode(nonce).decode()
    url = f"http://127.0.0.1:{container['http']}/?nonce={query}"
    with urllib.request.urlopen(url, timeout=60) as response:
        document = base64.b64decode(json.loads(response.read())["data"])
    assert validator.validate(document, nonce) == b"constellation/verify/v1\x00"

    # Negative: evidence bound to one nonce is refused for another, and a bad nonce is a 400.
    with pytest.raises(ValidationError) as rejected:
        validator.validate(document, os.urandom(32))
    assert [f.check for f in rejected.value.failures] == ["quote.qualifying_data"]
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://127.0.0.1:{container['http']}/?nonce=", timeout=30)
    assert refused.value.code == 400

    with urllib.request.urlopen(
        f"http://127.0.0.1:{container['metrics']}/metrics", timeout=30
    ) as r:
        assert b"constellation_attestation_seconds_count" in r.read()
