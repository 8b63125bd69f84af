"""The CLI's ``constellation-conf.yaml``: bounded YAML, then the strict schema."""

from __future__ import annotations

import json
from collections.abc import Iterator

from constellation.cli.config import Provider, default_config, parse_config, render_config


def seeds() -> Iterator[bytes]:
    for provider in Provider:
        yield render_config(default_config(provider)).encode()
    measured = default_config(Provider.MINI).model_dump(mode="json")
    measured["attestation"]["measurements"] = {
        "4": {"expected": "aa" * 32, "warnOnly": False},
        "15": {"expected": "00" * 32, "warnOnly": True},
    }
    yield json.dumps(measured).encode()  # JSON is YAML too
    yield b"? ?\n"


def target(data: bytes) -> None:
    config = parse_config(data)
    # What the commands do with a loaded configuration next.
    config.attestation.parsed_measurements()
    config.attestation.parsed_platform_roots()
    parse_config(render_config(config))
