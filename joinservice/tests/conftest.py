"""Fixtures of the JoinService tests: swtpm-backed nodes measured like mini mode's firmware.

A node is a real swtpm whose PCRs 4/9/11 were extended with the digests of an "image" and which
carries the matching TCG event log; its AK is certified by the test platform CA
(``attestation.testing.platform``) with a unique worker name; its ``VtpmIssuer`` produces real
quotes. Two nodes measured
from the same image have identical PCRs but different attestation keys (different TPM seeds),
which is what the disk-binding tests rely on.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from constellation.attestation.identity import Role
from constellation.attestation.measurements import Measurements
from constellation.attestation.swtpm import Swtpm
from constellation.attestation.testing.platform import node_issuer
from constellation.attestation.vtpm import VtpmIssuer, firmware_measure, open_tpm, read_pcrs

IMAGE = (b"kernel", b"initrd", b"uki")
IMAGE_PCRS = (4, 9, 11)


@dataclass
class Node:
    tpm: Swtpm
    issuer: VtpmIssuer
    event_log: bytes

    def pcrs(self) -> dict[int, bytes]:
        with open_tpm(self.tpm.tcti) as esapi:
            return read_pcrs(esapi)[1]


_names = itertools.count()


def measure(
    tpm: Swtpm,
    image: tuple[bytes, ...] = IMAGE,
    *,
    name: str | None = None,
    role: Role = Role.WORKER,
) -> Node:
    log = b""
    for pcr, part in zip(IMAGE_PCRS, image, strict=True):
        log = firmware_measure(tpm.tcti, log, pcr, hashlib.sha256(part).digest(), part)
    issuer = node_issuer(tpm.tcti, name or f"node-{next(_names)}", role, event_log=log)
    return Node(tpm, issuer, log)


def image_measurements(node: Node) -> Measurements:
    """The measurements of the node's image (PCRs 4, 9, 11, enforced)."""
    pcrs = node.pcrs()
    return Measurements.from_dict({str(i): pcrs[i].hex() for i in IMAGE_PCRS})


def write_mount(directory: Path, generation: str, files: dict[str, bytes]) -> None:
    """Write files the way the kubelet updates a ConfigMap volume: a new hidden directory,
    then an atomic swap of the ``..data`` symlink the visible names point through."""
    target = directory / f"..{generation}"
    target.mkdir()
    for name, data in files.items():
        (target / name).write_bytes(data)
    tmp = directory / "..data_tmp"
    tmp.symlink_to(target.name)
    os.replace(tmp, directory / "..data")
    for name in files:
        link = directory / name
        if not link.is_symlink():
            link.symlink_to(f"..data/{name}")


@pytest.fixture
def make_nodes(
    swtpm_factory: Callable[[int], list[Swtpm]],
) -> Callable[..., list[Node]]:
    def make(count: int, image: tuple[bytes, ...] = IMAGE) -> list[Node]:
        return [measure(tpm, image) for tpm in swtpm_factory(count)]

    return make
