"""The shared swtpm fixtures hand out running, distinct TPMs."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from constellation.attestation.swtpm import Swtpm

pytestmark = pytest.mark.swtpm


def test_swtpm_fixture_runs(swtpm: Swtpm) -> None:
    assert swtpm.running()


def test_swtpm_factory_starts_many(swtpm_factory: Callable[[int], list[Swtpm]]) -> None:
    first = swtpm_factory(2)
    second = swtpm_factory(1)
    sockets = {i.socket_path for i in first + second}
    assert len(sockets) == 3
    assert all(i.running() for i in first + second)
