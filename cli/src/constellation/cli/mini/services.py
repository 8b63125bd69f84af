"""The three in-cluster services as mini-mode processes, started as the Helm charts start them.

Each service gets the command line of its chart (the flags in ``charts/*/templates``) with the
chart's mount paths replaced by the files :mod:`.clusterobjects` materialized from the API, and
loopback ports chosen here (recorded in the cluster record and the state file):

- one KeyService (master secret from the ``constellation-mastersecret`` Secret), serving
  GetDataKey over mutual TLS only (``constellation-keyservice-tls``) and health in plaintext on
  a port of its own;
- one JoinService on the first control-plane node: it attests itself with that node's vTPM and
  event log (mutual aTLS), authenticates to the API server with a token of its chart's
  ServiceAccount, bound to the chart's Role (:mod:`.serviceaccount`), as its pod would, and to
  the KeyService with its client certificate (``constellation-keyservice-client``);
- one VerificationService per node, quoting with that node's vTPM and attaching its event log.

Each runs under its own unit supervisor (:mod:`.supervision.unit`): restarted with backoff on the
same ports when it dies, and restarted when the node whose TPM it uses reboots. The recorded
process is the supervisor; the service's log (``<logs>/<unit>.log``) carries both the service's
and the supervisor's JSON lines.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from constellation.bootstrapper.metadata import Endpoint
from constellation.cli.mini.clusterobjects import MountedFiles
from constellation.cli.mini.node import LOOPBACK, MiniNode, free_port, wait_listening
from constellation.cli.mini.processes import ProcessRecord
from constellation.cli.mini.supervision import spawn_unit
from constellation.cli.servicepki import CA_FILE, CERT_FILE, KEY_FILE
from constellation.keyservice.tls import SERVER_NAME

SERVICE_START_TIMEOUT_S = 60.0
JOIN_CONFIG_POLL_S = 0.5


@dataclass(frozen=True)
class VerificationEndpoint:
    node: str
    grpc_port: int
    http_port: int
    process: ProcessRecord

    @property
    def grpc(self) -> Endpoint:
        return Endpoint(LOOPBACK, self.grpc_port)

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "grpcPort": self.grpc_port,
            "httpPort": self.http_port,
            "process": self.process.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VerificationEndpoint:
        return cls(
            str(data["node"]),
            int(data["grpcPort"]),
            int(data["httpPort"]),
            ProcessRecord.from_dict(data["process"]),
        )


def _python_module(module: str) -> list[str]:
    return [sys.executable, "-m", module]


def start_keyservice(files: MountedFiles, logs_dir: Path) -> tuple[ProcessRecord, int]:
    port = free_port()
    record = spawn_unit(
        "keyservice",
        [
            *_python_module("constellation.keyservice"),
            f"--master-secret-file={files.master_secret_file}",
            f"--salt-file={files.master_salt_file}",
            f"--tls-cert-file={files.keyservice_tls_dir / CERT_FILE}",
            f"--tls-key-file={files.keyservice_tls_dir / KEY_FILE}",
            f"--client-ca-file={files.keyservice_tls_dir / CA_FILE}",
            f"--listen={LOOPBACK}",
            f"--port={port}",
            "--health-port=0",
            "--metrics-port=0",
        ],
        mini_dir=logs_dir.parent,
        log_path=logs_dir / "keyservice.log",
    )
    return record, port


def start_joinservice(
    files: MountedFiles,
    *,
    port: int,
    keyservice_port: int,
    kubeconfig: Path,
    api_server_endpoint: str,
    node: MiniNode,
    logs_dir: Path,
) -> ProcessRecord:
    return spawn_unit(
        "joinservice",
        [
            *_python_module("constellation.joinservice"),
            f"--listen={LOOPBACK}",
            f"--port={port}",
            "--health-port=0",
            "--metrics-port=0",
            f"--join-config-dir={files.join_config_dir}",
            f"--measurement-salt-file={files.measurement_salt_file}",
            f"--poll-interval={JOIN_CONFIG_POLL_S}",
            f"--ca-cert-file={files.pki_dir / 'ca.crt'}",
            f"--ca-key-file={files.pki_dir / 'ca.key'}",
            f"--pki-dir={files.pki_dir}",
            f"--components-file={files.components_file}",
            f"--keyservice-endpoint={LOOPBACK}:{keyservice_port}",
            # Dialled by IP: the KeyService's certificate is checked for its fixed name.
            f"--keyservice-ca-file={files.keyservice_client_dir / CA_FILE}",
            f"--keyservice-cert-file={files.keyservice_client_dir / CERT_FILE}",
            f"--keyservice-key-file={files.keyservice_client_dir / KEY_FILE}",
            f"--keyservice-server-name={SERVER_NAME}",
            f"--api-server-endpoint={api_server_endpoint}",
            f"--kubeconfig={kubeconfig}",
            "--namespace=kube-system",
            f"--tpm-tcti={node.tcti}",
            f"--event-log={node.event_log}",
            f"--ak-certificate-file={node.ak_certificate}",
        ],
        mini_dir=logs_dir.parent,
        log_path=logs_dir / "joinservice.log",
    )


def start_verificationservice(node: MiniNode, logs_dir: Path) -> VerificationEndpoint:
    grpc_port, http_port = free_port(), free_port()
    while http_port == grpc_port:
        http_port = free_port()
    record = spawn_unit(
        f"{node.name}/verificationservice",
        [
            *_python_module("constellation.verificationservice"),
            f"--tpm={node.tcti}",
            "--variant=qemu-vtpm",
            f"--event-log={node.event_log}",
            f"--ak-certificate-file={node.ak_certificate}",
            f"--listen={LOOPBACK}",
            f"--grpc-port={grpc_port}",
            f"--http-port={http_port}",
            "--metrics-port=0",
        ],
        mini_dir=logs_dir.parent,
        log_path=logs_dir / f"{node.name}-verificationservice.log",
    )
    return VerificationEndpoint(node.name, grpc_port, http_port, record)


def wait_serving(record: ProcessRecord, port: int) -> None:
    wait_listening(record, port, SERVICE_START_TIMEOUT_S)
