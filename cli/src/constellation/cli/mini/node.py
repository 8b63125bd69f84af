"""One mini-mode node: its files, its vTPM, its measured boot and its bootstrapper process.

Layout of a node (``<workspace>/mini/nodes/<name>/``)::

    image/               the node's own copy of the node image (measured, then imported)
    tpm/                 the node's vTPM state (0700)
    ak-cert.der          the platform's certificate for the vTPM's attestation key (name, role)
    platform-roots.pem   the platform CA the JoinService's attestation key must chain to
    eventlog.bin         the TCG event log the firmware step wrote
    disk.img             the state disk: a blank file the bootstrapper formats as LUKS2
    metadata.json        instance metadata (name, role, 127.0.0.1, init-secret bcrypt hash for
                         control planes, JoinService endpoint)
    join-measurements.json  what the node expects of the JoinService's node
    bootstrapper.json    the bootstrapper configuration
    boot_id              this boot's random ID, drawn by the firmware step at every boot (the
                         kernel's /proc/sys/kernel/random/boot_id on a real node): tells the
                         bootstrapper a restart on the same boot from a reboot
    state/, root/        the bootstrapper's state directory and install root

The vTPM's Unix sockets ``sock`` and ``sock.ctrl`` (0600; no TCP port, so only root and the
node's own user can reach them) live in a short private directory of the node,
``<runtime>/constellation-vtpm-<uid>/<16 hex digits of the tpm/ path's SHA-256>/`` (0700 both;
``<runtime>`` is ``$XDG_RUNTIME_DIR`` or the temporary directory): a Unix socket path has at
most 107 bytes, and a workspace may be deeper than that allows. ``mini down`` removes it.

Creation (:func:`launch_node`): the CLI starts the node's swtpm once to have the platform
certify its AK (the platform CA never leaves the CLI), stops it, writes the node's files and
hands the machine to its **node supervisor** (:mod:`.supervision.node`), which powers it on: swtpm
on the same TPM state, the firmware step on ``image/``, then
``python -m constellation.bootstrapper`` with ``PYTHONPATH=image/`` first and bytecode writing
off, so the modules that run are the measured files and the image directory stays unchanged.
The supervisor keeps the node alive afterwards (a dead bootstrapper is restarted on the same
boot, a dead swtpm reboots the node) and is what the cluster record keeps.
The state disk uses pbkdf2 key slots (argon2id would need seconds and a GiB of memory per node
here); mini mode's data path is not encrypted anyway (no device-mapper), only the LUKS2 header
and its key management are real.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from constellation.attestation.identity import Role
from constellation.attestation.identity.ca import PlatformCA
from constellation.attestation.measurements import Measurements
from constellation.attestation.swtpm import (
    SwtpmError,
    answers_tpm_command,
    prepare_socket_dir,
    refuse_if_served,
    socket_path,
    swtpm_binary,
    swtpm_command,
    tcti_for,
)
from constellation.bootstrapper.atomicfile import PUBLIC_MODE, write_atomic
from constellation.bootstrapper.metadata import (
    Endpoint,
    InstanceMetadata,
    write_metadata_file,
)
from constellation.cli.mini.errors import ProcessStartError
from constellation.cli.mini.image import copy_image
from constellation.cli.mini.platform import AK_CERT_FILE, PLATFORM_ROOTS_FILE, certify_node
from constellation.cli.mini.processes import ProcessRecord, is_running, spawn, stop
from constellation.cli.mini.supervision import read_status, spawn_node

LOOPBACK = "127.0.0.1"
BOOT_ID_FILE = "boot_id"
DISK_SIZE = 32 * 1024 * 1024
SOCKET_ROOT_PREFIX = "constellation-vtpm-"
SWTPM_READY_TIMEOUT_S = 15.0
BOOT_TIMEOUT_S = 90.0
POLL_S = 0.05
# The join client keeps trying while `apply` brings up the control plane and the JoinService.
JOIN_RETRY = {
    "initial_delay_s": 0.5,
    "max_delay_s": 2.0,
    "max_attempts": 600,
    "total_timeout_s": 1200.0,
    "rpc_timeout_s": 60.0,
}
# An initialized control-plane node tries a rejoin this briefly after a reboot, then waits for
# `constellation recover` (after `mini stop` no JoinService runs that could answer).
REJOIN_RETRY = {
    "initial_delay_s": 0.2,
    "max_delay_s": 1.0,
    "max_attempts": 3,
    "total_timeout_s": 5.0,
    "rpc_timeout_s": 5.0,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((LOOPBACK, port)) == 0


def wait_until(
    record: ProcessRecord, ready: Callable[[], bool], timeout: float, *, waiting_for: str
) -> None:
    """Wait (bounded) until ``ready()``; fail at once if ``record``'s process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_running(record):
            raise ProcessStartError(
                f"{record.name} exited during start-up", hint=f"see its log {record.log}"
            )
        if ready():
            return
        time.sleep(POLL_S)
    raise ProcessStartError(
        f"{record.name} did not {waiting_for} within {timeout:.0f}s",
        hint=f"see its log {record.log}",
    )


def wait_listening(record: ProcessRecord, port: int, timeout: float) -> None:
    """Wait (bounded) until ``record`` serves on ``port``; fail at once if it exits."""
    wait_until(record, lambda: listening(port), timeout, waiting_for=f"listen on {LOOPBACK}:{port}")


@dataclass(frozen=True)
class MiniNode:
    """A launched node as the cluster record keeps it.

    ``supervisor`` is the node's supervisor process, the machine: it runs the node's swtpm and
    bootstrapper (their current PIDs are in its status file, :func:`.supervision.read_status`)
    and is running as long as the node is powered on.
    """

    name: str
    role: Role
    directory: Path
    swtpm_socket: Path
    init_port: int
    image_version: str
    supervisor: ProcessRecord

    @property
    def tcti(self) -> str:
        return tcti_for(self.swtpm_socket)

    @property
    def swtpm(self) -> ProcessRecord:
        """The node's swtpm as its supervisor last started it (not running if none runs)."""
        return self._child("swtpm")

    @property
    def bootstrapper(self) -> ProcessRecord:
        """The node's bootstrapper as its supervisor last started it."""
        return self._child("bootstrapper")

    def _child(self, process: str) -> ProcessRecord:
        status = read_status(_mini_dir_of(self.directory / "tpm"), f"{self.name}/node") or {}
        child = (status.get("children") or {}).get(process) or {}
        log = str(Path(self.supervisor.log).parent / f"{self.name}-{process}.log")
        try:
            return ProcessRecord(
                f"{self.name}/{process}", int(child["pid"]), int(child["startTime"]), log
            )
        except (KeyError, TypeError, ValueError):
            return ProcessRecord(f"{self.name}/{process}", 0, 0, log)

    @property
    def init_endpoint(self) -> Endpoint:
        return Endpoint(LOOPBACK, self.init_port)

    @property
    def image_dir(self) -> Path:
        return self.directory / "image"

    @property
    def event_log(self) -> Path:
        return self.directory / "eventlog.bin"

    @property
    def ak_certificate(self) -> Path:
        """The platform's certificate for this node's vTPM attestation key (DER)."""
        return self.directory / AK_CERT_FILE

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role.value,
            "directory": str(self.directory),
            "swtpmSocket": str(self.swtpm_socket),
            "initPort": self.init_port,
            "imageVersion": self.image_version,
            "supervisor": self.supervisor.to_dict(),
            # For people and scripts reading the record: the children as of this save (the
            # log paths stay; the live PIDs are in the supervisor's status file).
            "swtpm": self.swtpm.to_dict(),
            "bootstrapper": self.bootstrapper.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MiniNode:
        return cls(
            name=str(data["name"]),
            role=Role(data["role"]),
            directory=Path(data["directory"]),
            swtpm_socket=Path(data["swtpmSocket"]),
            init_port=int(data["initPort"]),
            image_version=str(data["imageVersion"]),
            supervisor=ProcessRecord.from_dict(data["supervisor"]),
        )


def vtpm_socket_dir(tpm_dir: Path) -> Path:
    """The short private directory of the vTPM whose state is ``tpm_dir`` (module docstring).

    Derived from the state directory's absolute path, so a reboot finds the same sockets and
    two workspaces never share one.
    """
    runtime = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())
    key = hashlib.sha256(os.fsencode(tpm_dir.absolute())).hexdigest()[:16]
    return runtime / f"{SOCKET_ROOT_PREFIX}{os.geteuid()}" / key


def swtpm_socket(tpm_dir: Path) -> Path:
    """The data socket of the vTPM whose state is ``tpm_dir``; a typed error if unusable.

    Called before anything of the node is created, so an unusable runtime directory fails at
    once with advice rather than half-way through the boot.
    """
    try:
        return socket_path(vtpm_socket_dir(tpm_dir))
    except SwtpmError as err:
        raise ProcessStartError(
            f"the vTPM of node {tpm_dir.parent.name} cannot get a Unix socket: {err}",
            hint="set XDG_RUNTIME_DIR (or TMPDIR) to a short directory of your own",
        ) from None


def remove_vtpm_sockets(node: MiniNode) -> None:
    """Remove the node's socket directory (its swtpm must have stopped)."""
    shutil.rmtree(node.swtpm_socket.parent, ignore_errors=True)


def start_swtpm(name: str, tpm_dir: Path, log_path: Path) -> tuple[ProcessRecord, Path]:
    """A detached swtpm keeping its state in ``tpm_dir``, serving Unix sockets in the node's
    private socket directory (``vtpm_socket_dir``).

    Returns its record and its data socket. Both directories are made 0700 (and must be ours)
    before swtpm runs, and the sockets are created 0600, so no other user's process can open
    them (see :mod:`constellation.attestation.swtpm`).
    """
    command, data_socket = swtpm_command_for(name, tpm_dir)
    last = ""
    for _ in range(3):
        record = spawn(f"{name}/swtpm", command, log_path=log_path, mini_dir=_mini_dir_of(tpm_dir))
        try:
            wait_tpm_ready(record, data_socket, SWTPM_READY_TIMEOUT_S)
            return record, data_socket
        except ProcessStartError as err:
            last = str(err)
            stop(record)  # a hung attempt would keep the state lock from the next one
    raise ProcessStartError(f"swtpm of {name} did not start: {last}", hint=f"see {log_path}")


def swtpm_command_for(name: str, tpm_dir: Path) -> tuple[list[str], Path]:
    """The swtpm command line of the node whose TPM state is ``tpm_dir``, and its data socket.

    Prepares the private directories and refuses if a vTPM already serves the socket (a
    second swtpm would unlink the running one's sockets).
    """
    data_socket = swtpm_socket(tpm_dir)
    try:
        prepare_socket_dir(tpm_dir)
        prepare_socket_dir(data_socket.parent.parent)
        prepare_socket_dir(data_socket.parent)
        refuse_if_served(data_socket)
        return swtpm_command(swtpm_binary(), tpm_dir.absolute(), data_socket), data_socket
    except SwtpmError as err:
        raise ProcessStartError(f"swtpm of {name} cannot start: {err}") from None


def _mini_dir_of(path: Path) -> Path:
    """``<workspace>/mini`` for a path inside a node (``mini/nodes/<name>/...``)."""
    for parent in path.absolute().parents:
        if parent.name == "nodes":
            return parent.parent
    return path.absolute().parent


def wait_tpm_ready(record: ProcessRecord, path: Path, timeout: float) -> None:
    """Wait (bounded) until the TPM of ``record`` answers on the Unix socket ``path``."""
    wait_until(
        record,
        lambda: answers_tpm_command(path),
        timeout,
        waiting_for=f"answer TPM commands on {path}",
    )


def bootstrapper_env(image_dir: Path) -> dict[str, str]:
    """The node's environment: its image first on the import path, no bytecode written."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(image_dir)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def launch_node(
    *,
    name: str,
    role: Role,
    directory: Path,
    image_source: Path,
    image_version: str,
    init_secret_hash: bytes,
    joinservice_endpoint: Endpoint,
    joinservice_measurements: Measurements,
    platform_ca: PlatformCA,
    logs_dir: Path,
    records: list[ProcessRecord],
) -> MiniNode:
    """Create the node's files, have the platform certify its vTPM, power it on.

    Before the node first boots, the platform certifies the vTPM's attestation key as this node
    (``platform.certify_node``), as a cloud does when it creates a VM; then the node supervisor
    boots it (module docstring).

    Every process started is appended to ``records`` as soon as it runs, so a failure later in
    the boot still leaves it recorded for ``mini down``.
    """
    swtpm_socket(directory / "tpm")
    directory.mkdir(parents=True, mode=0o700)
    image_dir = directory / "image"
    copy_image(image_source, image_dir)
    # Stopped before this returns, so not recorded; if the CLI dies meanwhile, the workspace
    # marker it carries lets `mini down` find it.
    swtpm, tpm_socket = start_swtpm(name, directory / "tpm", logs_dir / f"{name}-swtpm.log")
    tcti = tcti_for(tpm_socket)
    try:
        ak_certificate = certify_node(tcti, platform_ca, name, role)
    finally:
        stop(swtpm)  # the AK is persistent in the TPM state; the supervisor starts it again
    write_atomic(directory / AK_CERT_FILE, ak_certificate, mode=PUBLIC_MODE)
    write_atomic(directory / PLATFORM_ROOTS_FILE, platform_ca.cert_pem, mode=PUBLIC_MODE)

    with (directory / "disk.img").open("wb") as disk:
        disk.truncate(DISK_SIZE)
    write_metadata_file(
        directory / "metadata.json",
        InstanceMetadata(
            name=name,
            role=role,
            private_ip=LOOPBACK,
            init_secret_hash=init_secret_hash,
            control_plane_endpoints=(joinservice_endpoint,),
        ),
    )
    write_atomic(
        directory / "join-measurements.json",
        joinservice_measurements.to_json().encode(),
        mode=PUBLIC_MODE,
    )
    init_port = free_port()
    config = {
        "metadata_path": str(directory / "metadata.json"),
        "state_disk_path": str(directory / "disk.img"),
        "state_dir": str(directory / "state"),
        "install_root": str(directory / "root"),
        "tpm_tcti": tcti,
        "init_host": LOOPBACK,
        "init_port": init_port,
        "join_measurements_path": str(directory / "join-measurements.json"),
        "event_log_path": str(directory / "eventlog.bin"),
        "ak_certificate_path": str(directory / AK_CERT_FILE),
        "platform_roots_path": str(directory / PLATFORM_ROOTS_FILE),
        "join_retry": JOIN_RETRY,
        "rejoin_retry": REJOIN_RETRY,
        "fast_luks_pbkdf": True,
        "boot_id_path": str(directory / BOOT_ID_FILE),
    }
    write_atomic(
        directory / "bootstrapper.json",
        (json.dumps(config, indent=2) + "\n").encode(),
        mode=PUBLIC_MODE,
    )
    supervisor = _spawn_node_supervisor(name, directory, logs_dir)
    records.append(supervisor)
    return MiniNode(
        name=name,
        role=role,
        directory=directory,
        swtpm_socket=tpm_socket,
        init_port=init_port,
        image_version=image_version,
        supervisor=supervisor,
    )


def bootstrapper_command() -> list[str]:
    """The bootstrapper's command line; it runs in the node's directory."""
    return [sys.executable, "-m", "constellation.bootstrapper", "--config", "bootstrapper.json"]


def draw_boot_id(directory: Path) -> str:
    """Give the node's boot a fresh random ID, as the kernel does at every boot.

    Called by the firmware step, once per boot (reboots and ``mini start`` included), never
    when only the bootstrapper is restarted: that is what lets the bootstrapper tell a restart
    on the same boot from a reboot (``constellation.bootstrapper.bootid``).
    """
    boot_id = str(uuid.uuid4())
    write_atomic(directory / BOOT_ID_FILE, f"{boot_id}\n".encode(), mode=PUBLIC_MODE)
    return boot_id


def point_config_at_tpm(directory: Path, tpm_socket: Path) -> str:
    """Write the vTPM address into the node's ``bootstrapper.json``; return the TCTI."""
    tcti = tcti_for(tpm_socket)
    config_path = directory / "bootstrapper.json"
    try:
        config = json.loads(config_path.read_bytes())
    except (OSError, ValueError) as err:
        raise ProcessStartError(f"cannot read {config_path}: {err}") from None
    if config.get("tpm_tcti") != tcti:
        config["tpm_tcti"] = tcti
        write_atomic(config_path, (json.dumps(config, indent=2) + "\n").encode(), mode=PUBLIC_MODE)
    return tcti


def _spawn_node_supervisor(name: str, directory: Path, logs_dir: Path) -> ProcessRecord:
    return spawn_node(
        name, directory.absolute(), mini_dir=_mini_dir_of(directory), logs_dir=logs_dir.absolute()
    )


def reboot_node(node: MiniNode, logs_dir: Path, records: list[ProcessRecord]) -> MiniNode:
    """Boot a stopped node again from its own files, like a VM after a power cycle.

    Its node supervisor starts again and boots it: swtpm on the same state directory (same TPM
    identity, PCRs reset by the startup), the firmware step measures the node's image again and
    rewrites the event log, and the bootstrapper starts with the node's configuration (only the
    vTPM address is updated).
    The node's state disk, node state and control-plane files are kept: the bootstrapper finds
    its node state and rejoins (or, on the control plane, waits for ``constellation recover``).
    Every process started is appended to ``records`` as soon as it runs.
    """
    if is_running(node.supervisor):
        raise ProcessStartError(
            f"node {node.name} is still running", hint="run `constellation mini stop` first"
        )
    tpm_socket = swtpm_socket(node.directory / "tpm")
    supervisor = _spawn_node_supervisor(node.name, node.directory, logs_dir)
    records.append(supervisor)
    return replace(node, swtpm_socket=tpm_socket, supervisor=supervisor)


def wait_booted(node: MiniNode, timeout: float = BOOT_TIMEOUT_S) -> None:
    """Wait until the node's bootstrapper serves its init port (it is up and attesting)."""
    wait_listening(node.supervisor, node.init_port, timeout)
