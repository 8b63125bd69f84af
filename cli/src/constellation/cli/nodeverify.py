"""``constellation verify``: ask a running node for fresh evidence and judge it.

Protocol (DESIGN.md §2 step 7, §3):

1. The CLI draws a fresh 32-byte nonce (never reused, never chosen by the node).
2. It asks the node's VerificationService for evidence over that nonce — gRPC
   ``verify.API/GetAttestation`` or HTTP ``GET /?nonce=<base64url>`` — one bounded attempt.
3. It validates the document with the configured measurements, except PCR 15, which must equal
   ``pcr15_for_cluster_id(cluster_id)``: the node must have been initialized for *this*
   cluster. The evidence must carry exactly the VerificationService's purpose label
   ``VERIFY_USER_DATA_LABEL`` (``b"constellation/verify/v1\\0"``) as user data: aTLS evidence
   (labelled ``constellation/atls/v1``, naming a TLS key) is refused even from a genuine node.
4. Every failed check is reported (expected vs actual); the verdict is never partial.
5. When the CLI asked a *named* node (``verify --all``), the platform identity the evidence
   proves must carry that name (``identity.name``): an endpoint answering with another node's
   genuine evidence does not verify the node it was listed for (:func:`bind_to_node`).

``verify --all`` gives every node of the inventory (registered Nodes and the workspace's nodes,
:mod:`constellation.cli.inventory`) one :class:`NodeCheck`: verified, refused, or not checked
with the reason, so the summary "verified N of M nodes" counts every node there is.

Transport is plain gRPC/HTTP on purpose: the nonce makes the evidence fresh and the quote
signature makes it authentic, so the channel itself does not need to be trusted.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from cryptography import x509

from constellation.attestation.boundedparse import loads_json
from constellation.attestation.errors import Failure, ValidationError
from constellation.attestation.evidence import VERIFY_USER_DATA_LABEL, Validator, VerifiedEvidence
from constellation.attestation.identity import NodeIdentity
from constellation.attestation.measurements import Measurements
from constellation.bootstrapper.metadata import Endpoint
from constellation.cli.errors import ConfigError, VerifyError

NONCE_LENGTH = 32
VERIFY_USER_DATA = VERIFY_USER_DATA_LABEL
REQUEST_TIMEOUT_SECONDS = 10.0
MAX_DOCUMENT_SIZE = 16 << 20


def fresh_nonce() -> bytes:
    return secrets.token_bytes(NONCE_LENGTH)


def expected_measurements(configured: Measurements, cluster_id: bytes) -> Measurements:
    """The configured measurements with PCR 15 enforced as marked for ``cluster_id``."""
    if not configured:
        raise ConfigError(
            "the configuration has no measurements to verify against",
            hint="run `constellation config fetch-measurements` (or `constellation mini up`)",
        )
    return configured.with_pcr15(cluster_id)


def build_validator(
    variant: str,
    measurements: Measurements,
    platform_roots: Sequence[x509.Certificate] = (),
) -> Validator:
    """The validator of the configured attestation variant, from the variant registry.

    Every validator the CLI builds requires a replaying event log (the registry's default);
    ``platform_roots`` (``attestation.platformRoots``) root the nodes' attestation keys.
    """
    from constellation.attestation.variants import VariantError, get_variant

    try:
        return get_variant(variant).validator(
            measurements, platform_roots=tuple(platform_roots) or None
        )
    except VariantError as err:
        raise ConfigError(
            f"`constellation verify` cannot validate variant {variant!r}: {err}",
            hint="this build verifies qemu-vtpm (mini mode); other variants follow",
        ) from None


def request_attestation_grpc(
    endpoint: Endpoint, nonce: bytes, *, timeout: float = REQUEST_TIMEOUT_SECONDS
) -> bytes:
    """``verify.API/GetAttestation`` over plain gRPC; one call bounded by ``timeout``."""
    import grpc

    from constellation.proto import verify_pb2, verify_pb2_grpc

    options = [("grpc.max_receive_message_length", MAX_DOCUMENT_SIZE)]
    with grpc.insecure_channel(str(endpoint), options=options) as channel:
        stub = verify_pb2_grpc.APIStub(channel)
        try:
            response = stub.GetAttestation(
                verify_pb2.GetAttestationRequest(nonce=nonce), timeout=timeout
            )
        except grpc.RpcError as err:
            code = err.code() if isinstance(err, grpc.Call) else None
            details = err.details() if isinstance(err, grpc.Call) else str(err)
            raise VerifyError(
                f"the verification service at {endpoint} did not answer: "
                f"{code.name if code else 'error'}: {details}",
                hint="check the endpoint (-e host:port) and that the node is running",
            ) from None
    document: bytes = response.attestation
    if not document:
        raise VerifyError(f"the verification service at {endpoint} returned an empty document")
    return document


def request_attestation_http(
    endpoint: Endpoint, nonce: bytes, *, timeout: float = REQUEST_TIMEOUT_SECONDS
) -> bytes:
    """``GET /?nonce=<base64url>`` → ``{"data": "<base64 document>"}``; one bounded request."""
    query = urllib.parse.urlencode({"nonce": base64.urlsafe_b64encode(nonce).decode()})
    url = f"http://{endpoint}/?{query}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body: bytes = response.read(MAX_DOCUMENT_SIZE * 2)
    except urllib.error.HTTPError as err:
        raise VerifyError(
            f"the verification service at {endpoint} answered HTTP {err.code}",
            hint="check the endpoint and the node's logs",
        ) from None
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        raise VerifyError(
            f"the verification service at {endpoint} did not answer within {timeout:.0f}s: "
            f"{getattr(err, 'reason', err)}",
            hint="check the endpoint (-e host:port) and that the node is running",
        ) from None
    try:
        data = loads_json(body, max_size=MAX_DOCUMENT_SIZE * 2, error=ValueError)["data"]
        return base64.b64decode(data, validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise VerifyError(
            f"the verification service at {endpoint} sent a malformed answer"
        ) from None


def _render_user_data(user_data: bytes) -> str:
    """Printable ASCII as text (labels are), anything else as hex; at most 64 bytes shown."""
    shown = user_data[:64]
    if all(0x20 <= b < 0x7F or b == 0 for b in shown):
        text = shown.decode("ascii").replace("\0", "\\0")
    else:
        text = "0x" + shown.hex()
    return text + ("..." if len(user_data) > 64 else "")


@dataclass(frozen=True)
class PcrRow:
    index: int
    expected: str
    actual: str
    status: str  # "ok", "mismatch", "warn" (warn-only mismatch)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pcr": self.index,
            "expected": self.expected,
            "actual": self.actual,
            "status": self.status,
        }


@dataclass(frozen=True)
class VerifyReport:
    """The verdict on one node: every PCR compared and every failed check."""

    endpoint: str
    variant: str
    cluster_id: bytes
    verified: bool
    pcrs: tuple[PcrRow, ...] = ()
    failures: tuple[Failure, ...] = ()
    warnings: tuple[Failure, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)
    #: The platform identity the evidence proved (AK certificate), if it verified.
    identity: NodeIdentity | None = None

    def to_dict(self) -> dict[str, Any]:
        identity = self.identity
        return {
            "endpoint": self.endpoint,
            "variant": self.variant,
            "clusterID": base64.b64encode(self.cluster_id).decode(),
            "verified": self.verified,
            "identity": None
            if identity is None
            else {
                "name": identity.name,
                "role": identity.role.value,
                "akSHA256": identity.ak_sha256,
                "platformRootSHA256": identity.platform,
            },
            "pcrs": [row.to_dict() for row in self.pcrs],
            "failures": [f.to_dict() for f in self.failures],
            "warnings": [w.to_dict() for w in self.warnings],
        }


def judge(
    validator: Validator,
    measurements: Measurements,
    document: bytes,
    nonce: bytes,
    *,
    endpoint: str,
    cluster_id: bytes,
) -> VerifyReport:
    """Validate ``document``; return a report that lists every PCR and every failure. Pure."""
    try:
        evidence: VerifiedEvidence | None = validator.verify(document, nonce)
        failures: list[Failure] = []
        warnings = list(evidence.warnings) if evidence else []
    except ValidationError as err:
        evidence = None
        failures = list(err.failures)
        warnings = list(err.warnings)
    if evidence is not None and evidence.user_data != VERIFY_USER_DATA:
        failures.append(
            Failure(
                "user_data",
                _render_user_data(VERIFY_USER_DATA),
                _render_user_data(evidence.user_data),
                detail="the evidence was not issued by a verification service",
            )
        )
    by_check = {f.check: f for f in [*failures, *warnings]}
    # If only PCR comparisons failed, the quote itself verified: the other PCRs matched.
    quote_trusted = evidence is not None or all(f.check.startswith("pcr[") for f in failures)
    rows = []
    for index, measurement in measurements.items():
        finding = by_check.get(f"pcr[{index}]")
        if finding is not None:
            rows.append(
                PcrRow(
                    index,
                    finding.expected,
                    finding.actual,
                    "mismatch" if finding.enforced else "warn",
                )
            )
        elif quote_trusted:
            expected = measurement.expected.hex()
            rows.append(PcrRow(index, expected, expected, "ok"))
        else:
            # The quote was rejected: the document's PCR values are not trustworthy.
            rows.append(PcrRow(index, measurement.expected.hex(), "unverified", "unverified"))
    return VerifyReport(
        endpoint=endpoint,
        variant=validator.variant,
        cluster_id=cluster_id,
        verified=evidence is not None and not failures,
        pcrs=tuple(rows),
        failures=tuple(failures),
        warnings=tuple(warnings),
        identity=evidence.identity if evidence is not None and not failures else None,
    )


def bind_to_node(report: VerifyReport, name: str) -> VerifyReport:
    """``report`` refused with ``identity.name`` if it verified an identity other than ``name``.

    Without this an endpoint recorded for one node could answer with another node's genuine
    evidence, and the row of the node asked for would read "verified".
    """
    identity = report.identity
    if not report.verified or identity is None or identity.name == name:
        return report
    failure = Failure(
        "identity.name",
        name,
        identity.name,
        detail="the endpoint answered with evidence of another node",
    )
    return replace(report, verified=False, failures=(*report.failures, failure), identity=None)


class CheckOutcome(StrEnum):
    VERIFIED = "verified"
    REFUSED = "refused"
    NOT_CHECKED = "not-checked"


@dataclass(frozen=True)
class NodeCheck:
    """One row of ``verify --all``: a node and what could be established about it.

    ``reason`` says why a node was not checked (no endpoint known, endpoint unreachable, not
    registered); ``report`` is the verdict when the node answered.
    """

    name: str
    registered: bool | None
    endpoint: str | None
    outcome: CheckOutcome
    reason: str = ""
    report: VerifyReport | None = None

    def to_dict(self) -> dict[str, Any]:
        verdict: dict[str, Any] = (
            self.report.to_dict()
            if self.report is not None
            else {
                "endpoint": self.endpoint,
                "verified": False,
                "identity": None,
                "pcrs": [],
                "failures": [],
                "warnings": [],
            }
        )
        return {
            "name": self.name,
            "registered": self.registered,
            "status": self.outcome.value,
            "reason": self.reason or None,
            **verdict,
        }
