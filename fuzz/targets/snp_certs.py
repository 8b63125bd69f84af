"""AMD certificates: VCEK/VLEK, ASK/ASVK/ARK, chain PEM or DER, extensions, TCB, chain checks.

The input is what a guest (or a KDS, or a trust directory) hands the verifier as certificates:
one DER certificate or PEM blocks. Everything a verifier reads from them is read here: the AMD
extensions and the TCB they certify, the leaf key, each PSS signature, the chain verdict and its
validity windows. Pins are AMD's plus one fake hierarchy's, so a fake chain gets all the way.
"""

from __future__ import annotations

from collections.abc import Iterator

from fuzzsupport import shared_vector

from constellation.attestation.snp.certs import (
    AMD_PINS,
    Roots,
    amd_extensions,
    check_pss_signature,
    load_certificates,
    verify_chain,
)
from constellation.attestation.testing.fakeamd import NOW, FakeAmd, pem

FAKE = FakeAmd("Milan")
ROOTS = Roots.from_pins({**AMD_PINS, "Genoa": FAKE.pins()})
VECTORS = (
    "azure-sev-snp/vcek.cert",
    "azure-sev-snp/vcek.pem",
    "azure-sev-snp/certchain.pem",
    "amd-roots/ask_ark_milan.pem",
    "amd-roots/ask_ark_genoa_vlek.pem",
    "amd-roots/ask_ark_turin_vcek.pem",
)


def seeds() -> Iterator[bytes]:
    vcek = shared_vector("azure-sev-snp/vcek.pem")
    chain = shared_vector("azure-sev-snp/certchain.pem")
    if vcek is not None and chain is not None:
        yield vcek + chain
    for relative in VECTORS:
        data = shared_vector(relative)
        if data is not None:
            yield data
    yield FAKE.vcek
    yield FAKE.vlek
    yield pem(FAKE.vcek) + FAKE.chain_pem("vcek")
    yield pem(FAKE.vlek) + FAKE.chain_pem("vlek")


def target(data: bytes) -> None:
    certificates = load_certificates(data)
    leaf = certificates[0]
    leaf.describe()
    extensions, _ = amd_extensions(leaf.cert)
    extensions.tcb(turin=False)
    extensions.tcb(turin=True)
    _ = extensions.kind, extensions.product
    chain = verify_chain(leaf, certificates[1:], ROOTS)
    chain.validity_failures(NOW)
    for other in certificates[1:4]:
        check_pss_signature(leaf, other)
        check_pss_signature(other, other)
