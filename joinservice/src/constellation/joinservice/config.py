"""Typed settings of the JoinService, validated once at start-up.

Everything the service reads from its environment is named here: where it listens, where the
``join-config`` is mounted, how to reach the KeyService (its address, and the client certificate
files and server name of its mutual TLS, see ``keys``) and the Kubernetes API, where the
cluster CA and the control-plane PKI are, and the components file that lists the Kubernetes
version and artifacts joining nodes install. A bad setting stops the process with a
``ConfigError`` that says which setting and why, before any port is opened.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from constellation.joinservice.errors import ConfigError
from constellation.joinservice.keys import DEFAULT_SERVER_NAME

DEFAULT_PORT: Final = 9090
#: Plaintext gRPC health only: kubelet probes cannot speak (mutual) aTLS.
DEFAULT_HEALTH_PORT: Final = 9091
DEFAULT_METRICS_PORT: Final = 9100
DEFAULT_NAMESPACE: Final = "kube-system"
#: The node's own (v)TPM, through the kernel's resource manager; the JoinService attests itself
#: to joining nodes with it.
DEFAULT_TCTI: Final = "device:/dev/tpmrm0"
# The watcher polls; a ConfigMap update reaches the mount within about a minute anyway, so
# anything outside these bounds is a configuration mistake.
MIN_POLL_INTERVAL: Final = 0.05
MAX_POLL_INTERVAL: Final = 300.0


@dataclass(frozen=True)
class Settings:
    """Validated settings. Build with ``Settings.create`` (it checks every field)."""

    listen_host: str
    port: int
    health_port: int | None
    metrics_port: int | None
    join_config_dir: Path
    measurement_salt_file: Path | None
    poll_interval: float
    keyservice_endpoint: str
    kubeconfig: Path | None
    ca_cert_file: Path
    ca_key_file: Path
    pki_dir: Path
    api_server_endpoint: str
    components_file: Path
    namespace: str
    tpm_tcti: str
    event_log: Path | None
    ak_certificate_file: Path | None = None
    keyservice_ca_file: Path | None = None
    keyservice_cert_file: Path | None = None
    keyservice_key_file: Path | None = None
    keyservice_server_name: str = DEFAULT_SERVER_NAME

    @property
    def keyservice_tls_files(self) -> tuple[Path, Path, Path] | None:
        """``(ca, cert, key)`` of the KeyService client certificate, if configured.

        The command always configures them (the KeyService serves mutual TLS only); ``None`` is
        for an embedding that hands ``build_join_server`` a KeyService channel of its own.
        """
        if (
            self.keyservice_ca_file is None
            or self.keyservice_cert_file is None
            or self.keyservice_key_file is None
        ):
            return None
        return (self.keyservice_ca_file, self.keyservice_cert_file, self.keyservice_key_file)

    @classmethod
    def create(
        cls,
        *,
        join_config_dir: Path,
        keyservice_endpoint: str,
        ca_cert_file: Path,
        ca_key_file: Path,
        api_server_endpoint: str,
        components_file: Path,
        listen_host: str = "0.0.0.0",  # noqa: S104 - a pod serves on all its interfaces
        port: int = DEFAULT_PORT,
        health_port: int | None = DEFAULT_HEALTH_PORT,
        metrics_port: int | None = DEFAULT_METRICS_PORT,
        measurement_salt_file: Path | None = None,
        poll_interval: float = 2.0,
        kubeconfig: Path | None = None,
        pki_dir: Path | None = None,
        namespace: str = DEFAULT_NAMESPACE,
        tpm_tcti: str = DEFAULT_TCTI,
        event_log: Path | None = None,
        ak_certificate_file: Path | None = None,
        keyservice_ca_file: Path | None = None,
        keyservice_cert_file: Path | None = None,
        keyservice_key_file: Path | None = None,
        keyservice_server_name: str = DEFAULT_SERVER_NAME,
    ) -> Settings:
        problems: list[str] = []
        try:
            ipaddress.ip_address(listen_host)
        except ValueError:
            problems.append(f"listen host must be an IP address, got {listen_host!r}")
        for name, value in (
            ("port", port),
            ("health port", health_port),
            ("metrics port", metrics_port),
        ):
            if value is not None and not 0 <= value <= 65535:
                problems.append(f"{name} must be in 0..65535, got {value}")
        if not MIN_POLL_INTERVAL <= poll_interval <= MAX_POLL_INTERVAL:
            problems.append(
                f"join-config poll interval must be in {MIN_POLL_INTERVAL}..{MAX_POLL_INTERVAL} "
                f"seconds, got {poll_interval}"
            )
        for name, endpoint in (
            ("KeyService endpoint", keyservice_endpoint),
            ("API server endpoint", api_server_endpoint),
        ):
            host, sep, port_text = endpoint.rpartition(":")
            if not sep or not host or not port_text.isdigit():
                problems.append(f"{name} must be host:port, got {endpoint!r}")
        if not join_config_dir.is_dir():
            problems.append(f"join-config directory {join_config_dir} does not exist")
        files = [
            ("CA certificate", ca_cert_file),
            ("CA key", ca_key_file),
            ("components file", components_file),
        ]
        if kubeconfig is not None:
            files.append(("kubeconfig", kubeconfig))
        if measurement_salt_file is not None:
            files.append(("measurement salt", measurement_salt_file))
        if event_log is not None:
            files.append(("event log", event_log))
        if ak_certificate_file is not None:
            files.append(("AK certificate", ak_certificate_file))
        keyservice_tls = {
            "--keyservice-ca-file": keyservice_ca_file,
            "--keyservice-cert-file": keyservice_cert_file,
            "--keyservice-key-file": keyservice_key_file,
        }
        given = {flag for flag, path in keyservice_tls.items() if path is not None}
        if given and given != set(keyservice_tls):
            missing = ", ".join(sorted(set(keyservice_tls) - given))
            problems.append(
                f"the KeyService's mutual TLS needs its CA, certificate and key files "
                f"together; missing {missing}"
            )
        for flag, path in keyservice_tls.items():
            if path is not None:
                files.append((f"KeyService client ({flag})", path))
        if not keyservice_server_name or any(c.isspace() for c in keyservice_server_name):
            problems.append(
                f"KeyService server name must be a DNS name, got {keyservice_server_name!r}"
            )
        for name, path in files:
            if not path.is_file():
                problems.append(f"{name} file {path} does not exist")
        resolved_pki = pki_dir if pki_dir is not None else ca_cert_file.parent
        if not resolved_pki.is_dir():
            problems.append(f"PKI directory {resolved_pki} does not exist")
        if not namespace:
            problems.append("namespace must not be empty")
        if not tpm_tcti:
            problems.append("TPM TCTI must not be empty")
        if problems:
            raise ConfigError("invalid JoinService settings: " + "; ".join(problems))
        return cls(
            listen_host=listen_host,
            port=port,
            health_port=health_port,
            metrics_port=metrics_port,
            join_config_dir=join_config_dir,
            measurement_salt_file=measurement_salt_file,
            poll_interval=poll_interval,
            keyservice_endpoint=keyservice_endpoint,
            kubeconfig=kubeconfig,
            ca_cert_file=ca_cert_file,
            ca_key_file=ca_key_file,
            pki_dir=resolved_pki,
            api_server_endpoint=api_server_endpoint,
            components_file=components_file,
            namespace=namespace,
            tpm_tcti=tpm_tcti,
            event_log=event_log,
            ak_certificate_file=ak_certificate_file,
            keyservice_ca_file=keyservice_ca_file,
            keyservice_cert_file=keyservice_cert_file,
            keyservice_key_file=keyservice_key_file,
            keyservice_server_name=keyservice_server_name,
        )
