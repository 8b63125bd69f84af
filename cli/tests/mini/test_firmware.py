"""The firmware step on a real swtpm: PCRs equal the replayed expectation, the log replays."""

from __future__ import annotations

from pathlib import Path

import pytest

from constellation.attestation.eventlog import (
    DATA_BOUND_EVENT_TYPES,
    check_replay,
    parse_event_log,
    replay,
)
from constellation.attestation.swtpm import Swtpm
from constellation.attestation.vtpm import open_tpm, read_pcrs
from constellation.cli.mini import image
from constellation.cli.mini.firmware import FirmwareError, boot_measure

pytestmark = pytest.mark.swtpm


@pytest.fixture
def built(tmp_path: Path) -> Path:
    destination = tmp_path / "image"
    image.build_image(destination, kubernetes_version="v1.36.3", components={}, version="fw")
    return destination


def _pcrs(tpm: Swtpm) -> dict[int, bytes]:
    with open_tpm(tpm.tcti) as esapi:
        _, values = read_pcrs(esapi, tuple(range(16)))
    return dict(values)


def test_measured_pcrs_equal_the_expected_pcrs(built: Path, swtpm: Swtpm, tmp_path: Path) -> None:
    log = boot_measure(swtpm.tcti, built, tmp_path / "eventlog.bin")
    assert _pcrs(swtpm) == image.expected_pcrs(built)
    assert (tmp_path / "eventlog.bin").read_bytes() == log
    replayed = replay(parse_event_log(log))
    for index in (4, 9, 11):
        assert replayed[index] == image.expected_pcrs(built)[index]


def test_the_firmware_log_passes_the_full_check(built: Path, swtpm: Swtpm, tmp_path: Path) -> None:
    log = parse_event_log(boot_measure(swtpm.tcti, built, tmp_path / "eventlog.bin"))
    assert [e.pcr for e in log.events] == [4, 9, 11]
    assert all(e.event_type in DATA_BOUND_EVENT_TYPES for e in log.events)
    expected = image.boot_events(image.read_image(built))
    assert [e.data for e in log.events] == [e.data for e in expected]
    with open_tpm(swtpm.tcti) as esapi:
        _, quoted = read_pcrs(esapi, tuple(range(24)))
    assert check_replay(log, dict(quoted)) == []


def test_a_tampered_copy_measures_differently(built: Path, swtpm: Swtpm, tmp_path: Path) -> None:
    expected = image.expected_pcrs(built)
    target = built / "constellation" / "bootstrapper" / "joinclient.py"
    target.write_bytes(target.read_bytes() + b"\n# tampered\n")
    boot_measure(swtpm.tcti, built, tmp_path / "eventlog.bin")
    actual = _pcrs(swtpm)
    assert actual[4] != expected[4]
    assert actual[9] != expected[9]
    assert actual[11] == expected[11]


def test_a_tpm_that_was_measured_already_is_refused(
    built: Path, swtpm: Swtpm, tmp_path: Path
) -> None:
    boot_measure(swtpm.tcti, built, tmp_path / "eventlog.bin")
    with pytest.raises(FirmwareError, match="already measured"):
        boot_measure(swtpm.tcti, built, tmp_path / "again.bin")
    assert not (tmp_path / "again.bin").exists()
