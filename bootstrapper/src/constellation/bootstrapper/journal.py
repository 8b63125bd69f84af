"""The init/join journal: what makes a crash between two irreversible steps survivable.

A node commits to a cluster in steps that cannot be undone within one boot: the node lock
(PCR 15, reset only by a reboot) and the rekey of the state disk (the random initial passphrase
lives only in the bootstrapper's memory). A bootstrapper that dies between two such steps must
find out on restart where it stopped. Before each step it therefore writes one record
(:func:`~constellation.bootstrapper.atomicfile.write_atomic`, so a reader sees the previous or
the new record, never a mix) to ``journal.json`` beside the node state::

    {"version": 1, "step": "rekey", "path": "init",
     "diskUUID": "<lower-case LUKS UUID>", "clusterID": "<base64, 32 bytes, or null>"}

The record names a step, a path and public values only: no key, passphrase or secret is ever
journaled (the cluster ID and the disk UUID are public by design).

Steps, in order (a record is written *before* its step runs)::

    format ──► lock ──► rekey ──► control-plane (init) / register (join) ──► state ──► (cleared)

``format``: the state disk is formatted with the UUID named here (chosen before formatting).
``lock``: the node lock is about to be taken for ``clusterID`` by ``path``. ``rekey``: the
state disk gets the cluster's key (crash-safe itself: :meth:`StateDisk.rekey` adds the new key
in a new keyslot before it kills the old one, so one of the two always opens the disk).
``control-plane``/``register``: the node starts its control plane or registers its Node.
``state``: the node state is about to be written; once it is, the journal is removed and the
node state is the only truth.

State machine of a restart without node state (:class:`~constellation.bootstrapper.node.Node`):

- **PCR 15 zero** (first boot, or a reboot reset it): nothing was committed in this boot. With
  a record, the disk is the one this node formatted (same UUID) and never held cluster data (no
  node state was written), so the node re-formats it itself with the same UUID, logs
  ``node.disk_reinitialized`` naming the interrupted step, and serves Init / joins again.
- **PCR 15 marked with the record's cluster ID, path init**: the bootstrapper died, the vTPM
  did not. The node serves Init in *resume* mode: an Init that derives the same cluster ID (the
  CLI repeats ``apply`` with the master secret and measurement salt its workspace saved) skips
  the lock and completes the remaining steps; the rekey completes with the new key (or, if the
  key never reached the disk, the disk is re-formatted under the same UUID first). An Init for
  another cluster is refused with what the admin must do.
- **PCR 15 marked, path join**: the JoinService hands a locked node only rejoin tickets (no
  kubelet certificate, no components), so the join cannot be completed in this boot; the node
  stops with a message telling the admin to reboot it (PCR 15 resets, see the first case).
- **PCR 15 marked without a matching record**: some other process took the lock; the node
  stops and says to reboot it.
- **Node state written, record ``state`` of an init**: the Init died before its answer (the
  admin's kubeconfig) reached the CLI. PCR 15 is re-marked if a reboot reset it, and the node
  resumes that Init as above instead of rejoining.

Crash points for tests: ``CONSTELLATION_BOOTSTRAPPER_FAILPOINT=<name>`` is read once by the
bootstrapper's entry point (:func:`failpoint_from_environment`); when the named point is
reached the process sends itself SIGKILL, exactly like a crash there. Names: ``journal.<step>``
(the record for ``<step>`` was written, the step not begun), ``format``, ``lock``,
``rekey.add``, ``rekey.kill``, ``control-plane``, ``register``, ``state`` (the step finished).
It only lets someone who controls the node's environment (who could kill the process anyway)
crash that node.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import re
import signal
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import structlog

from constellation.bootstrapper.atomicfile import SECRET_MODE, write_atomic
from constellation.bootstrapper.errors import BootstrapperError

_log = structlog.get_logger("constellation.bootstrapper.journal")

JOURNAL_FILE = "journal.json"
JOURNAL_VERSION = 1
FAILPOINT_ENV = "CONSTELLATION_BOOTSTRAPPER_FAILPOINT"
_MAX_FILE_SIZE = 4096
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_KEYS = frozenset({"version", "step", "path", "diskUUID", "clusterID"})
CLUSTER_ID_LENGTH = 32


class JournalError(BootstrapperError):
    """The journal is unreadable or corrupt, or a failpoint name is unknown."""


class Step(StrEnum):
    """The irreversible steps, in the order a node takes them."""

    FORMAT = "format"
    LOCK = "lock"
    REKEY = "rekey"
    CONTROL_PLANE = "control-plane"
    REGISTER = "register"
    STATE = "state"

    @property
    def rank(self) -> int:
        """Position in the sequence (``control-plane`` and ``register`` share one)."""
        return _RANK[self]


_RANK = {
    Step.FORMAT: 0,
    Step.LOCK: 1,
    Step.REKEY: 2,
    Step.CONTROL_PLANE: 3,
    Step.REGISTER: 3,
    Step.STATE: 4,
}


class JournalPath(StrEnum):
    """Which path committed (or was about to commit) the node."""

    INIT = "init"
    JOIN = "join"


FAILPOINTS = frozenset(
    {f"journal.{step.value}" for step in Step}
    | {"format", "lock", "rekey.add", "rekey.kill", "control-plane", "register", "state"}
)


@dataclass(frozen=True)
class JournalRecord:
    """One journal record: the step about to run, public values only."""

    step: Step
    disk_uuid: str
    path: JournalPath | None = None
    cluster_id: bytes | None = None

    def __post_init__(self) -> None:
        if not _UUID.fullmatch(self.disk_uuid):
            raise JournalError(f"diskUUID: expected a lower-case UUID, got {self.disk_uuid!r}")
        if self.cluster_id is not None and len(self.cluster_id) != CLUSTER_ID_LENGTH:
            raise JournalError(
                f"clusterID: expected {CLUSTER_ID_LENGTH} bytes, got {len(self.cluster_id)}"
            )
        past_lock = self.step.rank >= Step.LOCK.rank
        if past_lock != (self.path is not None and self.cluster_id is not None):
            raise JournalError(
                f"step {self.step.value}: a path and a cluster ID belong to the steps from "
                "'lock' on, and only to them"
            )

    def advance(self, step: Step) -> JournalRecord:
        return JournalRecord(step, self.disk_uuid, self.path, self.cluster_id)

    def to_json(self) -> bytes:
        document = {
            "version": JOURNAL_VERSION,
            "step": self.step.value,
            "path": None if self.path is None else self.path.value,
            "diskUUID": self.disk_uuid,
            "clusterID": None
            if self.cluster_id is None
            else base64.b64encode(self.cluster_id).decode(),
        }
        return (json.dumps(document, indent=2) + "\n").encode()


def parse_journal(data: bytes, *, source: str = "journal") -> JournalRecord:
    """Parse a record strictly; anything unexpected is ``JournalError`` naming the field."""
    if len(data) > _MAX_FILE_SIZE:
        raise JournalError(f"{source}: corrupt, larger than {_MAX_FILE_SIZE} bytes")
    try:
        document: Any = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise JournalError(f"{source}: corrupt, not valid JSON: {err}") from None
    if not isinstance(document, dict) or set(document) != _KEYS:
        raise JournalError(f"{source}: corrupt, expected exactly the keys {sorted(_KEYS)}")
    if type(document["version"]) is not int or document["version"] != JOURNAL_VERSION:
        raise JournalError(
            f"{source}: version: expected {JOURNAL_VERSION}, got {document['version']!r}"
        )
    try:
        step = Step(document["step"])
        path = None if document["path"] is None else JournalPath(document["path"])
    except ValueError as err:
        raise JournalError(f"{source}: {err}") from None
    if not isinstance(document["diskUUID"], str):
        raise JournalError(f"{source}: diskUUID: expected a string")
    cluster_id = _cluster_id(document["clusterID"], source)
    try:
        return JournalRecord(step, document["diskUUID"], path, cluster_id)
    except JournalError as err:
        raise JournalError(f"{source}: {err}") from None


def _cluster_id(value: object, source: str) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise JournalError(f"{source}: clusterID: expected a base64 string or null")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise JournalError(f"{source}: clusterID: not valid base64") from None


def failpoint_from_environment(environ: Mapping[str, str] | None = None) -> str | None:
    """The armed failpoint (read once, at start-up), or ``None``; an unknown name is refused."""
    name = (os.environ if environ is None else environ).get(FAILPOINT_ENV, "")
    if not name:
        return None
    if name not in FAILPOINTS:
        raise JournalError(
            f"{FAILPOINT_ENV}={name[:40]!r} names no failpoint; expected one of "
            f"{', '.join(sorted(FAILPOINTS))}"
        )
    return name


class Journal:
    """The journal of one node; one instance per file in a process (:func:`journal_for`).

    ``take_lock`` journals and takes the node lock under one mutex, so the init server and the
    join client (which race for the lock in one process) never leave a record naming the path
    that lost.
    """

    def __init__(self, path: Path, *, failpoint: str | None = None) -> None:
        self.path = Path(path)
        self.failpoint = failpoint
        self._mutex = threading.Lock()

    def read(self) -> JournalRecord | None:
        """The last record, or ``None`` if there is none."""
        try:
            with self.path.open("rb") as handle:
                data = handle.read(_MAX_FILE_SIZE + 1)
        except FileNotFoundError:
            return None
        except OSError as err:
            raise JournalError(f"cannot read the journal {self.path}: {err.strerror}") from None
        return parse_journal(data, source=str(self.path))

    def record(self, record: JournalRecord) -> None:
        """Write ``record`` durably before its step runs; then the ``journal.<step>`` point."""
        write_atomic(self.path, record.to_json(), mode=SECRET_MODE)
        _log.info(
            "journal.step",
            step=record.step.value,
            path=None if record.path is None else record.path.value,
            disk_uuid=record.disk_uuid,
        )
        self.crash_point(f"journal.{record.step.value}")

    def take_lock(
        self,
        try_lock: Callable[[bytes], bool],
        *,
        path: JournalPath,
        disk_uuid: str,
        cluster_id: bytes,
    ) -> bool:
        """Journal ``lock`` for ``path``, take the node lock; restore the record if it was lost."""
        with self._mutex:
            previous = self.read()
            self.record(JournalRecord(Step.LOCK, disk_uuid, path, cluster_id))
            if not try_lock(cluster_id):
                if previous is None:
                    self.clear()
                else:
                    write_atomic(self.path, previous.to_json(), mode=SECRET_MODE)
                return False
            self.crash_point("lock")
            return True

    def clear(self) -> None:
        """Forget the journal (after the node state was written)."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def crash_point(self, name: str) -> None:
        """Die here, as in a crash, if ``name`` is the armed failpoint."""
        if self.failpoint is not None and name == self.failpoint:
            _log.warning("journal.failpoint", failpoint=name)
            os.kill(os.getpid(), signal.SIGKILL)


_JOURNALS: dict[Path, Journal] = {}
_JOURNALS_MUTEX = threading.Lock()


def journal_for(node_state_path: Path, *, failpoint: str | None = None) -> Journal:
    """The process's journal beside ``node_state_path`` (one shared instance per file).

    The first caller with a ``failpoint`` arms it (the entry point, once, at start-up).
    """
    key = (Path(node_state_path).parent / JOURNAL_FILE).absolute()
    with _JOURNALS_MUTEX:
        journal = _JOURNALS.get(key)
        if journal is None:
            journal = _JOURNALS[key] = Journal(key, failpoint=failpoint)
        elif failpoint is not None:
            journal.failpoint = failpoint
        return journal
