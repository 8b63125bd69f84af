"""Key derivation: HKDF-SHA256 (RFC 5869) and the two derived values of a cluster.

Every key in a cluster is derived, never stored: the KeyService answers ``GetDataKey`` with
``derive_key(master_key, master_salt, "key-" + id, L)``, the measurement secret and the cluster
ID follow from the master secret and a per-cluster measurement salt (DESIGN.md §3). Keeping the
formulas in one place is what lets the CLI, the JoinService and a node agree on them.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from constellation.attestation.errors import AttestationError

SHA256_SIZE = 32
# RFC 5869 §2.3: at most 255 blocks of output.
MAX_DERIVED_LENGTH = 255 * SHA256_SIZE
MEASUREMENT_SECRET_INFO = "key-measurementSecret"  # noqa: S105 (an HKDF label, not a secret)
CLUSTER_ID_INFO = "key-clusterID"
MEASUREMENT_SECRET_LENGTH = 32
CLUSTER_ID_LENGTH = 32


class KeyDerivationError(AttestationError):
    """A derivation was asked for with an impossible length or an empty secret."""


def derive_key(secret: bytes, salt: bytes, info: str | bytes, length: int) -> bytes:
    """HKDF-SHA256: extract with ``salt``, expand with ``info`` to ``length`` bytes.

    ``info`` may be text (encoded as UTF-8) because every info string of the project is ASCII.
    """
    if not secret:
        raise KeyDerivationError("cannot derive a key from an empty secret")
    if not 0 < length <= MAX_DERIVED_LENGTH:
        raise KeyDerivationError(
            f"derived key length must be 1..{MAX_DERIVED_LENGTH} bytes, got {length}"
        )
    info_bytes = info.encode() if isinstance(info, str) else bytes(info)
    hkdf = HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info_bytes)
    return hkdf.derive(secret)


def derive_measurement_secret(master_key: bytes, master_salt: bytes) -> bytes:
    """The secret every node of a cluster learns after attestation (input of the cluster ID)."""
    return derive_key(master_key, master_salt, MEASUREMENT_SECRET_INFO, MEASUREMENT_SECRET_LENGTH)


def derive_cluster_id(measurement_secret: bytes, measurement_salt: bytes) -> bytes:
    """The public cluster ID a node marks into PCR 15 when it takes its node lock."""
    return derive_key(measurement_secret, measurement_salt, CLUSTER_ID_INFO, CLUSTER_ID_LENGTH)
