"""A real Kubernetes control plane on loopback: kubeadm PKI, etcd, API server, controller manager.

Used by the first node's bootstrapper in mini mode and by the test fixture; nothing here is a
mock. Bring-up, in order (each step logs to ``<directory>/logs/``):

1. Ports: free 127.0.0.1 ports for etcd (client, peer, metrics), the API server and the
   controller manager. They are saved in ``<directory>/controlplane.json`` and reused on a
   warm start when still free, so the kubeconfigs and the etcd member stay valid. A port
   taken by someone else between choice and bind makes the start retry on new ports (bounded).
2. PKI: ``kubeadm init phase certs all`` and ``kubeadm init phase kubeconfig all`` with a
   generated kubeadm config (control-plane endpoint 127.0.0.1:<port>, SANs 127.0.0.1 and
   localhost, ECDSA P-256 keys). The processes advertise and bind 127.0.0.1 only, and every
   kubeconfig is pointed at ``https://127.0.0.1:<port>`` (kubeadm writes the controller
   manager's with the address of a real interface).
   A warm start with the same ports skips this; with new ports only the kubeconfigs (which name
   the server URL) and the etcd data (which names the peer URL) are recreated.
3. etcd with TLS for clients and peers (kubeadm's etcd CA), then kube-apiserver with
   bootstrap-token authentication, ``Node,RBAC`` authorization and the ``NodeRestriction``
   admission plugin, then (optionally) kube-controller-manager, whose ``tokencleaner`` removes
   expired bootstrap tokens and whose CSR signer uses the cluster CA.
4. Readiness: ``GET /readyz`` with the super-admin client certificate until it answers 200,
   bounded in attempts and time; a child that exits early fails the start at once. The
   controller manager counts as started once its root-CA publisher has written
   ``kube-system/kube-root-ca.crt`` (proof that it reached the API server).
5. ``kubeadm:cluster-admins`` is bound to ``cluster-admin`` (``kubeadm init`` does this in a
   later phase we do not run), so ``admin.conf`` works as it does on a kubeadm cluster.

6. Watching: after a successful start a watcher thread polls every child (``poll`` also reaps
   it, so a dead child never lingers as a zombie). A child that exited is started again with
   the same command line, ports and files after an exponential backoff (0.5 s doubling to at
   most 30 s; back to 0.5 s once a child had run for a minute); it never gives up, since the
   node is useless without its control plane. Each restart is logged
   (``event="supervisor.restart"`` with the component, its exit status and the restart count)
   and counted in :attr:`ControlPlane.restarts` and ``<directory>/restarts.json``. etcd and
   kube-apiserver reconnect to each other by themselves, so a restart touches only the dead
   child.

Teardown first stops the watcher (nothing is restarted once teardown began), then sends
SIGTERM to each child by PID (reverse start order), waits a bounded time, then
SIGKILL. It runs on every exit path of the context manager, including a failed start. The PIDs
are also kept in ``<directory>/pids.json``: if the owning process itself was killed, the next
start in that directory ends the orphans first (only processes whose command line names the
directory). An flock on ``<directory>/.lock`` keeps a second owner out while one is running.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import structlog
import yaml

from constellation.bootstrapper.atomicfile import PUBLIC_MODE, SECRET_MODE, write_atomic
from constellation.bootstrapper.exitcodes import exit_status
from constellation.bootstrapper.kubernetes.components import InstalledComponents
from constellation.bootstrapper.kubernetes.errors import (
    ControlPlaneError,
    ControlPlaneStartError,
    ControlPlaneTimeoutError,
)

LOOPBACK = "127.0.0.1"
SERVICE_SUBNET = "10.96.0.0/12"
CLUSTER_NAME = "constellation"
STATE_FILE = "controlplane.json"
PIDS_FILE = "pids.json"
LOCK_FILE = ".lock"
DEFAULT_READY_TIMEOUT = 120.0
READY_POLL_INTERVAL = 0.25
STOP_TIMEOUT = 15.0
KUBEADM_TIMEOUT = 120.0
PORT_ATTEMPTS = 3
_PORT_TAKEN = "address already in use"
_LOG_TAIL_LINES = 25
_PORT_NAMES = ("etcd_client", "etcd_peer", "etcd_metrics", "apiserver", "controller_manager")
RESTARTS_FILE = "restarts.json"
WATCH_INTERVAL = 0.25
RESTART_INITIAL_DELAY = 0.5
RESTART_MAX_DELAY = 30.0
RESTART_RESET_AFTER = 60.0

_log = structlog.get_logger()


@dataclass(frozen=True)
class ControlPlaneBinaries:
    """Paths of the binaries a control plane runs; take them from hash-verified components."""

    kubeadm: Path
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path | None = None

    @classmethod
    def from_components(cls, installed: InstalledComponents) -> ControlPlaneBinaries:
        """Use binaries that :func:`verified_components` checked against their hashes."""
        manager = installed.paths.get("kube-controller-manager")
        return cls(
            kubeadm=installed.path("kubeadm"),
            etcd=installed.path("etcd"),
            kube_apiserver=installed.path("kube-apiserver"),
            kube_controller_manager=manager,
        )


@dataclass(frozen=True)
class Ports:
    """The loopback ports of one control plane."""

    etcd_client: int
    etcd_peer: int
    etcd_metrics: int
    apiserver: int
    controller_manager: int

    @classmethod
    def allocate(cls) -> Ports:
        """Pick distinct free ports (the kernel chooses; all sockets are held until chosen)."""
        sockets: list[socket.socket] = []
        try:
            for _ in _PORT_NAMES:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.bind((LOOPBACK, 0))
                sockets.append(sock)
            numbers = [s.getsockname()[1] for s in sockets]
        finally:
            for sock in sockets:
                sock.close()
        return cls(**dict(zip(_PORT_NAMES, numbers, strict=True)))

    def all_free(self) -> bool:
        """True if every port can be bound right now (a warm start may then reuse them)."""
        for port in (getattr(self, name) for name in _PORT_NAMES):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                # Go listeners set SO_REUSEADDR, so TIME_WAIT left by the previous run does
                # not stop them; test the port the same way.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((LOOPBACK, port))
                except OSError:
                    return False
        return True


def kubeadm_config(
    *,
    ports: Ports,
    pki_dir: Path,
    etcd_data_dir: Path,
    kubernetes_version: str,
    node_name: str,
    cluster_name: str = CLUSTER_NAME,
) -> str:
    """Render the kubeadm v1beta4 Init+Cluster configuration for a loopback control plane."""
    endpoint = f"{LOOPBACK}:{ports.apiserver}"
    # kubeadm refuses a loopback advertiseAddress unless "lo" also carries a global unicast IP
    # (it treats loopback as "pick the global address on lo"). It is left to kubeadm, where it
    # only adds one more SAN; every URL below and every process uses 127.0.0.1.
    init = {
        "apiVersion": "kubeadm.k8s.io/v1beta4",
        "kind": "InitConfiguration",
        "localAPIEndpoint": {"bindPort": ports.apiserver},
        "nodeRegistration": {"name": node_name},
    }
    cluster = {
        "apiVersion": "kubeadm.k8s.io/v1beta4",
        "kind": "ClusterConfiguration",
        "clusterName": cluster_name,
        "kubernetesVersion": kubernetes_version,
        "certificatesDir": str(pki_dir),
        # The JoinService signs kubelet certificates with ECDSA (DESIGN.md §3).
        "encryptionAlgorithm": "ECDSA-P256",
        "controlPlaneEndpoint": endpoint,
        "apiServer": {"certSANs": [LOOPBACK, "localhost"]},
        "networking": {"serviceSubnet": SERVICE_SUBNET, "dnsDomain": "cluster.local"},
        "etcd": {
            "local": {
                "dataDir": str(etcd_data_dir),
                "serverCertSANs": [LOOPBACK, "localhost"],
                "peerCertSANs": [LOOPBACK, "localhost"],
            }
        },
    }
    return yaml.safe_dump_all([init, cluster], sort_keys=False)


class ControlPlane:
    """etcd + kube-apiserver (+ kube-controller-manager) as child processes on loopback.

    Use as a context manager; ``__exit__`` always tears everything down. The directory keeps
    the PKI, kubeconfigs, etcd data and logs, so a later start there is "warm".
    """

    def __init__(
        self,
        directory: Path,
        binaries: ControlPlaneBinaries,
        *,
        kubernetes_version: str,
        node_name: str = "constellation-control-plane",
        with_controller_manager: bool = True,
        ready_timeout: float = DEFAULT_READY_TIMEOUT,
        unsafe_no_fsync: bool = False,
        allocate_ports: Callable[[], Ports] = Ports.allocate,
    ) -> None:
        self.directory = directory.resolve()
        self.binaries = binaries
        self.kubernetes_version = kubernetes_version
        self.node_name = node_name
        self.with_controller_manager = (
            with_controller_manager and binaries.kube_controller_manager is not None
        )
        self.ready_timeout = ready_timeout
        self.unsafe_no_fsync = unsafe_no_fsync
        self._allocate_ports = allocate_ports
        self._ports: Ports | None = None
        self._children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._log_handles: dict[str, IO[bytes]] = {}
        self._dir_lock: IO[bytes] | None = None
        # The watcher and stop() both touch the children: one lock, held briefly.
        self._children_lock = threading.Lock()
        self._watcher: threading.Thread | None = None
        self._watch_stop = threading.Event()
        self._started_at: dict[str, float] = {}
        self.restarts: dict[str, int] = {}

    # -- public paths -------------------------------------------------------------------

    @property
    def pki_dir(self) -> Path:
        return self.directory / "pki"

    @property
    def log_dir(self) -> Path:
        return self.directory / "logs"

    @property
    def etcd_data_dir(self) -> Path:
        return self.directory / "etcd"

    @property
    def kubeconfig_dir(self) -> Path:
        return self.directory / "kubeconfig"

    @property
    def admin_kubeconfig(self) -> Path:
        """``admin.conf``: group ``kubeadm:cluster-admins``, bound to cluster-admin on start."""
        return self.kubeconfig_dir / "admin.conf"

    @property
    def super_admin_kubeconfig(self) -> Path:
        """``super-admin.conf``: group ``system:masters``; bypasses RBAC, use sparingly."""
        return self.kubeconfig_dir / "super-admin.conf"

    @property
    def ca_cert_path(self) -> Path:
        return self.pki_dir / "ca.crt"

    @property
    def ca_key_path(self) -> Path:
        return self.pki_dir / "ca.key"

    @property
    def ports(self) -> Ports:
        if self._ports is None:
            raise ControlPlaneError("the control plane has not been started")
        return self._ports

    @property
    def server(self) -> str:
        """The API server URL, ``https://127.0.0.1:<port>``."""
        return f"https://{LOOPBACK}:{self.ports.apiserver}"

    @property
    def pids(self) -> dict[str, int]:
        """PIDs of the running children by component name (for diagnostics and tests)."""
        return {name: proc.pid for name, proc in self._children}

    # -- life cycle ---------------------------------------------------------------------

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Bring the control plane up and wait until it is ready; tear down on any failure.

        Free ports are chosen before the children bind them, so another process can take one
        in between; such a start (a child exits with "address already in use") is retried on
        new ports, at most ``PORT_ATTEMPTS`` times.
        """
        if self._children:
            raise ControlPlaneError("the control plane is already running")
        for attempt in range(1, PORT_ATTEMPTS + 1):
            try:
                self._start_once()
                return
            except ControlPlaneStartError as err:
                if attempt == PORT_ATTEMPTS or _PORT_TAKEN not in str(err):
                    raise
                # stop() already ran; the saved ports are now taken, so new ones are chosen.

    def _start_once(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            os.chmod(self.directory, 0o700)
            self.log_dir.mkdir(exist_ok=True)
            self._lock_directory()
            self._end_stale_children()
            self._ports = self._prepare_ports_and_pki()
            self._start_etcd()
            self._start_apiserver()
            self._wait_ready()
            self._bind_cluster_admins()
            if self.with_controller_manager:
                self._forget_root_ca_configmap()
                self._start_controller_manager()
                self._wait_controller_manager()
            self._start_watcher()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """End every child by PID: SIGTERM, bounded wait, SIGKILL. Safe to call twice."""
        self._stop_watcher()
        errors: list[str] = []
        for name, proc in reversed(self._children):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    try:
                        proc.wait(timeout=STOP_TIMEOUT)
                    except subprocess.TimeoutExpired:
                        errors.append(f"{name} (pid {proc.pid}) survived SIGKILL")
        self._children.clear()
        if self._dir_lock is not None:  # only the owner may forget the PIDs
            (self.directory / PIDS_FILE).unlink(missing_ok=True)
        for handle in self._log_handles.values():
            handle.close()
        self._log_handles.clear()
        if self._dir_lock is not None:
            self._dir_lock.close()  # releases the flock
            self._dir_lock = None
        if errors:
            raise ControlPlaneError("; ".join(errors))

    # -- steps --------------------------------------------------------------------------

    def _prepare_ports_and_pki(self) -> Ports:
        state = self.directory / STATE_FILE
        previous: Ports | None = None
        if state.is_file() and self.ca_cert_path.is_file():
            with contextlib.suppress(ValueError, TypeError, KeyError):
                raw = json.loads(state.read_text())
                previous = Ports(**{name: int(raw["ports"][name]) for name in _PORT_NAMES})
        if previous is not None and previous.all_free() and self._kubeconfigs_present():
            self._point_kubeconfigs_at_loopback(previous)  # directories from older versions
            return previous
        ports = self._allocate_ports()
        config_path = self.directory / "kubeadm.yaml"
        config = kubeadm_config(
            ports=ports,
            pki_dir=self.pki_dir,
            etcd_data_dir=self.etcd_data_dir,
            kubernetes_version=self.kubernetes_version,
            node_name=self.node_name,
        )
        write_atomic(config_path, config.encode(), mode=PUBLIC_MODE)
        if previous is not None:
            # The PKI stays; the server URL in the kubeconfigs and etcd's peer URL change.
            for conf in self.kubeconfig_dir.glob("*.conf"):
                conf.unlink()
            _remove_tree(self.etcd_data_dir)
        else:
            self._run_kubeadm(["init", "phase", "certs", "all", "--config", str(config_path)])
        self._run_kubeadm(
            [
                "init", "phase", "kubeconfig", "all", "--config", str(config_path),
                "--kubeconfig-dir", str(self.kubeconfig_dir),
            ]
        )  # fmt: skip
        self._point_kubeconfigs_at_loopback(ports)
        self._extract_probe_credentials()
        body = {"ports": {name: getattr(ports, name) for name in _PORT_NAMES}}
        write_atomic(state, (json.dumps(body, indent=2) + "\n").encode(), mode=PUBLIC_MODE)
        return ports

    def _point_kubeconfigs_at_loopback(self, ports: Ports) -> None:
        """Make every kubeconfig name ``https://127.0.0.1:<port>``.

        kubeadm writes the admin kubeconfigs with the control-plane endpoint (loopback here) but
        those of the controller manager and scheduler with the node's own advertise address,
        which kubeadm picked from a real interface: rewrite them so nothing leaves loopback.
        """
        server = f"https://{LOOPBACK}:{ports.apiserver}"
        for conf in sorted(self.kubeconfig_dir.glob("*.conf")):
            try:
                config = yaml.safe_load(conf.read_text())
                clusters = config["clusters"]
                for cluster in clusters:
                    cluster["cluster"]["server"] = server
            except (OSError, yaml.YAMLError, KeyError, TypeError) as err:
                raise ControlPlaneStartError(
                    f"cannot rewrite the server of {conf}: {type(err).__name__}"
                ) from err
            write_atomic(conf, yaml.safe_dump(config).encode(), mode=SECRET_MODE)

    def _kubeconfigs_present(self) -> bool:
        return self.admin_kubeconfig.is_file() and self.super_admin_kubeconfig.is_file()

    def _run_kubeadm(self, args: Sequence[str]) -> None:
        log_path = self.log_dir / "kubeadm.log"
        with log_path.open("ab") as log:
            log.write(f"$ kubeadm {' '.join(args)}\n".encode())
            log.flush()
            try:
                result = subprocess.run(
                    [str(self.binaries.kubeadm), *args, "-v=1"],
                    stdout=log, stderr=subprocess.STDOUT, timeout=KUBEADM_TIMEOUT, check=False,
                )  # fmt: skip
            except subprocess.TimeoutExpired as err:
                raise ControlPlaneStartError(
                    f"kubeadm {args[2] if len(args) > 2 else args} exceeded {KUBEADM_TIMEOUT} s; "
                    f"see {log_path}"
                ) from err
        if result.returncode != 0:
            raise ControlPlaneStartError(
                f"kubeadm {' '.join(args[:4])} failed (exit {result.returncode}); see {log_path}:\n"
                + _tail(log_path)
            )

    def _extract_probe_credentials(self) -> None:
        """Write the super-admin client certificate as files for the readiness probe."""
        try:
            conf = yaml.safe_load(self.super_admin_kubeconfig.read_text())
            user = conf["users"][0]["user"]
            cert = base64.b64decode(user["client-certificate-data"])
            key = base64.b64decode(user["client-key-data"])
        except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError, ValueError) as err:
            raise ControlPlaneStartError(
                f"cannot read the client credentials from {self.super_admin_kubeconfig}: "
                f"{type(err).__name__}"
            ) from err
        write_atomic(self._probe_cert, cert, mode=PUBLIC_MODE)
        write_atomic(self._probe_key, key, mode=SECRET_MODE)

    @property
    def _probe_cert(self) -> Path:
        return self.kubeconfig_dir / "probe.crt"

    @property
    def _probe_key(self) -> Path:
        return self.kubeconfig_dir / "probe.key"

    def _spawn(self, name: str, argv: Sequence[str]) -> None:
        """Start child ``name`` (replacing a dead one of that name) and record its PID."""
        log = (self.log_dir / f"{name}.log").open("ab")
        previous = self._log_handles.pop(name, None)
        if previous is not None:
            previous.close()
        self._log_handles[name] = log
        log.write(f"--- start {time.strftime('%Y-%m-%dT%H:%M:%S')} ---\n".encode())
        log.flush()
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._started_at[name] = time.monotonic()
        for index, (child, _) in enumerate(self._children):
            if child == name:
                self._children[index] = (name, proc)
                break
        else:
            self._children.append((name, proc))
        pids = {child: p.pid for child, p in self._children}
        write_atomic(self.directory / PIDS_FILE, json.dumps(pids).encode(), mode=PUBLIC_MODE)

    # -- watching after start-up ------------------------------------------------------------

    def _start_watcher(self) -> None:
        self._watch_stop.clear()
        self._watcher = threading.Thread(
            target=self._watch, name="controlplane-watcher", daemon=True
        )
        self._watcher.start()

    def _stop_watcher(self) -> None:
        self._watch_stop.set()
        watcher, self._watcher = self._watcher, None
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join(timeout=STOP_TIMEOUT)

    def _watch(self) -> None:
        """Reap dead children and start them again after a backoff (module docstring, step 6).

        Runs until :meth:`stop`; an error in one restart is logged and retried after the next
        backoff, never allowed to end the watcher.
        """
        delays: dict[str, float] = {}
        due: dict[str, float] = {}
        while not self._watch_stop.wait(WATCH_INTERVAL):
            with self._children_lock:
                if self._watch_stop.is_set():
                    return
                now = time.monotonic()
                for name, proc in list(self._children):
                    if name in due:
                        if now >= due[name]:
                            del due[name]
                            self._restart(name, proc)
                        continue
                    returncode = proc.poll()  # reaps the child if it exited
                    if returncode is None:
                        continue
                    ran = now - self._started_at.get(name, now)
                    previous = delays.get(name)
                    delay = (
                        RESTART_INITIAL_DELAY
                        if previous is None or ran >= RESTART_RESET_AFTER
                        else min(previous * 2, RESTART_MAX_DELAY)
                    )
                    delays[name] = delay
                    due[name] = now + delay
                    _log.warning(
                        "controlplane.child_exited",
                        component=name,
                        pid=proc.pid,
                        status=exit_status(returncode),
                        ran_s=round(ran, 1),
                        restart_in_s=delay,
                    )

    def _restart(self, name: str, dead: subprocess.Popen[bytes]) -> None:
        starters: dict[str, Callable[[], None]] = {
            "etcd": self._start_etcd,
            "kube-apiserver": self._start_apiserver,
            "kube-controller-manager": self._start_controller_manager,
        }
        try:
            starters[name]()
        except (OSError, KeyError) as err:
            _log.error("controlplane.restart_failed", component=name, error=str(err))
            self._started_at[name] = time.monotonic()  # counts as a quick failure next round
            return
        self.restarts[name] = self.restarts.get(name, 0) + 1
        write_atomic(
            self.directory / RESTARTS_FILE,
            (json.dumps(self.restarts, indent=2, sort_keys=True) + "\n").encode(),
            mode=PUBLIC_MODE,
        )
        new_pid = next(p.pid for child, p in self._children if child == name)
        _log.warning(
            "supervisor.restart",
            unit=f"controlplane/{name}",
            component=name,
            previous_pid=dead.pid,
            status=exit_status(dead.returncode if dead.returncode is not None else 0),
            pid=new_pid,
            restarts=self.restarts[name],
        )

    def _lock_directory(self) -> None:
        """Hold an exclusive flock on the directory for as long as the children run.

        A second owner is refused instead of sharing (or reaping) a live control plane; the
        kernel drops the lock when the owner dies, which is what lets the next start treat
        children left in ``pids.json`` as orphans.
        """
        handle = (self.directory / LOCK_FILE).open("ab")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise ControlPlaneError(
                f"{self.directory} is in use by another running control plane"
            ) from None
        self._dir_lock = handle

    def _end_stale_children(self) -> None:
        """End children a previous owner of this directory left behind (it was SIGKILLed).

        A PID from ``pids.json`` is signalled only if that process's command line still names
        this directory, so a recycled PID of an unrelated process is never touched.
        """
        try:
            stale = json.loads((self.directory / PIDS_FILE).read_text())
        except (FileNotFoundError, ValueError):
            return
        if not isinstance(stale, dict):
            return
        marker = str(self.directory).encode()
        for pid in stale.values():
            if not isinstance(pid, int) or pid <= 1:
                continue
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if marker not in cmdline:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + STOP_TIMEOUT
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        (self.directory / PIDS_FILE).unlink(missing_ok=True)

    def _start_etcd(self) -> None:
        ports, pki = self.ports, self.pki_dir / "etcd"
        client = f"https://{LOOPBACK}:{ports.etcd_client}"
        peer = f"https://{LOOPBACK}:{ports.etcd_peer}"
        argv = [
            str(self.binaries.etcd),
            f"--name={self.node_name}",
            f"--data-dir={self.etcd_data_dir}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster={self.node_name}={peer}",
            f"--listen-metrics-urls=http://{LOOPBACK}:{ports.etcd_metrics}",
            f"--cert-file={pki / 'server.crt'}",
            f"--key-file={pki / 'server.key'}",
            "--client-cert-auth=true",
            f"--trusted-ca-file={pki / 'ca.crt'}",
            f"--peer-cert-file={pki / 'peer.crt'}",
            f"--peer-key-file={pki / 'peer.key'}",
            "--peer-client-cert-auth=true",
            f"--peer-trusted-ca-file={pki / 'ca.crt'}",
            "--snapshot-count=10000",
        ]
        if self.unsafe_no_fsync:
            argv.append("--unsafe-no-fsync=true")
        self._spawn("etcd", argv)

    def _start_apiserver(self) -> None:
        ports, pki = self.ports, self.pki_dir
        argv = [
            str(self.binaries.kube_apiserver),
            f"--advertise-address={LOOPBACK}",
            f"--bind-address={LOOPBACK}",
            f"--secure-port={ports.apiserver}",
            "--allow-privileged=true",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--enable-bootstrap-token-auth=true",
            "--endpoint-reconciler-type=none",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--etcd-servers=https://{LOOPBACK}:{ports.etcd_client}",
            f"--etcd-cafile={pki / 'etcd' / 'ca.crt'}",
            f"--etcd-certfile={pki / 'apiserver-etcd-client.crt'}",
            f"--etcd-keyfile={pki / 'apiserver-etcd-client.key'}",
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
            "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
            f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
            f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
            "--requestheader-allowed-names=front-proxy-client",
            f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-username-headers=X-Remote-User",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_SUBNET}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
        ]
        self._spawn("kube-apiserver", argv)

    def _start_controller_manager(self) -> None:
        assert self.binaries.kube_controller_manager is not None  # checked in __init__
        pki = self.pki_dir
        conf = self.kubeconfig_dir / "controller-manager.conf"
        argv = [
            str(self.binaries.kube_controller_manager),
            f"--kubeconfig={conf}",
            f"--authentication-kubeconfig={conf}",
            f"--authorization-kubeconfig={conf}",
            f"--bind-address={LOOPBACK}",
            f"--secure-port={self.ports.controller_manager}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--cluster-name={CLUSTER_NAME}",
            "--controllers=*,bootstrapsigner,tokencleaner",
            "--use-service-account-credentials=true",
            "--leader-elect=false",
        ]
        self._spawn("kube-controller-manager", argv)

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_cert_path))
        context.load_cert_chain(str(self._probe_cert), str(self._probe_key))
        return context

    def request(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
        """Send one request as super-admin and return the decoded JSON (for set-up steps)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(  # noqa: S310 - the URL is our own https loopback server
            self.server + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        with urllib.request.urlopen(req, context=self._ssl_context(), timeout=timeout) as resp:  # noqa: S310
            return json.loads(resp.read() or b"null")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        max_attempts = int(self.ready_timeout / READY_POLL_INTERVAL) + 1
        context = self._ssl_context()
        last = "no answer yet"
        for _ in range(max_attempts):
            self._check_children_alive()
            try:
                with urllib.request.urlopen(  # noqa: S310 - https loopback
                    f"{self.server}/readyz", context=context, timeout=2.0
                ) as resp:
                    if resp.status == 200:
                        return
                    last = f"HTTP {resp.status}"
            except urllib.error.HTTPError as err:
                last = f"HTTP {err.code}"
            except (urllib.error.URLError, OSError) as err:
                last = type(err).__name__
            if time.monotonic() >= deadline:
                break
            time.sleep(READY_POLL_INTERVAL)
        raise ControlPlaneTimeoutError(
            f"kube-apiserver at {self.server} not ready after {self.ready_timeout:.0f} s "
            f"(last: {last}); logs in {self.log_dir}:\n"
            + _tail(self.log_dir / "kube-apiserver.log")
        )

    def _forget_root_ca_configmap(self) -> None:
        """Delete ``kube-system/kube-root-ca.crt`` so that its reappearance proves a live manager.

        On a warm start the ConfigMap survives in etcd; the manager's root-CA publisher
        recreates it on start-up. No pod runs here (no kubelet) that could miss it meanwhile.
        """
        try:
            self.request("DELETE", "/api/v1/namespaces/kube-system/configmaps/kube-root-ca.crt")
        except urllib.error.HTTPError as err:
            if err.code != 404:
                raise ControlPlaneStartError(
                    f"cannot reset kube-system/kube-root-ca.crt: HTTP {err.code}"
                ) from err

    def _wait_controller_manager(self) -> None:
        """Wait until the controller manager works: its root-CA publisher wrote a ConfigMap.

        A health endpoint would answer before the manager has reached the API server; the
        ``kube-root-ca.crt`` ConfigMap in ``kube-system`` only appears once its controllers run.
        """
        deadline = time.monotonic() + self.ready_timeout
        max_attempts = int(self.ready_timeout / READY_POLL_INTERVAL) + 1
        path = "/api/v1/namespaces/kube-system/configmaps/kube-root-ca.crt"
        for _ in range(max_attempts):
            self._check_children_alive()
            try:
                self.request("GET", path, timeout=2.0)
                return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() >= deadline:
                break
            time.sleep(READY_POLL_INTERVAL)
        raise ControlPlaneTimeoutError(
            f"kube-controller-manager did not start its controllers within "
            f"{self.ready_timeout:.0f} s; logs in {self.log_dir}:\n"
            + _tail(self.log_dir / "kube-controller-manager.log")
        )

    def _check_children_alive(self) -> None:
        for name, proc in self._children:
            if proc.poll() is not None:
                log_path = self.log_dir / f"{name}.log"
                raise ControlPlaneStartError(
                    f"{name} exited with {proc.returncode} during start-up; see {log_path}:\n"
                    + _tail(log_path)
                )

    def _bind_cluster_admins(self) -> None:
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "kubeadm:cluster-admins"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "cluster-admin",
            },
            "subjects": [
                {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Group",
                    "name": "kubeadm:cluster-admins",
                }
            ],
        }
        try:
            self.request("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", binding)
        except urllib.error.HTTPError as err:
            if err.code != 409:  # already exists on a warm start
                raise ControlPlaneStartError(
                    f"cannot bind kubeadm:cluster-admins to cluster-admin: HTTP {err.code}"
                ) from err


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        content = path.read_bytes().decode(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return "\n".join(content[-lines:])


def _remove_tree(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
