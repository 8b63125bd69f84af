"""Mini mode: a local attested cluster of processes, each node with its own swtpm vTPM.

Modules, in the order ``constellation mini up`` uses them:

- :mod:`.image`: the node image (a measured copy of the code a node boots) and its signed
  measurements;
- :mod:`.firmware`: the "firmware" step that measures a node's image into its vTPM and writes
  the TCG event log;
- :mod:`.processes`: detached processes recorded by PID and start time, and the workspace
  marker by which ``down`` finds the unrecorded ones;
- :mod:`.supervision`: one supervisor per node or service, restarting with backoff, rebooting
  a node whose TPM died or whose bootstrapper asks for it;
- :mod:`.node`: one node's files and processes (swtpm, disk header, metadata, bootstrapper);
- :mod:`.clusterobjects`: the objects the CLI writes into the cluster and the files the Helm
  charts would mount from them;
- :mod:`.services`: the KeyService, JoinService and VerificationServices as processes;
- :mod:`.cluster`: the mini cluster's record in the workspace, ``up``, ``down``, ``node add``.
"""
