"""Remote attestation core of Constellation.

Measurements, TPM quote issuing and validation, SEV-SNP verification, aTLS, the node lock and
key derivation. The core (parsers, validators, policies) is pure: it takes bytes plus trusted
inputs and returns what it verified or raises. Only the TPM issuer and the node lock touch a
device; fetchers of remote material sit behind small interfaces.
"""

from constellation.attestation.errors import (
    AttestationError,
    ConstellationError,
    Failure,
    MalformedEvidenceError,
    ValidationError,
)
from constellation.attestation.evidence import Issuer, Validator, VerifiedEvidence

__all__ = [
    "AttestationError",
    "ConstellationError",
    "Failure",
    "Issuer",
    "MalformedEvidenceError",
    "ValidationError",
    "Validator",
    "VerifiedEvidence",
]
