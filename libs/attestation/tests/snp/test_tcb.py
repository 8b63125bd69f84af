"""TCB packing in both layouts and the component-wise partial order."""

from __future__ import annotations

import pytest

from constellation.attestation.snp import TcbVersion


def test_standard_layout_matches_the_real_value():
    tcb = TcbVersion.from_parts(bootloader=2, tee=0, snp=6, microcode=93)
    assert tcb == 0x5D06000000000002
    assert int(tcb) == tcb.raw == 0x5D06000000000002
    assert hex(tcb) == "0x5d06000000000002"
    assert tcb.components() == {"bootloader": 2, "tee": 0, "snp": 6, "microcode": 93}


def test_turin_layout():
    tcb = TcbVersion.from_parts(fmc=1, bootloader=2, tee=3, snp=4, microcode=5)
    assert tcb.raw == 0x0500000004030201
    assert (tcb.fmc, tcb.bootloader, tcb.tee, tcb.snp, tcb.microcode) == (1, 2, 3, 4, 5)
    assert tcb != TcbVersion(tcb.raw)  # same bits, other layout
    assert TcbVersion(tcb.raw).snp == 0


def test_component_wise_order():
    low = TcbVersion.from_parts(bootloader=2, tee=0, snp=6, microcode=93)
    high = TcbVersion.from_parts(bootloader=3, tee=0, snp=6, microcode=90)
    assert low.below(high) == ["bootloader"]
    assert high.below(low) == ["microcode"]
    assert low.below(low) == []


def test_mixed_layouts_compare_common_components():
    turin = TcbVersion.from_parts(fmc=1, bootloader=2, tee=0, snp=6, microcode=93)
    milan = TcbVersion.from_parts(bootloader=2, tee=0, snp=6, microcode=93)
    assert turin.below(milan) == []
    assert milan.below(turin) == ["fmc"]


@pytest.mark.parametrize("bad", [{"bootloader": 256}, {"tee": -1}])
def test_spl_range(bad):
    parts = {"bootloader": 0, "tee": 0, "snp": 0, "microcode": 0, **bad}
    with pytest.raises(ValueError, match="one byte"):
        TcbVersion.from_parts(**parts)
    with pytest.raises(ValueError, match="64 bits"):
        TcbVersion(1 << 64)
