"""The node lock: a one-way latch that marks a node as belonging to one cluster.

State machine: ``unlocked -> locked``, never back. Taking the lock extends PCR 15 with
``TPM2_PCR_Event(15, cluster_id)``, so every later quote shows the node as initialized
(PCR 15 ≠ 0) for exactly that cluster; only a reboot (a TPM reset) clears it. The init server
and the join client race for the lock on a node; whichever calls ``try_lock`` first commits,
the other gets ``False``. The lock is also refused if PCR 15 is already non-zero (the node was
initialized earlier in this boot by another process).

Atomicity: within one process the mutex makes ``try_lock`` a test-and-set. A TPM (and swtpm)
serves several connections interleaved, so two *processes* could both see PCR 15 at zero; the
lock therefore reads PCR 15 back after marking it and raises ``NodeLockError`` if the value is
not exactly its own mark, instead of reporting a lock it cannot vouch for. The bootstrapper
runs its init server and join client in one process, which is what the latch is built for.
"""

from __future__ import annotations

import threading

from constellation.attestation.errors import AttestationError
from constellation.attestation.measurements import pcr15_for_cluster_id
from constellation.attestation.vtpm import open_tpm, read_pcrs

PCR_NODE_LOCK = 15
CLUSTER_ID_MIN_SIZE = 1
# TPM2B_EVENT carries at most 1024 bytes.
CLUSTER_ID_MAX_SIZE = 1024


class NodeLockError(AttestationError):
    """The node lock could not be taken or read (bad cluster ID, TPM failure)."""


class NodeLock:
    """A thread-safe, take-once latch backed by PCR 15 of the TPM at ``tcti``."""

    def __init__(self, tcti: str) -> None:
        self._tcti = tcti
        self._mutex = threading.Lock()
        self._locked = False

    @property
    def locked(self) -> bool:
        """Whether this process took the lock."""
        return self._locked

    def is_initialized(self) -> bool:
        """Whether PCR 15 is non-zero, i.e. some process took the lock in this boot."""
        with open_tpm(self._tcti) as esapi:
            _, values = read_pcrs(esapi, (PCR_NODE_LOCK,))
        return any(values[PCR_NODE_LOCK])

    def try_lock(self, cluster_id: bytes) -> bool:
        """Take the lock for ``cluster_id``; ``True`` exactly once per boot, else ``False``."""
        if not CLUSTER_ID_MIN_SIZE <= len(cluster_id) <= CLUSTER_ID_MAX_SIZE:
            raise NodeLockError(
                f"cluster ID must have 1..{CLUSTER_ID_MAX_SIZE} bytes, got {len(cluster_id)}"
            )
        from tpm2_pytss.constants import ESYS_TR

        with self._mutex:
            if self._locked:
                return False
            with open_tpm(self._tcti) as esapi:
                _, values = read_pcrs(esapi, (PCR_NODE_LOCK,))
                if any(values[PCR_NODE_LOCK]):
                    return False
                esapi.pcr_event(ESYS_TR.PCR15, bytes(cluster_id))
                self._locked = True
                _, after = read_pcrs(esapi, (PCR_NODE_LOCK,))
            if after[PCR_NODE_LOCK] != pcr15_for_cluster_id(cluster_id):
                raise NodeLockError(
                    "PCR 15 was marked by another process at the same time; the node lock "
                    "state is ambiguous until the next reboot"
                )
            return True
