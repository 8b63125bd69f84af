"""The JoinService's rejection reports, read from its JSON decision log.

The JoinService logs every refusal once as ``join.refused`` with every failed check (check,
expected, actual) and never a secret. ``mini node add`` shows the refusals logged after the
node was started, so the operator sees which PCRs a modified image changed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MAX_LOG_READ = 8 << 20


def refusals_since(log_path: Path, offset: int) -> list[dict[str, Any]]:
    """``join.refused`` entries logged after byte ``offset`` of ``log_path`` (deduplicated)."""
    try:
        with log_path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read(MAX_LOG_READ)
    except OSError:
        return []
    seen: set[str] = set()
    refusals = []
    for line in data.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not isinstance(entry, dict) or entry.get("event") != "join.refused":
            continue
        failures = [
            {
                "check": str(f.get("check", "")),
                "expected": str(f.get("expected", "")),
                "actual": str(f.get("actual", "")),
            }
            for f in entry.get("failures") or []
            if isinstance(f, dict)
        ]
        report = str(entry.get("report") or entry.get("reason") or "")
        key = json.dumps([report, failures], sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        refusals.append(
            {"outcome": str(entry.get("outcome", "")), "report": report, "failures": failures}
        )
    return refusals
