"""Test support: a platform that certifies swtpm AKs the way a cloud certifies its vTPMs' AKs.

A ``qemu-vtpm`` validator refuses every AK that is not rooted, so a test node needs what a
cloud gives a real one: an AK persisted in its vTPM and an AK certificate naming it. These
functions play that platform for the tests of every package (and the e2e suite) so each does it
the same way::

    issuer = node_issuer(swtpm.tcti, "worker-0", Role.WORKER, event_log=log)
    validator = node_validator(measurements)  # trusts cached_platform_ca()

``cached_platform_ca()`` is one CA per process, made on first use; tests that need a second,
unrelated platform call ``PlatformCA.generate()`` themselves. Nothing here is used by the
product, and nothing imports pytest.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from typing import Any

from cryptography import x509

from constellation.attestation.identity import Role
from constellation.attestation.identity.ca import PlatformCA
from constellation.attestation.measurements import Measurements
from constellation.attestation.vtpm import (
    AK_HANDLE,
    DEFAULT_AK_TEMPLATE,
    VtpmIssuer,
    VtpmValidator,
    ak_spki_der,
    firmware_measure,
    provision_ak,
)

TEST_CA_NAME = "constellation test platform CA"
# What mini mode's "firmware" measures: the image parts into PCRs 4, 9 and 11.
BOOT_CHAIN: tuple[tuple[int, bytes], ...] = ((4, b"kernel"), (9, b"initrd"), (11, b"uki"))


@functools.cache
def cached_platform_ca() -> PlatformCA:
    """The process-wide test platform CA (key generation is paid once per test session)."""
    return PlatformCA.generate(TEST_CA_NAME)


def platform_roots(ca: PlatformCA | None = None) -> tuple[x509.Certificate, ...]:
    """The roots a validator configures to trust ``ca`` (default: the cached test CA)."""
    return ((ca or cached_platform_ca()).certificate,)


def provision_node(
    tcti: str,
    ca: PlatformCA,
    name: str,
    role: Role,
    *,
    template: str = DEFAULT_AK_TEMPLATE,
    handle: int = AK_HANDLE,
) -> bytes:
    """Persist the vTPM's AK and have ``ca`` certify it as ``name`` in ``role``: the DER
    AK certificate, for ``VtpmIssuer(..., ak_certificate=...)``. Idempotent on the AK."""
    public = provision_ak(tcti, template, handle)
    return ca.issue_ak_certificate(ak_spki_der(public), name, role)


def measure_boot(
    tcti: str, parts: Sequence[tuple[int, bytes]] = BOOT_CHAIN, log: bytes = b""
) -> bytes:
    """Measure ``parts`` into the vTPM as mini mode's firmware does; the resulting event log."""
    for pcr, part in parts:
        log = firmware_measure(tcti, log, pcr, hashlib.sha256(part).digest(), part)
    return log


def node_issuer(
    tcti: str,
    name: str,
    role: Role,
    *,
    ca: PlatformCA | None = None,
    **kwargs: Any,
) -> VtpmIssuer:
    """A ``VtpmIssuer`` for the vTPM at ``tcti`` whose AK ``ca`` (default: the cached test CA)
    certified as ``name``/``role``. ``kwargs`` go to ``VtpmIssuer`` (``event_log``, ...)."""
    certificate = provision_node(
        tcti,
        ca or cached_platform_ca(),
        name,
        role,
        template=kwargs.get("ak_template", DEFAULT_AK_TEMPLATE),
        handle=kwargs.get("ak_handle", AK_HANDLE),
    )
    return VtpmIssuer(tcti, ak_certificate=certificate, **kwargs)


def node_validator(
    measurements: Measurements, *, ca: PlatformCA | None = None, **kwargs: Any
) -> VtpmValidator:
    """A ``VtpmValidator`` trusting ``ca``'s AK certificates (default: the cached test CA).
    ``kwargs`` go to ``VtpmValidator`` (``require_event_log``, ``clock``, ...)."""
    kwargs.setdefault("platform_roots", platform_roots(ca))
    return VtpmValidator(measurements, **kwargs)


__all__ = [
    "BOOT_CHAIN",
    "cached_platform_ca",
    "measure_boot",
    "node_issuer",
    "node_validator",
    "platform_roots",
    "provision_node",
]


def certified_software_document(
    user_data: bytes, nonce: bytes, name: str = "fuzz-node", role: Role = Role.WORKER
) -> dict[str, Any]:
    """A valid qemu-vtpm document from a software TPM whose AK the test platform certified.

    One tagged boot event in PCR 4 with a replaying event log, every other PCR zero: the
    smallest document that passes every check of :func:`node_validator` (with measurements
    that pin at most PCR 4 to its value here). Fuzzers and hostile-field tests start from it.
    """
    from constellation.attestation.eventlog import (
        EV_EVENT_TAG,
        Event,
        TaggedEvent,
        encode_event_log,
        parse_event_log,
        replay,
    )
    from constellation.attestation.testing.softtpm import SoftwareTpmIssuer
    from constellation.attestation.tpm import TPM_ALG_SHA256

    data = TaggedEvent(1, b"fuzz boot").encode()
    event = Event(4, EV_EVENT_TAG, {TPM_ALG_SHA256: hashlib.sha256(data).digest()}, data)
    log = encode_event_log([event])
    pcrs = {i: bytes(32) for i in range(24)} | replay(parse_event_log(log))
    forger = SoftwareTpmIssuer(pcrs, log)
    forger.ak_certificate = cached_platform_ca().issue_ak_certificate(
        forger.ak_spki_der, name, role
    )
    return forger.document(user_data, nonce)
