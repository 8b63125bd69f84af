"""Expected measurements in their JSON and YAML forms, and published image measurements files.

The first input byte picks the form. What parses is rendered back (JSON, YAML) and compared
against a PCR set, as the CLI and the validators do.
"""

from __future__ import annotations

from collections.abc import Iterator

from constellation.attestation.measurements import (
    ImageMeasurements,
    Measurement,
    Measurements,
    VariantMeasurements,
)

PCRS = {i: bytes([i]) * 32 for i in range(24)}
SAMPLE = Measurements({4: Measurement(bytes(32)), 9: Measurement(b"\x09" * 32, warn_only=True)})
IMAGE = ImageMeasurements(
    "v2.0.0", "ref/main", "stable", (VariantMeasurements("QEMU", "qemu-vtpm", SAMPLE),)
)


def seeds() -> Iterator[bytes]:
    yield b"\x00" + SAMPLE.to_json().encode()
    yield b"\x01" + SAMPLE.to_yaml().encode()
    yield b"\x01" + b"4: '" + b"00" * 32 + b"'\n15: {expected: '" + b"ab" * 32 + b"'}\n"
    yield b"\x02" + IMAGE.to_json()


def target(data: bytes) -> None:
    if not data:
        return
    mode, rest = data[0] % 3, data[1:]
    if mode == 2:
        image = ImageMeasurements.from_json(rest)
        image.to_json()
        measurements = image.entries[0].measurements
    else:
        measurements = (Measurements.from_json if mode == 0 else Measurements.from_yaml)(rest)
    Measurements.from_json(measurements.to_json())
    Measurements.from_yaml(measurements.to_yaml())
    measurements.compare(PCRS)
    measurements.with_pcr15(b"cluster")
