"""The join-config the JoinService loads: variant, measurements JSON, salt, platform roots.

The four mounted files travel in one input, separated by ``SEPARATOR`` (missing files are
empty); ``parse_join_config`` is the pure parser the watcher runs on them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from constellation.joinservice.joinconfig import parse_join_config

SEPARATOR = b"\n--8<--\n"


def _root_pem() -> bytes:
    key = ec.derive_private_key(0x1007, ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "platform root")])
    now = datetime(2025, 1, 1, tzinfo=UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


def seeds() -> Iterator[bytes]:
    measurements = json.dumps(
        {
            "4": {"expected": "aa" * 32, "warnOnly": False},
            "9": {"expected": "bb" * 32, "warnOnly": True},
            "15": {"expected": "00" * 32, "warnOnly": False},
        }
    ).encode()
    salt = bytes(range(32))
    yield SEPARATOR.join([b"qemu-vtpm", measurements, salt, _root_pem()])
    yield SEPARATOR.join([b"azure-sev-snp\n", measurements, salt])


def target(data: bytes) -> None:
    parts = data.split(SEPARATOR, 3)
    parts += [b""] * (4 - len(parts))
    parse_join_config(*parts)
