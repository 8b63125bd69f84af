"""What ``apply`` demands of the first node before the master secret leaves this machine."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from constellation.attestation import atls
from constellation.attestation.errors import ValidationError
from constellation.attestation.nodelock import NodeLock
from constellation.attestation.swtpm import Swtpm
from constellation.attestation.vtpm import VtpmIssuer
from constellation.cli.commands.apply import init_validator
from constellation.cli.mini import image
from constellation.cli.mini.firmware import boot_measure

pytestmark = pytest.mark.swtpm


@pytest.fixture
def built(tmp_path: Path) -> Path:
    destination = tmp_path / "image"
    image.build_image(destination, kubernetes_version="v1.36.3", components={}, version="apply")
    return destination


@contextmanager
def _node(swtpm: Swtpm, log: bytes | None) -> Iterator[str]:
    server = atls.AttestedServer(VtpmIssuer(swtpm.tcti, event_log=log))
    port = server.add_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(None).wait(5)


def _checks(target: str, built: Path) -> set[str]:
    validator = init_validator("qemu-vtpm", image.measurements_for(image.read_image(built)))
    with pytest.raises(ValidationError) as info:
        atls.connect(target, [validator], timeout=30).close()
    return {failure.check for failure in info.value.failures}


def test_a_freshly_booted_node_from_the_image_is_attested(
    built: Path, swtpm: Swtpm, tmp_path: Path
) -> None:
    log = boot_measure(swtpm.tcti, built, tmp_path / "eventlog.bin")
    validator = init_validator("qemu-vtpm", image.measurements_for(image.read_image(built)))
    with _node(swtpm, log) as target:
        atls.connect(target, [validator], timeout=30).close()


def test_an_initialized_node_is_refused_on_pcr_15(
    built: Path, swtpm: Swtpm, tmp_path: Path
) -> None:
    log = boot_measure(swtpm.tcti, built, tmp_path / "eventlog.bin")
    assert NodeLock(swtpm.tcti).try_lock(b"\x01" * 32)
    with _node(swtpm, log) as target:
        assert _checks(target, built) == {"pcr[15]"}


def test_a_node_booted_from_another_image_is_refused_naming_its_pcrs(
    built: Path, swtpm: Swtpm, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    image.copy_image(built, other)
    target_file = other / "constellation" / "attestation" / "kdf.py"
    target_file.write_bytes(target_file.read_bytes() + b"\n# other\n")
    log = boot_measure(swtpm.tcti, other, tmp_path / "eventlog.bin")
    with _node(swtpm, log) as target:
        assert _checks(target, built) == {"pcr[4]"}


def test_a_node_without_an_event_log_is_refused(built: Path, swtpm: Swtpm, tmp_path: Path) -> None:
    boot_measure(swtpm.tcti, built, tmp_path / "eventlog.bin")
    with _node(swtpm, None) as target:
        assert "eventlog.present" in _checks(target, built)
