"""The mini cluster's record in the workspace, and the life cycle around it.

Everything mini mode creates lives under ``<workspace>/mini/`` except the workspace files every
cluster has (configuration, state, master secret, admin kubeconfig). ``mini/cluster.json``
(written atomically after every change) records:

- which workspace files mini mode created (``mini down`` removes exactly those; a configuration
  the user wrote before ``mini up`` is left in place);
- every process started, in start order, with PID and start time (:mod:`.processes`) — a
  process is recorded the moment it runs, so even a failed ``mini up`` can be cleaned up;
- the nodes (:class:`.node.MiniNode`), the service ports and the JoinService endpoint nodes
  dial.

``down`` is idempotent: it stops what is recorded and still ours (the supervisors first, in
reverse start order, which end their children), then whatever else still runs for the
workspace, however it was started (``processes.stop_marked``: restarted by hand, orphaned by a
killed supervisor), removes what it created, and reports "nothing to do" on a second run.
``stop_cluster`` stops the same way and keeps the files.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from constellation.attestation.measurements import Measurements
from constellation.bootstrapper.atomicfile import PUBLIC_MODE, SECRET_MODE, write_atomic
from constellation.bootstrapper.initsecret import InitSecret
from constellation.bootstrapper.kubernetes.components import (
    CacheRecord,
    ComponentLock,
    InstalledComponents,
    default_cache_dir,
    load_lock,
    verified_components,
)
from constellation.bootstrapper.kubernetes.errors import KubernetesError
from constellation.cli.errors import APIServerUnavailableError
from constellation.cli.mini.errors import ClusterStateError, JoinTimeoutError, MiniError
from constellation.cli.mini.node import MiniNode, remove_vtpm_sockets
from constellation.cli.mini.platform import PLATFORM_CA_DIR
from constellation.cli.mini.processes import ProcessRecord, is_running, stop, stop_marked
from constellation.cli.mini.services import VerificationEndpoint
from constellation.cli.workspace import (
    CONFIG_FILE,
    MASTER_SECRET_FILE,
    STATE_FILE,
    Workspace,
)

MINI_DIR = "mini"
RECORD_FILE = "cluster.json"
KUBECONFIG_FILE = "constellation-admin.conf"
INIT_SECRET_FILE = "init-secret"  # noqa: S105 (a file name)
PUBLISHER_KEY_FILE = "image-publisher.key"
RECORD_VERSION = 1
LOCK_ENV = "CONSTELLATION_K8S_LOCK"
LOCK_RELATIVE = Path("hack") / "kubernetes-components.lock.json"
INIT_COMPONENTS = ("kubeadm", "etcd", "kube-apiserver", "kube-controller-manager")
# What a joining node installs (no kubelet or container runtime runs in mini mode).
JOIN_COMPONENTS = ("kubeadm", "kubectl")
JOIN_TIMEOUT_S = 300.0
JOIN_POLL_S = 0.5
SETUP_HINT = "run hack/setup (or `uv run --no-sync hack/kubernetes-components ensure`) first"


def mini_dir(workspace: Workspace) -> Path:
    return workspace.root / MINI_DIR


def kubeconfig_path(workspace: Workspace) -> Path:
    return workspace.root / KUBECONFIG_FILE


@dataclass
class MiniRecord:
    """``mini/cluster.json``: what mini mode created and started in this workspace."""

    root: Path  # absolute: processes run in other directories
    created_files: list[str] = field(default_factory=list)
    processes: list[ProcessRecord] = field(default_factory=list)
    nodes: list[MiniNode] = field(default_factory=list)
    image_version: str = ""
    joinservice_port: int = 0
    joinservice_measurements: Measurements = field(default_factory=Measurements)
    keyservice_port: int | None = None
    joinservice_running: bool = False
    verification: list[VerificationEndpoint] = field(default_factory=list)

    @property
    def directory(self) -> Path:
        return self.root / MINI_DIR

    @property
    def path(self) -> Path:
        return self.directory / RECORD_FILE

    @property
    def logs_dir(self) -> Path:
        return self.directory / "logs"

    @property
    def nodes_dir(self) -> Path:
        return self.directory / "nodes"

    @property
    def services_dir(self) -> Path:
        return self.directory / "services"

    @property
    def image_dir(self) -> Path:
        return self.directory / "image"

    @property
    def platform_ca_dir(self) -> Path:
        """Mini mode's platform CA (``platform.load_or_create_platform_ca``)."""
        return self.directory / PLATFORM_CA_DIR

    @property
    def init_secret_path(self) -> Path:
        return self.directory / INIT_SECRET_FILE

    @property
    def publisher_key_path(self) -> Path:
        return self.directory / PUBLISHER_KEY_FILE

    def control_plane(self) -> MiniNode:
        for node in self.nodes:
            if node.role.value == "control-plane":
                return node
        raise ClusterStateError(
            f"{self.path} records no control-plane node", hint="run `constellation mini up`"
        )

    def node(self, name: str) -> MiniNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise ClusterStateError(f"the mini cluster has no node {name!r}")

    def record_process(self, record: ProcessRecord) -> None:
        self.processes.append(record)
        self.save()

    def save(self) -> None:
        document = {
            "version": RECORD_VERSION,
            "createdFiles": self.created_files,
            "processes": [p.to_dict() for p in self.processes],
            "nodes": [n.to_dict() for n in self.nodes],
            "imageVersion": self.image_version,
            "joinServicePort": self.joinservice_port,
            "joinServiceMeasurements": self.joinservice_measurements.to_dict(),
            "keyServicePort": self.keyservice_port,
            "joinServiceRunning": self.joinservice_running,
            "verification": [v.to_dict() for v in self.verification],
        }
        self.directory.mkdir(mode=0o700, exist_ok=True)
        write_atomic(self.path, (json.dumps(document, indent=2) + "\n").encode(), mode=PUBLIC_MODE)

    @classmethod
    def exists(cls, workspace: Workspace) -> bool:
        return (mini_dir(workspace) / RECORD_FILE).is_file()

    @classmethod
    def load(cls, workspace: Workspace) -> MiniRecord:
        path = mini_dir(workspace) / RECORD_FILE
        try:
            document = json.loads(path.read_bytes())
        except FileNotFoundError:
            raise ClusterStateError(
                f"no mini cluster in {workspace.root} ({path} does not exist)",
                hint="create one with `constellation mini up`",
            ) from None
        except (OSError, ValueError) as err:
            raise ClusterStateError(f"{path} is unreadable or corrupt: {err}") from None
        try:
            if document.get("version") != RECORD_VERSION:
                raise ValueError(f"version must be {RECORD_VERSION}")
            return cls(
                root=workspace.root.resolve(),
                created_files=[str(f) for f in document["createdFiles"]],
                processes=[ProcessRecord.from_dict(p) for p in document["processes"]],
                nodes=[MiniNode.from_dict(n) for n in document["nodes"]],
                image_version=str(document["imageVersion"]),
                joinservice_port=int(document["joinServicePort"]),
                joinservice_measurements=Measurements.from_dict(
                    document["joinServiceMeasurements"]
                ),
                keyservice_port=document.get("keyServicePort"),
                joinservice_running=bool(document.get("joinServiceRunning")),
                verification=[VerificationEndpoint.from_dict(v) for v in document["verification"]],
            )
        except (KeyError, TypeError, ValueError, MiniError) as err:
            raise ClusterStateError(
                f"{path} is corrupt: {err}",
                hint="stop the processes listed in it by hand, then remove the mini/ directory",
            ) from None


def save_init_secret(record: MiniRecord, secret: InitSecret) -> None:
    write_atomic(record.init_secret_path, secret.reveal().hex().encode(), mode=SECRET_MODE)


def load_init_secret(record: MiniRecord) -> InitSecret:
    try:
        return InitSecret(bytes.fromhex(record.init_secret_path.read_text().strip()))
    except (OSError, ValueError):
        raise ClusterStateError(
            f"the init secret {record.init_secret_path} is missing or corrupt",
            hint="recreate the cluster: `constellation mini down` then `constellation mini up`",
        ) from None


# -- Kubernetes components ---------------------------------------------------------------------


def find_in_checkout(relative: Path) -> Path | None:
    """``relative`` (a file) in the repository checkout above this file or the working directory.

    Mini mode runs from a checkout: the components lock and the charts live there, not in the
    installed package.
    """
    for start in (Path(__file__).resolve(), Path.cwd().resolve()):
        for parent in (start, *start.parents):
            candidate = parent / relative
            if candidate.is_file():
                return candidate
    return None


def find_lock() -> Path:
    """The components lock: ``$CONSTELLATION_K8S_LOCK``, else found in the checkout."""
    override = os.environ.get(LOCK_ENV)
    if override:
        return Path(override)
    found = find_in_checkout(LOCK_RELATIVE)
    if found is not None:
        return found
    raise MiniError(
        f"no {LOCK_RELATIVE} found to pin the Kubernetes binaries",
        hint=f"run from the repository or set ${LOCK_ENV}",
    )


def kubernetes_binaries(names: tuple[str, ...]) -> tuple[ComponentLock, InstalledComponents]:
    """The pinned binaries from the cache, each checked against its recorded SHA-256.

    Checked once per CLI invocation for a given lock and cache (the binaries are ~100 MB
    each); the nodes check every component's hash again before they install it.
    """
    try:
        lock_path = find_lock()
        version = load_lock(lock_path).kubernetes_version
        return _verified(lock_path, default_cache_dir(version), names)
    except KubernetesError as err:
        raise MiniError(f"the Kubernetes binaries are not ready: {err}", hint=SETUP_HINT) from None


@functools.lru_cache(maxsize=8)
def _verified(
    lock_path: Path, directory: Path, names: tuple[str, ...]
) -> tuple[ComponentLock, InstalledComponents]:
    lock = load_lock(lock_path)
    return lock, verified_components(lock, directory, names)


def component_hashes(installed: InstalledComponents) -> dict[str, str]:
    """The SHA-256 of each binary, as recorded in the cache and just verified against it."""
    record = CacheRecord.load(installed.directory)
    return {name: record.entries[name].sha256 for name in sorted(installed.paths)}


def join_components_document(lock: ComponentLock) -> dict[str, Any]:
    """``components.json`` for joining nodes: each binary by file URL and pinned hash."""
    _, installed = kubernetes_binaries(JOIN_COMPONENTS)
    hashes = component_hashes(installed)
    return {
        "kubernetesVersion": lock.kubernetes_version,
        "components": [
            {
                "name": name,
                "url": installed.path(name).as_uri(),
                "hash": "sha256:" + hashes[name],
                "installPath": f"/usr/local/bin/{name}",
                "extract": False,
            }
            for name in JOIN_COMPONENTS
        ],
    }


# -- joining and teardown ----------------------------------------------------------------------


def wait_joined(
    list_nodes: Callable[[], set[str]],
    names: set[str],
    *,
    timeout: float = JOIN_TIMEOUT_S,
    alive: Callable[[], list[str]] | None = None,
    max_backoff: float = 5.0,
) -> None:
    """Wait (bounded) until every name in ``names`` is a registered Node object.

    Only a definitive answer ends the wait before ``timeout``: ``alive`` returns the names of
    nodes whose bootstrapper exited (such a node cannot join any more), and ``list_nodes`` may
    raise a definitive ``KubernetesAPIError`` (403, unusable kubeconfig). An API server that is
    briefly away (``APIServerUnavailableError``: refused, timed out, 429/5xx; a control plane
    restarting) is asked again with exponential backoff up to ``max_backoff`` seconds.
    """
    deadline = time.monotonic() + timeout
    missing = set(names)
    unavailable: APIServerUnavailableError | None = None
    delay = JOIN_POLL_S
    while True:
        try:
            missing = names - list_nodes()
            unavailable, delay = None, JOIN_POLL_S
        except APIServerUnavailableError as err:
            unavailable, delay = err, min(delay * 2, max_backoff)
        if not missing:
            return
        dead = alive() if alive is not None else []
        if dead:
            raise JoinTimeoutError(
                f"node(s) {', '.join(sorted(dead))} stopped before joining",
                hint="see the node's bootstrapper log under mini/logs/",
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        time.sleep(min(delay, remaining))
    if unavailable is not None:
        raise JoinTimeoutError(
            f"could not see whether node(s) {', '.join(sorted(missing))} joined within "
            f"{timeout:.0f}s: {unavailable}",
            hint="start the control plane again, then check with `constellation verify --all`",
        )
    raise JoinTimeoutError(
        f"node(s) {', '.join(sorted(missing))} did not join within {timeout:.0f}s",
        hint="see mini/logs/joinservice.log and the nodes' bootstrapper logs",
    )


def exited_bootstrappers(record: MiniRecord, names: set[str]) -> list[str]:
    return sorted(n.name for n in record.nodes if n.name in names and not is_running(n.supervisor))


def nodes_missing_verification(record: MiniRecord, registered: set[str]) -> list[str]:
    """Registered, powered-on nodes whose VerificationService does not run.

    A worker can become a Node after ``mini node add`` stopped waiting for it (a late joiner):
    nobody started its VerificationService then. In a real cluster that is a DaemonSet, which
    Kubernetes starts on every new Node; in mini mode the next CLI command that sees the
    registered Nodes reconciles (:func:`reconcile_verification`).
    """
    running = {v.node for v in record.verification if is_running(v.process)}
    return [
        node.name
        for node in record.nodes
        if node.name in registered and node.name not in running and is_running(node.supervisor)
    ]


def reconcile_verification(
    workspace: Workspace,
    record: MiniRecord,
    registered: set[str],
    *,
    progress: Callable[[str], None],
) -> list[str]:
    """Start the VerificationService of every node :func:`nodes_missing_verification` names.

    Called by ``resume_services`` (``recover``); ``mini node add`` and ``verify`` are the
    other commands in a position to notice a late joiner.
    """
    from constellation.cli.commands.apply import start_verification

    missing = nodes_missing_verification(record, registered)
    for name in missing:
        record.verification = [v for v in record.verification if v.node != name]
        start_verification(workspace, record, name, progress=progress)
    return missing


def stop_cluster(
    workspace: Workspace, *, progress: Callable[[str], None] | None = None
) -> tuple[str, ...]:
    """Stop every recorded process that is still ours and keep every file (a full shutdown).

    Nodes keep their state disks, node state, control-plane files and swtpm state, so
    ``start_nodes`` can boot them again. A control-plane child its bootstrapper did not end in
    time (it runs in its own session) is ended too, but only if its command line still names
    that node's control-plane directory.
    """
    record = MiniRecord.load(workspace)
    stopped = []
    for process in reversed(record.processes):
        if stop(process):
            stopped.append(process.name)
            if progress is not None:
                progress(f"stopped {process.name} (pid {process.pid})")
    for node in record.nodes:
        stopped.extend(_end_control_plane_orphans(node.directory / "state" / "control-plane"))
    stopped.extend(_stop_unrecorded(record, progress))
    record.joinservice_running = False
    record.save()
    return tuple(stopped)


def _end_control_plane_orphans(directory: Path) -> list[str]:
    try:
        pids = json.loads((directory / "pids.json").read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(pids, dict):
        return []
    marker = str(directory.resolve()).encode()
    ended = []
    for name, pid in pids.items():
        if not isinstance(pid, int) or pid <= 1:
            continue
        try:
            if marker not in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue
        except OSError:
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
        ended.append(str(name))
    return ended


def _stop_unrecorded(record: MiniRecord, progress: Callable[[str], None] | None) -> list[str]:
    """End what still runs for this workspace although no record names it (module docstring)."""
    ended = stop_marked(record.directory)
    if progress is not None:
        for name in ended:
            progress(f"stopped {name}, found running for this workspace")
    return ended


@dataclass(frozen=True)
class DownReport:
    stopped: tuple[str, ...]
    removed: tuple[str, ...]


def down(workspace: Workspace, *, progress: Callable[[str], None] | None = None) -> DownReport:
    """Stop every recorded process that is still ours, remove every file mini mode created."""
    if not MiniRecord.exists(workspace):
        return DownReport((), ())
    record = MiniRecord.load(workspace)
    stopped = []
    for process in reversed(record.processes):
        if stop(process):
            stopped.append(process.name)
            if progress is not None:
                progress(f"stopped {process.name} (pid {process.pid})")
    stopped.extend(_stop_unrecorded(record, progress))
    for node in record.nodes:
        remove_vtpm_sockets(node)
    removed = []
    for name in record.created_files:
        path = workspace.root / name
        if path.is_file() or path.is_symlink():
            path.unlink()
            removed.append(name)
    shutil.rmtree(record.directory)
    removed.append(MINI_DIR + "/")
    return DownReport(tuple(stopped), tuple(removed))


WORKSPACE_FILES = (CONFIG_FILE, STATE_FILE, MASTER_SECRET_FILE, KUBECONFIG_FILE)


@contextlib.contextmanager
def created_files_tracked(record: MiniRecord) -> Iterator[None]:
    """Record which workspace files appeared during the block (``down`` removes those)."""
    before = {name for name in WORKSPACE_FILES if (record.root / name).exists()}
    try:
        yield
    finally:
        for name in WORKSPACE_FILES:
            appeared = name not in before and (record.root / name).exists()
            if appeared and name not in record.created_files:
                record.created_files.append(name)
        record.save()
