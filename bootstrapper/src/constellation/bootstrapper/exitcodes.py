"""The bootstrapper's exit codes: how its process tells whoever runs it what to do next.

The node's supervisor (systemd on a real node, the node supervisor in mini mode,
:mod:`constellation.cli.mini.supervision.node`) reads them:

- ``EXIT_OK`` (0): a clean shutdown (SIGTERM/SIGINT), nothing to do;
- ``EXIT_FAILED`` (1): a refused configuration or a node error a restart may get past (the
  bootstrapper is started again on the same boot, with backoff);
- ``EXIT_USAGE`` (2): bad command-line arguments (argparse);
- ``EXIT_REBOOT_REQUIRED`` (3): the node cannot go on without a reboot, and *only* then: the
  node lock (PCR 15) is taken but the bootstrapper cannot complete what took it (a join
  interrupted after its lock, a lock nobody journaled or of another cluster); a reboot resets
  PCR 15, after which the bootstrapper re-initializes its state disk and joins or serves Init
  again. Restarting it on the same boot would only stop it again with the same message.
  Raised as :class:`constellation.bootstrapper.node.RebootRequiredError`.

This module imports only the standard library, so a supervisor can read the codes without
loading the node. :func:`exit_status` renders any child's end the same way for every supervisor
(the node supervisor, the bootstrapper's own watch over its control-plane children).
"""

from __future__ import annotations

import signal

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_REBOOT_REQUIRED = 3


def exit_status(returncode: int) -> str:
    """How a child process ended, for people and logs: ``exit 3`` or ``signal SIGKILL``."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit {returncode}"
