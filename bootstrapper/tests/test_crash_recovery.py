"""A bootstrapper killed at every step of Init recovers without disk surgery.

The bootstrapper runs as a process (real swtpm, LUKS2 header via cryptsetup, aTLS init server),
with the control plane as a stand-in (``testing.StandInControlPlane``: the real start is tested
elsewhere and would dominate the time). ``CONSTELLATION_BOOTSTRAPPER_FAILPOINT`` makes it SIGKILL
itself at one step boundary of the journal (:mod:`constellation.bootstrapper.journal`). Then it
is started again, with the vTPM kept (the process died) or restarted (a reboot: PCR 15 reset),
and the admin's repeated Init (same master secret and salts, as ``constellation apply`` repeats
it) must complete. The journal and the logs never contain a key.
"""

from __future__ import annotations

import base64
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from constellation.attestation.errors import ValidationError
from constellation.attestation.kdf import derive_cluster_id, derive_measurement_secret
from constellation.attestation.measurements import Measurement, Measurements, pcr15_for_cluster_id
from constellation.attestation.swtpm import SwtpmManager
from constellation.attestation.testing.platform import (
    BOOT_CHAIN,
    measure_boot,
    node_validator,
)
from constellation.attestation.vtpm import open_tpm, read_pcrs
from constellation.bootstrapper.exitcodes import EXIT_REBOOT_REQUIRED
from constellation.bootstrapper.initserver import state_disk_key
from constellation.bootstrapper.journal import FAILPOINT_ENV
from constellation.bootstrapper.statedisk import FAST_PBKDF2, StateDisk
from constellation.bootstrapper.testing import (
    INIT_SECRET,
    STAND_IN_KUBECONFIG,
    call_init,
    component_for,
    free_port,
    init_request,
    require_cryptsetup,
    write_node_files,
)
from constellation.proto import init_pb2

pytestmark = pytest.mark.swtpm

START_TIMEOUT_S = 60
_RUNNER = (
    "import sys\n"
    "from constellation.bootstrapper.testing import main_with_stand_in_control_plane\n"
    "sys.exit(main_with_stand_in_control_plane())\n"
)
# What a dead peer looks like to a gRPC client; a refusal is a status the node chose.
_TRANSPORT_CODES = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.CANCELLED,
}


class CrashingNode:
    """One node's files and vTPM; starts, kills and reboots its bootstrapper process."""

    def __init__(self, directory: Path, tpms: SwtpmManager, tpm_dir: Path) -> None:
        require_cryptsetup()
        self.directory = directory
        self.tpms = tpms
        self.tpm_dir = tpm_dir
        (self.tpm,) = tpms.start(1, state_dirs=[tpm_dir])
        self.port = free_port()
        self.logs: list[Path] = []
        self.process: subprocess.Popen[bytes] | None = None
        config = write_node_files(
            directory,
            self.tpm.tcti,
            self.port,
            join_retry={"initial_delay_s": 0.1, "max_delay_s": 0.2, "max_attempts": 1},
            component_source_dirs=[str(directory)],
        )
        self._boot()
        self.config = directory / "config.json"
        self.config.write_text(json.dumps(config))

    def _boot(self) -> None:
        """The mini firmware: measure the boot chain, write the event log."""
        (self.directory / "eventlog.bin").write_bytes(measure_boot(self.tpm.tcti, BOOT_CHAIN))

    def reboot(self) -> None:
        """Stop the vTPM and start it on the same state: the AK stays, the PCRs reset."""
        self.tpm.stop()
        (self.tpm,) = self.tpms.start(1, state_dirs=[self.tpm_dir])
        self._boot()

    def start(self, failpoint: str | None = None) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in __import__("os").environ.items() if k != FAILPOINT_ENV}
        if failpoint is not None:
            env[FAILPOINT_ENV] = failpoint
        log = self.directory / f"bootstrapper-{len(self.logs)}.log"
        self.logs.append(log)
        with log.open("wb") as handle:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _RUNNER, "--config", str(self.config)],
                stdout=subprocess.DEVNULL,
                stderr=handle,
                env=env,
            )
        return self.process

    def wait_listening(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the bootstrapper exited ({self.process.returncode})")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise AssertionError("the bootstrapper did not start listening")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def pcr15(self) -> bytes:
        with open_tpm(self.tpm.tcti) as esapi:
            _, values = read_pcrs(esapi, (15,))
        return bytes(values[15])

    def log_text(self) -> bytes:
        return b"".join(path.read_bytes() for path in self.logs if path.exists())

    @property
    def journal(self) -> Path:
        return self.directory / "state" / "journal.json"

    @property
    def disk(self) -> StateDisk:
        return StateDisk(self.directory / "disk.img", pbkdf=FAST_PBKDF2)


@pytest.fixture
def crashing(tmp_path: Path) -> Iterator[CrashingNode]:
    if shutil.which("swtpm") is None:
        pytest.skip("swtpm is not installed (Debian package: swtpm)")
    # A short directory: the vTPM's socket path must fit sun_path.
    tpm_dir = Path(tempfile.mkdtemp(prefix="crash-tpm-"))
    node: CrashingNode | None = None
    try:
        with SwtpmManager() as tpms:
            node = CrashingNode(tmp_path, tpms, tpm_dir)
            try:
                yield node
            finally:
                node.stop()
    finally:
        shutil.rmtree(tpm_dir, ignore_errors=True)


def _request(tmp_path: Path) -> init_pb2.InitRequest:
    tool = tmp_path / "kubeadm"
    tool.write_bytes(b"#!/bin/sh\nexit 0\n")
    return init_request([component_for("kubeadm", tool, "/usr/local/bin/kubeadm")])


def _cluster_id(request: init_pb2.InitRequest) -> bytes:
    secret = derive_measurement_secret(request.master_secret, request.master_salt)
    return derive_cluster_id(secret, request.measurement_salt)


def _admin_validator(cluster_id: bytes) -> object:
    """What a repeating CLI accepts: PCR 15 zero, or the mark of the cluster it initializes."""
    return _EitherPcr15(cluster_id)


class _EitherPcr15:
    def __init__(self, cluster_id: bytes) -> None:
        self._fresh = node_validator(Measurements({15: Measurement(bytes(32))}))
        self._marked = node_validator(
            Measurements({15: Measurement(pcr15_for_cluster_id(cluster_id))})
        )

    @property
    def variant(self) -> str:
        return str(self._fresh.variant)

    def verify(self, document: bytes, nonce: bytes) -> object:
        try:
            return self._fresh.verify(document, nonce)
        except ValidationError:
            return self._marked.verify(document, nonce)

    def validate(self, document: bytes, nonce: bytes) -> bytes:
        return self.verify(document, nonce).user_data  # type: ignore[attr-defined, no-any-return]


def _secrets_of(request: init_pb2.InitRequest, disk_uuid: str) -> list[bytes]:
    key = state_disk_key(request.master_secret, request.master_salt, disk_uuid).reveal()
    found: list[bytes] = []
    for value in (request.master_secret, key, INIT_SECRET):
        found += [value, value.hex().encode(), base64.b64encode(value)]
    return found


def _crash_during_init(node: CrashingNode, request: init_pb2.InitRequest, point: str) -> None:
    process = node.start(point)
    if point in ("journal.format", "format"):
        assert process.wait(timeout=START_TIMEOUT_S) == -signal.SIGKILL
        return
    node.wait_listening()
    with pytest.raises(grpc.RpcError) as died:
        call_init(f"127.0.0.1:{node.port}", request)
    assert died.value.code() in _TRANSPORT_CODES, died.value
    assert process.wait(timeout=30) == -signal.SIGKILL


INIT_POINTS = [
    "journal.format",
    "format",
    "journal.lock",
    "lock",
    "journal.rekey",
    "rekey.add",
    "rekey.kill",
    "journal.control-plane",
    "control-plane",
    "journal.state",
    "state",
]


@pytest.mark.parametrize(
    ("point", "reboot"),
    [(point, False) for point in INIT_POINTS]
    + [(point, True) for point in ("lock", "rekey.add", "control-plane", "state")],
)
def test_init_completes_after_a_crash_at_every_step(
    crashing: CrashingNode, tmp_path: Path, point: str, reboot: bool
) -> None:
    request = _request(tmp_path)
    cluster_id = _cluster_id(request)
    _crash_during_init(crashing, request, point)

    record = json.loads(crashing.journal.read_bytes())
    assert set(record) == {"version", "step", "path", "diskUUID", "clusterID"}
    disk_uuid = record["diskUUID"]
    for secret in _secrets_of(request, disk_uuid):
        assert secret not in crashing.journal.read_bytes()

    if reboot:
        crashing.reboot()
        assert crashing.pcr15() == bytes(32)
    crashing.start()
    crashing.wait_listening()
    responses = call_init(
        f"127.0.0.1:{crashing.port}",
        request,
        validator=_admin_validator(cluster_id),  # type: ignore[arg-type]
    )
    last = responses[-1]
    assert last.WhichOneof("kind") == "init_success", last
    assert last.init_success.cluster_id == cluster_id
    assert last.init_success.kubeconfig == STAND_IN_KUBECONFIG

    assert crashing.pcr15() == pcr15_for_cluster_id(cluster_id)
    assert not crashing.journal.exists()
    state = json.loads((crashing.directory / "state" / "node-state.json").read_bytes())
    assert state["diskUUID"] == disk_uuid  # the same disk, never a new one
    disk = crashing.disk
    assert disk.uuid() == disk_uuid
    key = state_disk_key(request.master_secret, request.master_salt, disk_uuid)
    assert disk.keyslots() == [disk.slot_of(key)]  # one slot, and the cluster key opens it
    logs = crashing.log_text()
    assert b"Traceback" not in logs
    for secret in _secrets_of(request, disk_uuid):
        assert secret not in logs
    past_lock = point not in ("journal.format", "format", "journal.lock")
    resumed = past_lock and (not reboot or point == "state")
    assert (b"init.resumed" in logs) == resumed
    assert (b"node.disk_reinitialized" in logs) == (not resumed)


def test_a_locked_node_refuses_an_init_of_another_cluster_and_says_what_to_do(
    crashing: CrashingNode, tmp_path: Path
) -> None:
    request = _request(tmp_path)
    cluster_id = _cluster_id(request)
    _crash_during_init(crashing, request, "rekey.add")
    crashing.start()
    crashing.wait_listening()
    other = init_pb2.InitRequest()
    other.CopyFrom(request)
    other.master_secret = b"another admin's master secret!!!"
    with pytest.raises(grpc.RpcError) as refused:
        call_init(
            f"127.0.0.1:{crashing.port}",
            other,
            validator=_admin_validator(cluster_id),  # type: ignore[arg-type]
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = refused.value.details()
    assert cluster_id.hex() in details
    assert "constellation apply" in details
    assert "reboot the node" in details
    # The right admin still completes it afterwards.
    *_, last = call_init(
        f"127.0.0.1:{crashing.port}",
        request,
        validator=_admin_validator(cluster_id),  # type: ignore[arg-type]
    )
    assert last.WhichOneof("kind") == "init_success"


def test_a_lock_nobody_journaled_stops_the_node_with_what_to_do(crashing: CrashingNode) -> None:
    from constellation.attestation.nodelock import NodeLock

    assert NodeLock(crashing.tpm.tcti).try_lock(b"x" * 32)
    process = crashing.start()
    assert process.wait(timeout=START_TIMEOUT_S) == EXIT_REBOOT_REQUIRED
    logs = crashing.log_text()
    assert b"reboot the node" in logs
    assert b"Traceback" not in logs


def test_an_unknown_failpoint_is_refused_at_start(crashing: CrashingNode) -> None:
    process = crashing.start("nowhere")
    assert process.wait(timeout=START_TIMEOUT_S) == 1
    assert b"names no failpoint" in crashing.log_text()
    assert not crashing.journal.exists()
