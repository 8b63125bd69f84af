"""``constellation-bootstrapper --config FILE``: process wiring only, no logic.

Builds the node's collaborators from the configuration (its vTPM, node lock, state disk,
instance metadata, installer, control plane) and hands them to :class:`Node`, which runs the
init server and the join client under the node lock. After a path committed, the process stays
up (on the first node it is the parent of the control-plane processes) until SIGTERM/SIGINT.
Exit codes (:mod:`.exitcodes`): 0 after a clean shutdown, 1 on a refused configuration or a
node error, 2 on usage, 3 (``EXIT_REBOOT_REQUIRED``) when only a reboot of the node lets it go
on (:class:`.node.RebootRequiredError`), so that its supervisor reboots instead of restarting.

``CONSTELLATION_BOOTSTRAPPER_FAILPOINT`` (tests only) is read once here and arms the journal's
crash point of that name (:mod:`.journal`): the process SIGKILLs itself when it gets there.
"""

from __future__ import annotations

import argparse
import functools
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc
import structlog

from constellation.attestation import atls
from constellation.attestation.errors import ConstellationError
from constellation.attestation.identity.verify import load_platform_roots
from constellation.attestation.measurements import Measurements
from constellation.attestation.nodelock import NodeLock
from constellation.attestation.service import Health, Shutdown, configure_logging
from constellation.attestation.vtpm import VtpmIssuer, VtpmValidator
from constellation.bootstrapper.bootid import read_boot_id
from constellation.bootstrapper.config import (
    BootstrapperConfig,
    ConfigError,
    RetryPolicy,
    load_config,
)
from constellation.bootstrapper.exitcodes import EXIT_FAILED, EXIT_OK, EXIT_REBOOT_REQUIRED
from constellation.bootstrapper.initserver import InitCallbacks, InitServer, LocalControlPlane
from constellation.bootstrapper.installer import ComponentInstaller
from constellation.bootstrapper.joinclient import JoinClient, joinservice_measurements
from constellation.bootstrapper.joinservicetrust import JoinServiceValidator
from constellation.bootstrapper.journal import failpoint_from_environment, journal_for
from constellation.bootstrapper.metadata import FileMetadata
from constellation.bootstrapper.node import Node, RebootRequiredError, pcr15_reader
from constellation.bootstrapper.recoveryserver import RecoveryServer
from constellation.bootstrapper.registration import KubeletFiles
from constellation.bootstrapper.statedisk import ARGON2ID, FAST_PBKDF2, DiskKey, StateDisk
from constellation.proto import init_pb2_grpc, recover_pb2_grpc

_log = structlog.get_logger("constellation.bootstrapper")
INIT_SERVICE = "init.API"
RECOVER_SERVICE = "recoverproto.API"
MAX_TRUST_FILE = 1 << 20


def _event_log(path: Path | None) -> Callable[[], bytes | None] | None:
    if path is None:
        return None
    return lambda: path.read_bytes() if path.exists() else None


def _read_small(path: Path, what: str) -> bytes:
    try:
        raw = path.read_bytes()[: MAX_TRUST_FILE + 1]
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    if len(raw) > MAX_TRUST_FILE:
        raise ConfigError(f"{what} {path} is larger than 1 MiB")
    return raw


def _join_validator(config: BootstrapperConfig) -> VtpmValidator:
    """The image validator for the JoinService's node (``JoinServiceValidator`` wraps it)."""
    if config.join_measurements_path is None:
        raise ConfigError(
            "join_measurements_path is required: the node must verify the JoinService"
        )
    if config.platform_roots_path is None:
        raise ConfigError(
            "platform_roots_path is required: the JoinService's attestation key must chain to "
            "the platform's root CA"
        )
    raw = _read_small(config.join_measurements_path, "JoinService measurements")
    roots_pem = _read_small(config.platform_roots_path, "platform roots")
    try:
        image = Measurements.from_json(raw)
        roots = load_platform_roots(roots_pem)
    except ConstellationError as exc:
        raise ConfigError(str(exc)) from None
    return VtpmValidator(
        joinservice_measurements(image),
        variant=config.attestation_variant,
        platform_roots=roots,
        require_event_log=True,
    )


def _ak_certificate(config: BootstrapperConfig) -> bytes | None:
    if config.ak_certificate_path is None:
        return None
    return _read_small(config.ak_certificate_path, "AK certificate")


ControlPlaneFactory = Callable[[BootstrapperConfig, KubeletFiles], LocalControlPlane]


def local_control_plane(
    config: BootstrapperConfig, kubelet_files: KubeletFiles
) -> LocalControlPlane:
    """The real loopback control plane in the node's control-plane directory."""
    return LocalControlPlane(config.control_plane_root, kubelet_files=kubelet_files)


def build_node(
    config: BootstrapperConfig,
    *,
    make_control_plane: ControlPlaneFactory = local_control_plane,
    failpoint: str | None = None,
) -> tuple[Node, LocalControlPlane]:
    """Wire the node from its configuration (no I/O beyond reading files and the TPM).

    ``make_control_plane`` lets a test run the whole process with a stand-in control plane.
    """
    metadata = FileMetadata(config.metadata_path)
    issuer = VtpmIssuer(
        config.tpm_tcti,
        variant=config.attestation_variant,
        event_log=_event_log(config.event_log_path),
        ak_certificate=_ak_certificate(config),
    )
    node_lock = NodeLock(config.tpm_tcti)
    disk = StateDisk(
        config.state_disk_path, pbkdf=FAST_PBKDF2 if config.fast_luks_pbkdf else ARGON2ID
    )
    installer = ComponentInstaller(
        config.install_root,
        source_dirs=config.component_source_dirs,
        http_timeout_s=config.component_http_timeout_s,
        total_timeout_s=config.component_total_timeout_s,
    )
    kubelet_files = KubeletFiles(config.kubelet_dir)
    control_plane = make_control_plane(config, kubelet_files)
    join_validator = _join_validator(config)
    config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    journal = journal_for(config.node_state_path, failpoint=failpoint)

    def make_init_server(initial_key: DiskKey | None, callbacks: InitCallbacks) -> InitServer:
        return InitServer(
            metadata=metadata,
            node_lock=node_lock,
            state_disk=disk,
            initial_disk_key=initial_key,
            installer=installer,
            control_plane=control_plane,
            node_state_path=config.node_state_path,
            callbacks=callbacks,
            journal=journal,
        )

    def serve_on_init_port(
        service: str, add: Callable[[grpc.Server], None]
    ) -> Callable[[float], None]:
        health = Health([service])
        server = atls.AttestedServer(issuer)
        add(server.grpc_server)
        health.attach(server.grpc_server)
        server.add_port(f"{config.init_host}:{config.init_port}")
        server.start()
        health.serving()
        _log.info("server.listening", service=service, host=config.init_host, port=config.init_port)

        def stop(grace: float) -> None:
            health.not_serving()
            server.stop(grace).wait(grace + 1.0)

        return stop

    def serve_init(servicer: InitServer) -> Callable[[float], None]:
        return serve_on_init_port(
            INIT_SERVICE, lambda server: init_pb2_grpc.add_APIServicer_to_server(servicer, server)
        )

    def serve_recovery(servicer: RecoveryServer) -> Callable[[float], None]:
        return serve_on_init_port(
            RECOVER_SERVICE,
            lambda server: recover_pb2_grpc.add_APIServicer_to_server(servicer, server),
        )

    def connect(target: str, *, cluster_id: bytes | None = None) -> atls.AttestedChannel:
        validator = JoinServiceValidator(join_validator, cluster_id=cluster_id)
        return atls.connect(
            target, [validator], issuer=issuer, timeout=config.join_retry.rpc_timeout_s
        )

    def make_client(retry: RetryPolicy, stop: threading.Event) -> JoinClient:
        return JoinClient(
            metadata=metadata,
            connect=connect,
            node_lock=node_lock,
            state_disk=disk,
            installer=installer,
            kubelet_files=kubelet_files,
            node_state_path=config.node_state_path,
            retry=retry,
            stop=stop,
            journal=journal,
        )

    node = Node(
        node_lock=node_lock,
        state_disk=disk,
        node_state_path=config.node_state_path,
        make_init_server=make_init_server,
        serve_init=serve_init,
        make_join_client=functools.partial(make_client, config.join_retry),
        control_plane=control_plane,
        make_rejoin_client=functools.partial(make_client, config.rejoin_retry),
        serve_recovery=serve_recovery,
        journal=journal,
        read_pcr15=pcr15_reader(config.tpm_tcti),
        boot_id=functools.partial(read_boot_id, config.boot_id_path),
    )
    return node, control_plane


def exit_code_for(error: ConstellationError) -> int:
    """The process's exit code for an error it stops on: a reboot's, or a plain failure's."""
    return EXIT_REBOOT_REQUIRED if isinstance(error, RebootRequiredError) else EXIT_FAILED


def main(
    argv: Sequence[str] | None = None,
    *,
    make_control_plane: ControlPlaneFactory = local_control_plane,
) -> int:
    parser = argparse.ArgumentParser(
        prog="constellation-bootstrapper",
        description="First service on a node: initialize the cluster (init server) or join it "
        "(join client), whichever commits first under the node lock.",
    )
    parser.add_argument("--config", type=Path, required=True, help="JSON configuration file")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning"))
    args = parser.parse_args(argv)
    configure_logging(args.log_level)

    shutdown = Shutdown()
    shutdown.install_signal_handlers()
    control_plane: LocalControlPlane | None = None
    try:
        failpoint = failpoint_from_environment()
        config = load_config(args.config)
        node, control_plane = build_node(
            config, make_control_plane=make_control_plane, failpoint=failpoint
        )

        def forward_shutdown() -> None:
            shutdown.wait()
            node.shutdown.set()

        threading.Thread(target=forward_shutdown, name="shutdown", daemon=True).start()
        outcome = node.run()
        if outcome is not None:
            _log.info("node.ready", path=str(outcome.path), cluster_id=outcome.cluster_id.hex())
            shutdown.wait()
        return EXIT_OK
    except ConstellationError as exc:
        code = exit_code_for(exc)
        _log.error("bootstrapper.failed", error=str(exc), kind=type(exc).__name__, exit_code=code)
        return code
    finally:
        if control_plane is not None:
            control_plane.stop()
        _log.info("bootstrapper.stopped", reason=shutdown.reason or "done")


if __name__ == "__main__":
    sys.exit(main())
