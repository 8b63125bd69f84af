"""The SEV-SNP TCB version: a 64-bit value packing security patch levels (SPLs).

Each SPL is one byte of the little-endian ``TCB_VERSION``. Two layouts exist:

* Milan and Genoa: byte 0 bootloader, byte 1 TEE, bytes 2-5 reserved, byte 6 SNP firmware,
  byte 7 microcode.
* Turin (family 1Ah) adds the FMC (first mutable code) SPL and moves the others: byte 0 FMC,
  byte 1 bootloader, byte 2 TEE, byte 3 SNP firmware, bytes 4-6 reserved, byte 7 microcode.

TCB values are only partially ordered: one is "at least" another when every component is at
least as high. Comparisons are therefore component-wise and report which component is low.
"""

from __future__ import annotations

from dataclasses import dataclass

# Byte index of each SPL inside the 8-byte TCB_VERSION, per layout.
STANDARD_LAYOUT: dict[str, int] = {"bootloader": 0, "tee": 1, "snp": 6, "microcode": 7}
TURIN_LAYOUT: dict[str, int] = {"fmc": 0, "bootloader": 1, "tee": 2, "snp": 3, "microcode": 7}
TCB_SIZE = 8


@dataclass(frozen=True, eq=False)
class TcbVersion:
    """A TCB_VERSION value and the layout it is read with.

    It compares equal to the plain integer it packs (``tcb == 0x5d06000000000002``) so
    report fields can be checked against published values directly.
    """

    raw: int
    turin: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.raw < 1 << 64:
            raise ValueError(f"TCB version {self.raw:#x} does not fit in 64 bits")

    @classmethod
    def from_parts(
        cls,
        *,
        bootloader: int,
        tee: int,
        snp: int,
        microcode: int,
        fmc: int | None = None,
    ) -> TcbVersion:
        """Pack SPLs; giving ``fmc`` selects the Turin layout."""
        turin = fmc is not None
        layout = TURIN_LAYOUT if turin else STANDARD_LAYOUT
        parts = {"bootloader": bootloader, "tee": tee, "snp": snp, "microcode": microcode}
        if fmc is not None:
            parts["fmc"] = fmc
        raw = 0
        for name, value in parts.items():
            if not 0 <= value <= 0xFF:
                raise ValueError(f"SPL {name}={value} does not fit in one byte")
            raw |= value << (8 * layout[name])
        return cls(raw, turin=turin)

    @property
    def layout(self) -> dict[str, int]:
        return TURIN_LAYOUT if self.turin else STANDARD_LAYOUT

    def _byte(self, index: int) -> int:
        return (self.raw >> (8 * index)) & 0xFF

    @property
    def bootloader(self) -> int:
        return self._byte(self.layout["bootloader"])

    @property
    def tee(self) -> int:
        return self._byte(self.layout["tee"])

    @property
    def snp(self) -> int:
        return self._byte(self.layout["snp"])

    @property
    def microcode(self) -> int:
        return self._byte(self.layout["microcode"])

    @property
    def fmc(self) -> int | None:
        return self._byte(TURIN_LAYOUT["fmc"]) if self.turin else None

    def components(self) -> dict[str, int]:
        """SPL name -> value, in layout order (the names KDS and certificates use)."""
        return {name: self._byte(index) for name, index in self.layout.items()}

    def below(self, minimum: TcbVersion) -> list[str]:
        """Names of the components of ``self`` lower than in ``minimum`` (empty: at least it).

        A Turin minimum applied to a non-Turin value (or the reverse) compares the components
        both have; ``fmc`` is reported low when the minimum sets it and ``self`` has none.
        """
        mine = self.components()
        low = [name for name, value in minimum.components().items() if mine.get(name, -1) < value]
        if minimum.fmc == 0 and "fmc" in low:
            low.remove("fmc")
        return low

    def __int__(self) -> int:
        return self.raw

    def __index__(self) -> int:
        return self.raw

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TcbVersion):
            return self.raw == other.raw and self.turin == other.turin
        if isinstance(other, int) and not isinstance(other, bool):
            return self.raw == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.raw)

    def __str__(self) -> str:
        parts = " ".join(f"{name}={value}" for name, value in self.components().items())
        return f"{parts} ({self.raw:#018x})"
