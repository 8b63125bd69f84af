"""Supervision of mini mode's long-running processes: restart with backoff, log, count.

Until nodes run a kubelet (a later issue), a small Python process plays its part: **one
supervisor per unit**, started detached by the CLI (``python -m
constellation.cli.mini.supervision``, :mod:`.spawning`) and recorded in ``mini/cluster.json`` in
place of what it supervises. A supervisor is the parent of its children (:mod:`.child`), so it
reaps them (no zombies) and notices a death at once. Two kinds:

- ``unit`` (:mod:`.unit`): one service process (KeyService, JoinService, a
  VerificationService). When it exits, whatever its status, it is started again with the same
  command line (same ports, same mounted files) after a backoff.
- ``node`` (:mod:`.node`): one node, the machine itself. It boots the node as the hypervisor
  and firmware do (:mod:`.machine`: swtpm on the node's TPM state, the firmware step measuring
  the node's image and writing the event log, then the bootstrapper from that image) and then
  keeps it alive:

  * the **bootstrapper** dying alone is a service restart on the same boot: PCRs (including
    the PCR 15 node lock) stay, and the bootstrapper finds its node state and rejoins through
    the JoinService with fresh attestation, as it does after every start;
  * the **bootstrapper** exiting with ``EXIT_REBOOT_REQUIRED``
    (:mod:`constellation.bootstrapper.exitcodes`) says that only a reboot lets it go on (e.g.
    a join interrupted after its node lock: PCR 15 must be reset), so the node is *rebooted*,
    as below, instead of restarted on the same boot;
  * the **swtpm** dying is the machine's TPM dying: the node is *rebooted* (bootstrapper
    stopped, swtpm started again on the same state with PCRs reset, the image measured again,
    the bootstrapper started from it). Nothing is skipped: the event log is rewritten by the
    measurement, and the units attached to this node's TPM (its VerificationService, and the
    JoinService on the control plane: pods of that machine) are told to restart (SIGHUP) so
    they read the new event log.

Restart policy (:mod:`.policy`): exponential backoff, 0.5 s doubling to 30 s, back to 0.5 s
once a child ran 30 s; after 5 quick failures in a row (each within 30 s of its start) the
supervisor gives up, stops what it still runs and exits 1, so a crash loop surfaces to the CLI
(``wait_booted`` fails at once) instead of spinning forever. Reboots are bounded the same way
(a boot that ends in a reboot within 30 s is a quick failure of ``reboot``), so a node that
asks for a reboot after every boot is given up, not rebooted forever.

Every restart is logged as JSON on the unit's log (``event="supervisor.restart"`` with the
process, its PID, exit status and restart count; ``supervisor.reboot`` with its reason for a
node reboot, ``supervisor.gave_up``) and counted (:mod:`.status`) in two files under
``mini/supervision/`` that a person and a machine can read: ``<unit>.json`` (state, children
PIDs and start times, restarts, reboots, last exit) and ``<unit>.prom`` (Prometheus text
format: ``constellation_mini_restarts_total``, ``constellation_mini_node_reboots_total``,
``constellation_mini_unit_up``). Counts continue from the previous file, so ``mini stop``/``mini
start`` keep the totals.

Signals (:mod:`.loop`): SIGTERM or SIGINT stop the supervisor (children get SIGTERM, a bounded
wait, then SIGKILL; the supervisor exits 0); SIGHUP restarts the child now (counted as a
restart).

Every process mini mode starts, the supervisors and so their children, carries
``CONSTELLATION_MINI_DIR=<workspace>/mini`` in its environment, the marker by which ``mini
down`` finds whatever runs for the workspace (:func:`..processes.find_marked`).

The CLI uses what this package exports: :func:`spawn_unit`, :func:`spawn_node`,
:func:`read_status` and :func:`status_path`.
"""

from __future__ import annotations

from constellation.cli.mini.supervision.policy import POLICY_ENV, RestartPolicy
from constellation.cli.mini.supervision.spawning import MODULE, spawn_node, spawn_unit
from constellation.cli.mini.supervision.status import all_statuses, read_status, status_path

__all__ = [
    "MODULE",
    "POLICY_ENV",
    "RestartPolicy",
    "all_statuses",
    "read_status",
    "spawn_node",
    "spawn_unit",
    "status_path",
]
