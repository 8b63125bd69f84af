"""What the CLI calls: start a detached supervisor for a unit or a node, marked for ``down``.

The supervisor runs as ``python -m constellation.cli.mini.supervision`` (:mod:`.__main__`) in a
session of its own (:func:`..processes.spawn`); its record is what ``mini/cluster.json`` keeps.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from constellation.cli.mini.processes import MARKER_ENV, ProcessRecord, spawn

MODULE = "constellation.cli.mini.supervision"


def supervisor_env(mini_dir: Path) -> dict[str, str]:
    return {**os.environ, MARKER_ENV: str(mini_dir.resolve())}


def spawn_unit(unit: str, argv: Sequence[str], *, mini_dir: Path, log_path: Path) -> ProcessRecord:
    """Start ``argv`` under a detached unit supervisor; the record is the supervisor's."""
    return spawn(
        unit,
        [sys.executable, "-m", MODULE, "unit", "--unit", unit, "--mini-dir", str(mini_dir),
         "--", *argv],
        log_path=log_path,
        env=supervisor_env(mini_dir),
    )  # fmt: skip


def spawn_node(name: str, node_dir: Path, *, mini_dir: Path, logs_dir: Path) -> ProcessRecord:
    """Boot the node in ``node_dir`` under a detached node supervisor (its record)."""
    return spawn(
        f"{name}/node",
        [sys.executable, "-m", MODULE, "node", "--unit", f"{name}/node",
         "--mini-dir", str(mini_dir), "--node-dir", str(node_dir), "--logs-dir", str(logs_dir)],
        log_path=logs_dir / f"{name}-supervisor.log",
        env=supervisor_env(mini_dir),
    )  # fmt: skip
