"""The recovery server: ``recoverproto.API/Recover``, how an initialized control-plane node
gets its disk key back after a full-cluster shutdown (DESIGN.md §2 step 6).

After every node went down there is no JoinService to hand out a rejoin ticket. A control-plane
node whose (bounded) rejoin attempts failed serves this API over aTLS on its init port: the
node attests, and the CLI (``constellation recover``) checks the evidence against the image's
measurements *with PCR 15 = the mark of its cluster ID* before it sends the master secret, so
only a node of this cluster ever sees the secret.

A ``Recover`` is handled in a fixed order; nothing changes on the node before step 3 passed:

1. **Validate** (INVALID_ARGUMENT): master secret 16..512 bytes, master salt 32 bytes.
2. **Disk key**: ``derive_key(master_secret, master_salt, "key-" + lowercase(uuid), 32)`` for
   the UUID of the node's state disk (which must still be the UUID in its node state). If no
   keyslot opens with it: PERMISSION_DENIED, nothing else (the only proof the caller holds the
   master secret is that the key opens this disk).
3. **Cluster ID**: the measurement secret derived from the same secret must reproduce the
   cluster ID of the node state with the node state's measurement salt; otherwise
   PERMISSION_DENIED too (a secret that opens the disk but names another cluster means the node
   state does not belong to this disk).
4. **Node lock**: PCR 15 is re-marked with the cluster ID if the reboot reset it (never a second
   time while it still carries the mark). The node supervisor marks it already before serving,
   from the node state, so that the CLI can check the node is of its cluster; this step keeps
   the server correct on its own.
5. **Control plane**: the node's control plane is started again from its installed binaries
   and its PKI and etcd data (``on_recovered``), then ``RecoverResponse{disk_uuid}`` answers.

Recovery happens once: a second ``Recover`` after a successful one gets FAILED_PRECONDITION.
Request bytes that are not a ``RecoverMessage`` never reach the servicer: every
``AttestedServer`` answers them with INVALID_ARGUMENT (``attestation.service.status``).
Errors are mapped to status codes in one place (:func:`status_for`); messages never contain
the secret or the keys derived from it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import grpc
import structlog

from constellation.attestation.errors import ConstellationError
from constellation.attestation.kdf import derive_cluster_id, derive_measurement_secret
from constellation.bootstrapper.errors import BootstrapperError
from constellation.bootstrapper.initserver import (
    MAX_MASTER_SECRET_LENGTH,
    MIN_MASTER_SECRET_LENGTH,
    SALT_LENGTH,
    NodeLatch,
    state_disk_key,
)
from constellation.bootstrapper.nodestate import NodeState
from constellation.bootstrapper.statedisk import DiskKey, StateDisk
from constellation.proto import recover_pb2, recover_pb2_grpc

_log = structlog.get_logger("constellation.bootstrapper.recover")


class RecoveryError(BootstrapperError):
    """Root of the errors of a ``Recover`` request."""


class RecoverRequestError(RecoveryError):
    """The request is malformed (INVALID_ARGUMENT); the message names the field."""


class RecoverSecretError(RecoveryError):
    """The master secret does not open this node's state disk or names another cluster."""


class AlreadyRecoveredError(RecoveryError):
    """This node was recovered already (or a recovery is running right now)."""


class RecoveryNodeError(RecoveryError):
    """The node itself is inconsistent (its disk is not the one its node state names)."""


def status_for(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The one place that maps a ``Recover`` error to a gRPC status and a caller-safe message."""
    if isinstance(error, RecoverRequestError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(error)
    if isinstance(error, RecoverSecretError):
        return grpc.StatusCode.PERMISSION_DENIED, str(error)
    if isinstance(error, AlreadyRecoveredError):
        return grpc.StatusCode.FAILED_PRECONDITION, str(error)
    if isinstance(error, ConstellationError):
        return grpc.StatusCode.INTERNAL, str(error)
    return grpc.StatusCode.INTERNAL, "internal error; see the node's log"


def validate_recover_message(request: recover_pb2.RecoverMessage) -> None:
    if not MIN_MASTER_SECRET_LENGTH <= len(request.master_secret) <= MAX_MASTER_SECRET_LENGTH:
        raise RecoverRequestError(
            f"master_secret must be {MIN_MASTER_SECRET_LENGTH}..{MAX_MASTER_SECRET_LENGTH} "
            f"bytes, got {len(request.master_secret)}"
        )
    if len(request.master_salt) != SALT_LENGTH:
        raise RecoverRequestError(
            f"master_salt must be {SALT_LENGTH} bytes, got {len(request.master_salt)}"
        )


class RecoveryServer(recover_pb2_grpc.APIServicer):
    """Serves ``recoverproto.API``; see the module docstring for the order of the steps.

    ``on_recovered(disk_key)`` restarts the control plane; it runs inside the request so the
    CLI's answer means "the control plane is back". ``recovered`` is set afterwards.
    """

    def __init__(
        self,
        *,
        node_state: NodeState,
        state_disk: StateDisk,
        node_lock: NodeLatch,
        on_recovered: Callable[[DiskKey], None],
    ) -> None:
        self._state = node_state
        self._disk = state_disk
        self._lock = node_lock
        self._on_recovered = on_recovered
        self._busy = threading.Lock()
        self.recovered = threading.Event()

    def Recover(
        self, request: recover_pb2.RecoverMessage, context: grpc.ServicerContext
    ) -> recover_pb2.RecoverResponse:
        try:
            return self._recover(request)
        except ConstellationError as error:
            code, message = status_for(error)
            _log.warning("recover.refused", code=code.name, error=message)
            context.abort(code, message)
        except Exception:
            _log.exception("recover.internal_error")
            context.abort(grpc.StatusCode.INTERNAL, "internal error; see the node's log")
        raise AssertionError("unreachable: context.abort raises")  # pragma: no cover

    def _recover(self, request: recover_pb2.RecoverMessage) -> recover_pb2.RecoverResponse:
        validate_recover_message(request)
        if not self._busy.acquire(blocking=False):
            raise AlreadyRecoveredError("a recovery is running on this node right now")
        try:
            if self.recovered.is_set():
                raise AlreadyRecoveredError("this node was recovered already")
            return self._recover_exclusive(request)
        finally:
            self._busy.release()

    def _recover_exclusive(
        self, request: recover_pb2.RecoverMessage
    ) -> recover_pb2.RecoverResponse:
        disk_uuid = self._disk.uuid()
        if disk_uuid != self._state.disk_uuid:
            raise RecoveryNodeError(
                f"the state disk's UUID {disk_uuid} differs from the recorded "
                f"{self._state.disk_uuid}"
            )
        key = state_disk_key(request.master_secret, request.master_salt, disk_uuid)
        if not self._disk.key_matches(key):
            raise RecoverSecretError(
                "the master secret does not open this node's state disk; send the master "
                "secret of this cluster"
            )
        measurement_secret = derive_measurement_secret(request.master_secret, request.master_salt)
        cluster_id = derive_cluster_id(measurement_secret, self._state.measurement_salt)
        if cluster_id != self._state.cluster_id:
            raise RecoverSecretError(
                "the master secret opens the state disk but does not reproduce this node's "
                "cluster ID; the node state does not belong to this disk"
            )
        if not self._lock.is_initialized():
            if not self._lock.try_lock(cluster_id):
                raise RecoveryNodeError("the node lock could not be re-marked after a reboot")
            _log.info("recover.relocked", cluster_id=cluster_id.hex())
        self._on_recovered(key)
        self.recovered.set()
        _log.info("recover.done", cluster_id=cluster_id.hex(), disk_uuid=disk_uuid)
        return recover_pb2.RecoverResponse(disk_uuid=disk_uuid)
