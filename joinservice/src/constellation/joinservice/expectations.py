"""The two states a node may attest in, and the validator the aTLS server runs.

A node talks to the JoinService in one of two states (DESIGN.md §2 steps 5 and 6):

- **join**: a fresh node; its PCR 15 is still zero. The ``join-config`` measurements (PCR 15
  enforced as zero) must match.
- **rejoin**: a node of this cluster after a reboot; its PCR 15 holds the node-lock marker
  ``pcr15_for_cluster_id(derive_cluster_id(measurement_secret, measurement_salt))``. The same
  measurements must match except that PCR 15 must hold exactly that marker.

The mutual-aTLS server must let both in, so it runs ``PeerValidator``: it tries the join
expectation, then the rejoin one, and tags the verified evidence with the one that matched
(``details["joinservice.expectation"]``). Each handler then demands its own state
(``require``): ``IssueJoinTicket`` only for *join*, ``IssueRejoinTicket`` only for *rejoin*, so
a node that already committed to a cluster can never get a fresh join ticket and a fresh node
can never ask for a rejoin. When neither matches, the rejection with the fewer failed checks is
raised (ties go to *join*), so a node with one wrong PCR is told exactly that one PCR.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Final

import structlog
from cryptography import x509

from constellation.attestation.errors import Failure, ValidationError
from constellation.attestation.evidence import Validator, VerifiedEvidence
from constellation.attestation.kdf import derive_cluster_id
from constellation.attestation.measurements import (
    PCR_NODE_LOCK,
    SHA256_ZERO,
    Measurements,
    pcr15_for_cluster_id,
)
from constellation.attestation.secret import SecretBytes
from constellation.joinservice.errors import RefusedError
from constellation.joinservice.joinconfig import JoinConfig

EXPECTATION_DETAIL: Final = "joinservice.expectation"
TIMER_OPERATION: Final = "validate"

log = structlog.get_logger("constellation.joinservice.expectations")

#: Builds a validator for a variant name, measurements and the platform roots that root the
#: nodes' attestation keys (the variant registry, in the service).
ValidatorFactory = Callable[[str, Measurements, Sequence[x509.Certificate]], Validator]


class Expectation(enum.Enum):
    JOIN = "join"
    REJOIN = "rejoin"


@dataclass(frozen=True)
class Expectations:
    """The validators of one ``join-config``; rebuilt whenever the config changes."""

    config: JoinConfig
    join: Validator
    rejoin: Validator
    cluster_pcr15: bytes

    @property
    def variant(self) -> str:
        return self.config.variant

    def expected_pcr15(self, expectation: Expectation) -> bytes:
        return SHA256_ZERO if expectation is Expectation.JOIN else self.cluster_pcr15


def build_expectations(
    config: JoinConfig, measurement_secret: SecretBytes, factory: ValidatorFactory
) -> Expectations:
    """Derive the cluster's PCR 15 marker and build both validators.

    Raises whatever the factory raises for an unusable config (e.g. an unknown variant), which
    makes the watcher keep the previous expectations.
    """
    cluster_id = derive_cluster_id(measurement_secret.reveal(), config.measurement_salt)
    cluster_pcr15 = pcr15_for_cluster_id(cluster_id)
    join_measurements = config.measurements.with_pcr15(None)
    rejoin_measurements = config.measurements.with_pcr15(cluster_id)
    return Expectations(
        config=config,
        join=factory(config.variant, join_measurements, config.platform_roots),
        rejoin=factory(config.variant, rejoin_measurements, config.platform_roots),
        cluster_pcr15=cluster_pcr15,
    )


class PeerValidator:
    """The ``Validator`` the mutual-aTLS server runs for every client.

    ``current`` returns the expectations in force (the join-config watcher's latest build), so
    a reload takes effect on the very next handshake. ``timer(operation)`` (e.g.
    ``ServiceMetrics.time_attestation``) times every validation for the latency histogram.
    """

    def __init__(
        self,
        current: Callable[[], Expectations],
        *,
        timer: Callable[[str], AbstractContextManager[None]] | None = None,
    ) -> None:
        self._current = current
        self._timer = timer or (lambda _operation: nullcontext())

    @property
    def variant(self) -> str:
        return self._current().variant

    def verify(self, document: bytes, nonce: bytes) -> VerifiedEvidence:
        expectations = self._current()
        try:
            with self._timer(TIMER_OPERATION):
                evidence, expectation = self._verify(expectations, document, nonce)
        except ValidationError as err:
            log.warning(
                "join.refused",
                stage="attestation",
                outcome="refused",
                variant=expectations.variant,
                join_config=expectations.config.digest,
                failures=[f.to_dict() for f in err.failures],
                warnings=[w.to_dict() for w in err.warnings],
                report=str(err),
            )
            raise
        except Exception as err:
            # Malformed evidence and the like: the aTLS layer turns these into a refusal.
            log.warning(
                "join.refused",
                stage="attestation",
                outcome="invalid",
                variant=expectations.variant,
                join_config=expectations.config.digest,
                error=type(err).__name__,
                report=str(err),
            )
            raise
        details = dict(evidence.details)
        details[EXPECTATION_DETAIL] = expectation.value
        details["joinservice.join_config"] = expectations.config.digest
        return dataclasses.replace(evidence, details=details)

    def validate(self, document: bytes, nonce: bytes) -> bytes:
        return self.verify(document, nonce).user_data

    @staticmethod
    def _verify(
        expectations: Expectations, document: bytes, nonce: bytes
    ) -> tuple[VerifiedEvidence, Expectation]:
        try:
            return expectations.join.verify(document, nonce), Expectation.JOIN
        except ValidationError as join_err:
            try:
                return expectations.rejoin.verify(document, nonce), Expectation.REJOIN
            except ValidationError as rejoin_err:
                if len(rejoin_err.failures) < len(join_err.failures):
                    raise rejoin_err from None
                raise join_err from None


def require(
    evidence: VerifiedEvidence, expectation: Expectation, expectations: Expectations
) -> None:
    """Refuse unless the peer attested in the state this request needs.

    Checks both the tag ``PeerValidator`` set and the quoted PCR 15 itself, so a handler is
    safe even if the evidence reached it by another path.
    """
    failures: list[Failure] = []
    tag = evidence.details.get(EXPECTATION_DETAIL)
    if tag != expectation.value:
        failures.append(
            Failure(
                check="node_state",
                expected=expectation.value,
                actual=str(tag) if tag is not None else "unknown",
                detail=(
                    "a node whose PCR 15 is set has joined a cluster already and may only rejoin"
                    if expectation is Expectation.JOIN
                    else "a node whose PCR 15 is zero has not joined yet and must join"
                ),
            )
        )
    want = expectations.expected_pcr15(expectation)
    have = evidence.pcrs.get(PCR_NODE_LOCK)
    if have != want:
        failures.append(
            Failure(
                check=f"pcr[{PCR_NODE_LOCK}]",
                expected=want.hex(),
                actual="missing" if have is None else have.hex(),
            )
        )
    if failures:
        raise RefusedError(failures, subject=f"{expectation.value} request")
