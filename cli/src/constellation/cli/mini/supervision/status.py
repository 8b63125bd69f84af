"""A unit's state and counters, as files a person and a machine can read (package docstring).

``mini/supervision/<unit>.json`` and ``<unit>.prom`` are rewritten atomically after every
change; a new supervisor of the same unit continues the counts of the previous one.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from constellation.bootstrapper.atomicfile import PUBLIC_MODE, write_atomic
from constellation.cli.mini.processes import start_time_of

SUPERVISION_DIR = "supervision"


def unit_file_stem(unit: str) -> str:
    """``mini-worker-0/verificationservice`` -> ``mini-worker-0-verificationservice``."""
    return unit.replace("/", "-")


def status_path(mini_dir: Path, unit: str) -> Path:
    return mini_dir / SUPERVISION_DIR / f"{unit_file_stem(unit)}.json"


def all_statuses(mini_dir: Path) -> list[dict[str, Any]]:
    """Every unit's status document (``constellation status`` shows restarts and reboots)."""
    directory = mini_dir / SUPERVISION_DIR
    documents = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else ():
        try:
            document = json.loads(path.read_bytes())
        except (OSError, ValueError):
            continue
        if isinstance(document, dict) and isinstance(document.get("unit"), str):
            documents.append(document)
    return documents


def read_status(mini_dir: Path, unit: str) -> dict[str, Any] | None:
    """A unit's status document, None if there is none (yet) or it is unreadable."""
    try:
        document = json.loads(status_path(mini_dir, unit).read_bytes())
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


@dataclass
class UnitStatus:
    """The counters and state of one unit, written after every change."""

    mini_dir: Path
    unit: str
    kind: str
    state: str = "starting"
    restarts: dict[str, int] = field(default_factory=dict)
    reboots: int = 0
    last_exit: str | None = None
    last_restart: str | None = None
    children: dict[str, dict[str, int]] = field(default_factory=dict)

    @classmethod
    def resume(cls, mini_dir: Path, unit: str, kind: str) -> UnitStatus:
        """Start from the counts of a previous supervisor of this unit, if any."""
        status = cls(mini_dir, unit, kind)
        previous = read_status(mini_dir, unit) or {}
        with contextlib.suppress(AttributeError, TypeError, ValueError):
            status.restarts = {str(k): int(v) for k, v in previous.get("restarts", {}).items()}
            status.reboots = int(previous.get("reboots", 0))
        return status

    def child_started(self, process: str, pid: int) -> None:
        self.children[process] = {"pid": pid, "startTime": start_time_of(pid) or 0}

    def to_dict(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "kind": self.kind,
            "state": self.state,
            "supervisorPid": os.getpid(),
            "children": self.children,
            "restarts": self.restarts,
            "reboots": self.reboots,
            "lastExit": self.last_exit,
            "lastRestart": self.last_restart,
        }

    def prometheus(self) -> str:
        unit = self.unit.replace("\\", "\\\\").replace('"', '\\"')
        lines = [
            "# HELP constellation_mini_restarts_total Restarts of a supervised mini-mode process.",
            "# TYPE constellation_mini_restarts_total counter",
        ]
        for process, count in sorted(self.restarts.items()):
            lines.append(
                f'constellation_mini_restarts_total{{unit="{unit}",process="{process}"}} {count}'
            )
        if self.kind == "node":
            lines += [
                "# HELP constellation_mini_node_reboots_total Reboots of a mini node.",
                "# TYPE constellation_mini_node_reboots_total counter",
                f'constellation_mini_node_reboots_total{{unit="{unit}"}} {self.reboots}',
            ]
        up = 1 if self.state == "running" else 0
        lines += [
            "# HELP constellation_mini_unit_up Whether the unit's processes run right now.",
            "# TYPE constellation_mini_unit_up gauge",
            f'constellation_mini_unit_up{{unit="{unit}"}} {up}',
        ]
        return "\n".join(lines) + "\n"

    def save(self) -> None:
        """Write both files; the metrics first, so whoever read the JSON finds them as new."""
        path = status_path(self.mini_dir, self.unit)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(path.with_suffix(".prom"), self.prometheus().encode(), mode=PUBLIC_MODE)
        write_atomic(path, (json.dumps(self.to_dict(), indent=2) + "\n").encode(), mode=PUBLIC_MODE)

    def count_restart(self, process: str, status: str) -> int:
        self.restarts[process] = self.restarts.get(process, 0) + 1
        self.last_exit = f"{process}: {status}"
        self.last_restart = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        return self.restarts[process]
