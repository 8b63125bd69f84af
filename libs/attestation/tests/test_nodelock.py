"""The node lock on a real swtpm: taken exactly once, visible in PCR 15."""

from __future__ import annotations

import threading

import pytest

from constellation.attestation.measurements import pcr15_for_cluster_id
from constellation.attestation.nodelock import NodeLock, NodeLockError
from constellation.attestation.swtpm import Swtpm
from constellation.attestation.vtpm import TpmError, open_tpm, read_pcrs

pytestmark = pytest.mark.swtpm


def test_lock_is_taken_once_and_marks_pcr15(swtpm: Swtpm) -> None:
    cluster_id = b"\x07" * 32
    lock = NodeLock(swtpm.tcti)
    assert not lock.is_initialized()
    assert lock.try_lock(cluster_id)
    assert lock.locked
    assert lock.is_initialized()
    assert not lock.try_lock(cluster_id)
    with open_tpm(swtpm.tcti) as esapi:
        _, pcrs = read_pcrs(esapi, (15,))
    assert pcrs[15] == pcr15_for_cluster_id(cluster_id)


def test_concurrent_racers_get_exactly_one_lock(swtpm: Swtpm) -> None:
    lock = NodeLock(swtpm.tcti)
    results: list[bool] = []
    barrier = threading.Barrier(4)

    def race(index: int) -> None:
        barrier.wait()
        results.append(lock.try_lock(bytes([index]) * 32))

    threads = [threading.Thread(target=race, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(results) == [False, False, False, True]


def test_other_process_lock_is_respected(swtpm: Swtpm) -> None:
    assert NodeLock(swtpm.tcti).try_lock(b"first")
    second = NodeLock(swtpm.tcti)
    assert second.is_initialized()
    assert not second.try_lock(b"second")
    assert not second.locked


def test_bad_cluster_id_and_unreachable_tpm(swtpm: Swtpm) -> None:
    with pytest.raises(NodeLockError):
        NodeLock(swtpm.tcti).try_lock(b"")
    with pytest.raises(NodeLockError):
        NodeLock(swtpm.tcti).try_lock(b"x" * 1025)
    assert not NodeLock(swtpm.tcti).is_initialized()
    with pytest.raises(TpmError):
        NodeLock("swtpm:path=/nonexistent/sock").is_initialized()
