"""AMD EPYC product lines that run SEV-SNP, and how a report or a certificate names them.

The product decides the TCB byte layout (Turin differs), which pinned ARK/ASK applies and
which KDS path serves the certificates. It can be named three ways, and the verifier demands
that all the ways present agree: the caller's explicit choice, the CPUID family/model in a
version 3+ report, and the ``productName`` extension of the V[CL]EK (``"Milan-B0"``).
"""

from __future__ import annotations

MILAN = "Milan"
GENOA = "Genoa"
TURIN = "Turin"
PRODUCTS: tuple[str, ...] = (MILAN, GENOA, TURIN)

# CPUID family (base + extended) and model ranges (model >> 4) per product line, from AMD's
# processor programming references: Milan is family 19h models 00h-0Fh, Genoa family 19h
# models 10h-1Fh and A0h-AFh (Bergamo/Siena share Genoa's keys), Turin family 1Ah models 00h-1Fh.
_CPUID_MODEL_HIGH_NIBBLE: dict[tuple[int, int], str] = {
    (0x19, 0x0): MILAN,
    (0x19, 0x1): GENOA,
    (0x19, 0xA): GENOA,
    (0x1A, 0x0): TURIN,
    (0x1A, 0x1): TURIN,
}


def product_from_cpuid(family: int, model: int) -> str | None:
    """The product line of a CPUID family/model pair, or ``None`` when it is not an SNP part."""
    return _CPUID_MODEL_HIGH_NIBBLE.get((family, model >> 4))


def product_from_name(name: str) -> str | None:
    """The product line of a certificate ``productName`` (``"Genoa-B1"`` -> ``"Genoa"``)."""
    stem = name.split("-", 1)[0]
    return normalize_product(stem, strict=False)


def normalize_product(name: str, *, strict: bool = True) -> str | None:
    """Case-insensitive product lookup; ``strict`` raises ``ValueError`` for unknown names."""
    for product in PRODUCTS:
        if product.lower() == name.strip().lower():
            return product
    if strict:
        raise ValueError(f"unknown SEV-SNP product {name!r}; expected one of {', '.join(PRODUCTS)}")
    return None
