"""What ``cryptography`` raises from a *loaded* X.509 certificate or CSR whose parts are bad.

``load_der_x509_certificate`` and ``load_der_x509_csr`` decode only the outer structure; the
version, names, extensions, public key and signature algorithm are decoded when first read, and
each can raise something other than ``ValueError`` (``InvalidVersion``, ``DuplicateExtension``,
``UnsupportedAlgorithm`` for an unknown curve, ``ValueError('Invalid key')`` for a point off its
curve, ...). Every parser of certificates an attacker can choose (AMD chains, AK certificates,
kubelet CSRs, mounted TLS bundles) reads the parts it needs under ``except X509_DECODE_ERRORS``
and turns the exception into its own typed error. One tuple, so a new lazy failure found by the
fuzzers is added once.
"""

from __future__ import annotations

from typing import Final

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

X509_DECODE_ERRORS: Final[tuple[type[Exception], ...]] = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)
