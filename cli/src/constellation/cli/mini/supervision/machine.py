"""What powering on a mini node means, step by step, as the node supervisor drives it.

A real machine has a TPM, firmware that measures the boot image into it and writes the event
log, and an operating system that starts the bootstrapper. :class:`MiniMachine` is that for a
mini node (swtpm on the node's TPM state, :func:`..firmware.boot_measure`, the bootstrapper
from the node's image); the node supervisor (:mod:`.node`) only sees the :class:`Machine`
protocol, so its reactions (restart, reboot, give up) are tested with stand-in processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Launch:
    """A process to start: its command line, working directory and environment."""

    argv: list[str]
    cwd: Path | None = None
    env: dict[str, str] | None = None


class Machine(Protocol):
    """One node's hardware and firmware; each boot calls these in this order."""

    def tpm(self) -> Launch:
        """The TPM process of this boot (its state persists, its PCRs start reset)."""
        ...

    def tpm_answers(self) -> bool:
        """True once the TPM started by :meth:`tpm` answers commands."""
        ...

    def firmware(self) -> None:
        """Measure the image into the fresh TPM, write the event log, draw a new boot ID."""
        ...

    def bootstrapper(self) -> Launch:
        """The first service of the booted image."""
        ...


class MiniMachine:
    """A mini node's machine: swtpm, the firmware step and the bootstrapper from its image."""

    def __init__(self, name: str, node_dir: Path) -> None:
        self.name = name
        self.node_dir = node_dir
        self._socket: Path | None = None

    def tpm(self) -> Launch:
        from constellation.cli.mini.node import swtpm_command_for

        command, self._socket = swtpm_command_for(self.name, self.node_dir / "tpm")
        return Launch(command)

    def tpm_answers(self) -> bool:
        from constellation.attestation.swtpm import answers_tpm_command

        return self._socket is not None and answers_tpm_command(self._socket)

    def firmware(self) -> None:
        from constellation.cli.mini.firmware import boot_measure
        from constellation.cli.mini.node import draw_boot_id, point_config_at_tpm

        assert self._socket is not None, "firmware runs after the TPM started"
        # Once per boot, like the kernel's boot_id: a bootstrapper restarted on this boot
        # sees the same ID, one started after a reboot a new one.
        draw_boot_id(self.node_dir)
        tcti = point_config_at_tpm(self.node_dir, self._socket)
        boot_measure(tcti, self.node_dir / "image", self.node_dir / "eventlog.bin")

    def bootstrapper(self) -> Launch:
        from constellation.cli.mini.node import bootstrapper_command, bootstrapper_env

        env = bootstrapper_env(self.node_dir / "image")
        return Launch(bootstrapper_command(), self.node_dir, env)
