"""The mini-mode "firmware": measure a node's image into its vTPM before the node boots.

A real node's firmware and boot loader extend PCRs with the boot chain and keep a TCG event log
of what they measured. Mini mode does the same for a node's own copy of the image: it extends
PCRs 4/9/11 of the node's swtpm with the digests :func:`.image.boot_events` computes from the
bytes on disk and writes a TCG crypto-agile event log that replays to exactly those PCRs. Every
event is an ``EV_EVENT_TAG`` whose digest is the hash of its own data, so the validator checks
the log's content as well as its replay (``eventlog.check_replay``). Only
then is the bootstrapper started from that same directory (see :mod:`.node`), so the code that
runs is the code that was measured: change any file and the node's PCRs change with it.

The TPM must be fresh (PCRs 0..15 zero): measuring twice would not describe a boot.
"""

from __future__ import annotations

from pathlib import Path

from constellation.attestation.measurements import PCR_NODE_LOCK
from constellation.attestation.vtpm import firmware_measure, open_tpm, read_pcrs
from constellation.bootstrapper.atomicfile import PUBLIC_MODE, write_atomic
from constellation.cli.mini.errors import MiniError
from constellation.cli.mini.image import ZERO, BootEvent, boot_events, read_image


class FirmwareError(MiniError):
    """The firmware step could not measure the image (TPM not fresh, unreadable image)."""


def measure_boot(tcti: str, events: tuple[BootEvent, ...]) -> bytes:
    """Extend ``events`` into the TPM at ``tcti``; return the TCG event log describing them."""
    with open_tpm(tcti) as esapi:
        _, before = read_pcrs(esapi, tuple(range(PCR_NODE_LOCK + 1)))
    dirty = sorted(index for index, value in before.items() if value != ZERO)
    if dirty:
        raise FirmwareError(
            f"the vTPM at {tcti} was already measured (PCRs {dirty} are not zero); a boot "
            "starts from a fresh TPM"
        )
    log = b""
    for event in events:
        log = firmware_measure(
            tcti, log, event.pcr, event.digest, event.data, event_type=event.event_type
        )
    return log


def boot_measure(tcti: str, image_dir: Path, event_log_path: Path) -> bytes:
    """Measure ``image_dir`` into the TPM and write the event log atomically; return the log."""
    log = measure_boot(tcti, boot_events(read_image(image_dir)))
    write_atomic(event_log_path, log, mode=PUBLIC_MODE)
    return log
