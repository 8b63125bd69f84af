"""``python -m constellation.cli.mini.supervision unit|node ...``: one detached supervisor.

Argument parsing and wiring only; what a supervisor does is in the package docstring. Exit
status: 0 after SIGTERM/SIGINT, 1 when it gave up on a crash loop, 2 on usage.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from constellation.cli.mini import supervision
from constellation.cli.mini.supervision.loop import Supervisor
from constellation.cli.mini.supervision.node import NodeSupervisor
from constellation.cli.mini.supervision.policy import RestartPolicy, policy_from_env
from constellation.cli.mini.supervision.spawning import MODULE
from constellation.cli.mini.supervision.unit import UnitSupervisor


def main(argv: Sequence[str] | None = None, *, policy: RestartPolicy | None = None) -> int:
    from constellation.attestation.service.logging import configure_logging

    parser = argparse.ArgumentParser(prog="python -m " + MODULE, description=supervision.__doc__)
    sub = parser.add_subparsers(dest="kind", required=True)
    unit = sub.add_parser("unit", help="supervise one service process")
    unit.add_argument("--unit", required=True)
    unit.add_argument("--mini-dir", type=Path, required=True)
    unit.add_argument("command", nargs=argparse.REMAINDER)
    node = sub.add_parser("node", help="boot one node and keep it alive")
    node.add_argument("--unit", required=True)
    node.add_argument("--mini-dir", type=Path, required=True)
    node.add_argument("--node-dir", type=Path, required=True)
    node.add_argument("--logs-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    configure_logging("info", stream=sys.stdout)
    policy = policy or policy_from_env()
    supervisor: Supervisor
    if args.kind == "unit":
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        if not command:
            parser.error("a command to supervise is required after --")
        supervisor = UnitSupervisor(args.unit, args.mini_dir, policy, command)
    else:
        supervisor = NodeSupervisor(args.unit, args.mini_dir, policy, args.node_dir, args.logs_dir)
    supervisor.install_signal_handlers()
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
