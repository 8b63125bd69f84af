"""What ``apply`` demands of the first node before the master secret leaves this machine.

The node is what ``mini up`` launches: a swtpm whose AK the platform CA certified with the
node's name and role, measured from the image by the mini firmware. ``init_validator`` must
accept exactly that node as a control plane and refuse, naming the failed check, anything else:
another image, a node already initialized, no event log, a worker, an uncertified AK, and an
AK certified by another platform.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from constellation.attestation import atls
from constellation.attestation.errors import ValidationError
from constellation.attestation.evidence import Issuer, Validator
from constellation.attestation.identity import Role
from constellation.attestation.identity.ca import PlatformCA
from constellation.attestation.nodelock import NodeLock
from constellation.attestation.swtpm import Swtpm
from constellation.attestation.testing.platform import node_issuer, platform_roots
from constellation.attestation.vtpm import VtpmIssuer, provision_ak
from constellation.cli.commands.apply import init_validator
from constellation.cli.mini import image
from constellation.cli.mini.firmware import boot_measure

pytestmark = pytest.mark.swtpm

NODE = "mini-cp-0"


@pytest.fixture
def built(tmp_path: Path) -> Path:
    destination = tmp_path / "image"
    image.build_image(destination, kubernetes_version="v1.36.3", components={}, version="apply")
    return destination


@contextmanager
def _node(issuer: Issuer) -> Iterator[str]:
    server = atls.AttestedServer(issuer)
    port = server.add_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(None).wait(5)


def _validator(built: Path) -> Validator:
    measurements = image.measurements_for(image.read_image(built))
    return init_validator("qemu-vtpm", measurements, platform_roots())


def _checks(target: str, built: Path) -> set[str]:
    with pytest.raises(ValidationError) as info:
        atls.connect(target, [_validator(built)], timeout=30).close()
    return {failure.check for failure in info.value.failures}


def _booted(swtpm: Swtpm, built: Path, tmp_path: Path) -> bytes:
    return boot_measure(swtpm.tcti, built, tmp_path / "eventlog.bin")


def test_a_freshly_booted_control_plane_from_the_image_is_attested(
    built: Path, swtpm: Swtpm, tmp_path: Path
) -> None:
    log = _booted(swtpm, built, tmp_path)
    with (
        _node(node_issuer(swtpm.tcti, NODE, Role.CONTROL_PLANE, event_log=log)) as target,
        atls.connect(target, [_validator(built)], timeout=30) as channel,
    ):
        identity = channel.server.identity
    assert identity is not None
    assert (identity.name, identity.role) == (NODE, Role.CONTROL_PLANE)


def test_an_initialized_node_is_refused_on_pcr_15(
    built: Path, swtpm: Swtpm, tmp_path: Path
) -> None:
    log = _booted(swtpm, built, tmp_path)
    assert NodeLock(swtpm.tcti).try_lock(b"\x01" * 32)
    with _node(node_issuer(swtpm.tcti, NODE, Role.CONTROL_PLANE, event_log=log)) as target:
        assert _checks(target, built) == {"pcr[15]"}


def test_a_node_booted_from_another_image_is_refused_naming_its_pcrs(
    built: Path, swtpm: Swtpm, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    image.copy_image(built, other)
    target_file = other / "constellation" / "attestation" / "kdf.py"
    target_file.write_bytes(target_file.read_bytes() + b"\n# other\n")
    log = boot_measure(swtpm.tcti, other, tmp_path / "eventlog.bin")
    with _node(node_issuer(swtpm.tcti, NODE, Role.CONTROL_PLANE, event_log=log)) as target:
        assert _checks(target, built) == {"pcr[4]"}


def test_a_node_without_an_event_log_is_refused(built: Path, swtpm: Swtpm, tmp_path: Path) -> None:
    _booted(swtpm, built, tmp_path)
    with _node(node_issuer(swtpm.tcti, NODE, Role.CONTROL_PLANE, event_log=None)) as target:
        assert "eventlog.present" in _checks(target, built)


def test_a_worker_is_refused_init(built: Path, swtpm: Swtpm, tmp_path: Path) -> None:
    log = _booted(swtpm, built, tmp_path)
    issuer = node_issuer(swtpm.tcti, "mini-worker-0", Role.WORKER, event_log=log)
    with _node(issuer) as target:
        assert _checks(target, built) == {"identity.role"}


def test_a_node_without_an_ak_certificate_is_refused(
    built: Path, swtpm: Swtpm, tmp_path: Path
) -> None:
    log = _booted(swtpm, built, tmp_path)
    provision_ak(swtpm.tcti)  # a genuine TPM-resident AK, but no platform vouches for it
    with _node(VtpmIssuer(swtpm.tcti, event_log=log)) as target:
        assert _checks(target, built) == {"ak.certificate"}


def test_a_node_certified_by_another_platform_is_refused(
    built: Path, swtpm: Swtpm, tmp_path: Path
) -> None:
    log = _booted(swtpm, built, tmp_path)
    other = PlatformCA.generate("another platform CA")
    issuer = node_issuer(swtpm.tcti, NODE, Role.CONTROL_PLANE, ca=other, event_log=log)
    with _node(issuer) as target:
        assert _checks(target, built) == {"ak.certificate.chain"}


def _resuming_checks(target: str, built: Path, cluster_id: bytes) -> set[str] | None:
    measurements = image.measurements_for(image.read_image(built))
    validator = init_validator("qemu-vtpm", measurements, platform_roots(), resuming=cluster_id)
    try:
        atls.connect(target, [validator], timeout=30).close()
    except ValidationError as refused:
        return {failure.check for failure in refused.failures}
    return None


def test_a_repeated_init_accepts_the_mark_of_its_own_cluster_only(
    built: Path, swtpm: Swtpm, tmp_path: Path
) -> None:
    """The node took its lock for this workspace's Init and died: `apply` may repeat it."""
    log = _booted(swtpm, built, tmp_path)
    ours = b"\x01" * 32
    assert NodeLock(swtpm.tcti).try_lock(ours)
    with _node(node_issuer(swtpm.tcti, NODE, Role.CONTROL_PLANE, event_log=log)) as target:
        assert _resuming_checks(target, built, ours) is None
        # Another cluster's mark is refused, named as a fresh node's PCR 15 check.
        assert _resuming_checks(target, built, b"\x02" * 32) == {"pcr[15]"}
