"""What a joining node demands of the JoinService before it sends anything.

A node about to join hands the JoinService its attestation and its disk UUID, and takes back
the key it will encrypt its state disk with and the cluster it will be marked for. A rogue
JoinService - the genuine image on a machine that never joined a cluster, or a node of another
cluster - could otherwise adopt the node: take its node lock for a cluster of the rogue's
choosing and rekey its disk to a key the rogue knows. So the node's validator requires, on
top of the image measurements (PCR 15 excluded) that the inner validator checks:

- a replaying TCG event log (the inner validator is built with ``require_event_log=True``);
- PCR 15 carrying a node-lock mark: the JoinService runs on an *initialized* control-plane
  node, so an all-zero PCR 15 is refused (``pcr[15]``); on a rejoin the node knows its cluster
  ID, and the mark must be exactly ``pcr15_for_cluster_id(cluster_id)``;
- a platform identity with the control-plane role when the variant verifies one
  (``identity.role``): the service runs on control-plane nodes only.

Every failed check is reported at once as a ``ValidationError``; the aTLS client then closes the
channel before any request is sent (P1).
"""

from __future__ import annotations

from constellation.attestation.errors import Failure, ValidationError
from constellation.attestation.evidence import Validator, VerifiedEvidence
from constellation.attestation.identity import Role
from constellation.attestation.identity.policy import role_failures
from constellation.attestation.measurements import PCR_NODE_LOCK, pcr15_for_cluster_id

_ZERO = bytes(32)


class JoinServiceValidator:
    """Wraps the image validator with the node-lock and role checks above."""

    def __init__(self, inner: Validator, *, cluster_id: bytes | None = None) -> None:
        self._inner = inner
        self._expected_mark = None if cluster_id is None else pcr15_for_cluster_id(cluster_id)

    @property
    def variant(self) -> str:
        return self._inner.variant

    def verify(self, document: bytes, nonce: bytes) -> VerifiedEvidence:
        evidence = self._inner.verify(document, nonce)
        failures = self._failures(evidence)
        if failures:
            raise ValidationError(failures, evidence.warnings, subject="JoinService evidence")
        return evidence

    def validate(self, document: bytes, nonce: bytes) -> bytes:
        return self.verify(document, nonce).user_data

    def _failures(self, evidence: VerifiedEvidence) -> list[Failure]:
        failures: list[Failure] = []
        mark = evidence.pcrs.get(PCR_NODE_LOCK)
        shown = "missing" if mark is None else mark.hex()
        if self._expected_mark is not None:
            if mark != self._expected_mark:
                failures.append(
                    Failure(
                        f"pcr[{PCR_NODE_LOCK}]",
                        self._expected_mark.hex(),
                        shown,
                        detail="the JoinService must run on a node of this node's cluster",
                    )
                )
        elif mark is None or mark == _ZERO:
            failures.append(
                Failure(
                    f"pcr[{PCR_NODE_LOCK}]",
                    "the mark of an initialized node (non-zero)",
                    shown,
                    detail="a JoinService on a node that never joined a cluster is not trusted",
                )
            )
        failures += role_failures(
            evidence, Role.CONTROL_PLANE, why="the JoinService runs on control-plane nodes only"
        )
        return failures
