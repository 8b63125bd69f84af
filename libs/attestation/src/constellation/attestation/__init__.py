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
from constellation.attestation.kdf import (
    derive_cluster_id,
    derive_key,
    derive_measurement_secret,
)
from constellation.attestation.measurements import (
    ImageMeasurements,
    Measurement,
    Measurements,
    MeasurementsError,
    pcr15_for_cluster_id,
    sign_measurements,
    verify_signed_measurements,
)
from constellation.attestation.nodelock import NodeLock
from constellation.attestation.variants import UnknownVariantError, get_variant
from constellation.attestation.vtpm import TpmError, VtpmIssuer, VtpmValidator

__all__ = [
    "AttestationError",
    "ConstellationError",
    "Failure",
    "ImageMeasurements",
    "Issuer",
    "MalformedEvidenceError",
    "Measurement",
    "Measurements",
    "MeasurementsError",
    "NodeLock",
    "TpmError",
    "UnknownVariantError",
    "ValidationError",
    "Validator",
    "VerifiedEvidence",
    "VtpmIssuer",
    "VtpmValidator",
    "derive_cluster_id",
    "derive_key",
    "derive_measurement_secret",
    "get_variant",
    "pcr15_for_cluster_id",
    "sign_measurements",
    "verify_signed_measurements",
]
