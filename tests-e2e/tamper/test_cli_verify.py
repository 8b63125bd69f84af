"""A rogue VerificationService, and what `constellation verify` / `attestation verify` refuse.

The attacker answers where the admin's `constellation verify` asks (it owns the address, or
redirects the admin's traffic). It runs the product's own VerificationService servers with an
``EvidenceSource`` of its choosing: a software "TPM" carrying a genuine node's copied PCRs,
event log and stolen AK certificate; a platform-certified machine it controls (``insider``)
with its PCR 15 marked for this cluster, a tampered image, or no event log; a document it
fetched earlier from a genuine node (for another nonce); the aTLS evidence the real JoinService
gives for the admin's very nonce; and parser bombs. It also hands the admin documents to run
through `attestation verify`. It cannot learn the admin's nonce in advance.

Every attack asserts the CLI's exit code and exactly the failed checks it reports (the
``failures`` of ``-o json``; the text report names them too), and that no traceback reaches
the admin. The positive control: a genuine node, asked directly, verifies.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread

import pytest

from constellation.attestation.evidence import Issuer
from constellation.attestation.identity import Role
from constellation.attestation.identity.ca import PlatformCA
from constellation.attestation.nodelock import NodeLock
from constellation.attestation.service.metrics import ServiceMetrics
from constellation.attestation.testing.softtpm import SoftwareTpmIssuer
from constellation.attestation.vtpm import VtpmIssuer
from constellation.cli.testing import Completed
from constellation.verificationservice.evidence import EvidenceSource
from constellation.verificationservice.server import (
    VerificationGrpcServer,
    VerificationHttpServer,
)

from .conftest import LOOPBACK, Attacker, Insider, RelayedJoinService, self_signed_ca

pytestmark = [
    pytest.mark.tamper,
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.swtpm,
    pytest.mark.kube,
]

NOT_TRUSTED = 1
UNUSABLE = 2
LOOKALIKE_CA_NAME = "constellation-mini platform CA"
ANOTHER_CLUSTER_ID = b"\x42" * 32
DEEP_JSON = b"[" * 100_000 + b"]" * 100_000


@dataclass(frozen=True)
class Rogue:
    """A rogue VerificationService's two endpoints."""

    grpc: str
    http: str

    def endpoint(self, protocol: str) -> str:
        return self.grpc if protocol == "grpc" else self.http


@contextmanager
def rogue_verificationservice(issuer: Issuer) -> Iterator[Rogue]:
    """The product's VerificationService servers, attesting with the attacker's ``issuer``."""
    metrics = ServiceMetrics("rogue-verificationservice")
    source = EvidenceSource(issuer, metrics)
    grpc_server = VerificationGrpcServer(source, metrics)
    port = grpc_server.add_port(f"{LOOPBACK}:0")
    http_server = VerificationHttpServer(source, metrics, LOOPBACK, 0)
    grpc_server.start()
    http_server.start()
    try:
        yield Rogue(f"{LOOPBACK}:{port}", f"{LOOPBACK}:{http_server.port}")
    finally:
        http_server.close()
        grpc_server.grpc_server.stop(None).wait(5)


def verify(
    attacker: Attacker, endpoint: str, *args: str, cluster_id: bytes | None = None
) -> Completed:
    """`constellation verify` of ``endpoint`` as an admin runs it, the cluster ID passed."""
    cluster = base64.b64encode(cluster_id or attacker.cluster_id()).decode()
    return attacker.run("verify", "-e", endpoint, "--cluster-id", cluster, *args)


def failed_checks(result: Completed) -> set[str]:
    """The checks a `verify -o json` report lists as failed (asserting it is not verified)."""
    report = result.json()
    assert report["verified"] is False
    return {failure["check"] for failure in report["failures"]}


def no_traceback(result: Completed) -> None:
    assert "Traceback" not in result.stdout + result.stderr
    assert "unexpected internal error" not in result.stderr


# -- the rogues' issuers ----------------------------------------------------------------------


class Fixed:
    """Answers every nonce with the same document."""

    variant = "qemu-vtpm"

    def __init__(self, document: bytes) -> None:
        self._document = document

    def issue(self, user_data: bytes, nonce: bytes) -> bytes:
        return self._document


def _marked(insider: Insider, cluster_id: bytes) -> Insider:
    assert NodeLock(insider.tpm.tcti).try_lock(cluster_id)
    return insider


def _without_log(insider: Insider) -> VtpmIssuer:
    return VtpmIssuer(insider.tpm.tcti, event_log=None, ak_certificate=insider.ak_certificate)


def _stolen(attacker: Attacker, *, log: bool = True) -> SoftwareTpmIssuer:
    """A software key with the worker's copied PCRs (and log) and its stolen AK certificate."""
    pcrs, event_log, certificate = attacker.copied("mini-worker-0")
    return SoftwareTpmIssuer(pcrs, event_log if log else None, certificate)


def _lookalike(attacker: Attacker) -> SoftwareTpmIssuer:
    forger = attacker.forger()
    key, certificate = self_signed_ca(LOOKALIKE_CA_NAME)
    forger.ak_certificate = PlatformCA(certificate, key).issue_ak_certificate(
        forger.ak_spki_der, "mini-worker-0", Role.WORKER
    )
    return forger


# Each attack: (the rogue's issuer, protocol, exactly the checks `verify -o json` lists).
ATTACKS: dict[str, tuple[Callable[[Attacker], Issuer], str, set[str]]] = {
    "software-key-with-a-nodes-stolen-certificate": (
        _stolen,
        "grpc",
        {"ak.certificate.key"},
    ),
    "software-key-with-a-nodes-stolen-certificate-over-http": (
        _stolen,
        "http",
        {"ak.certificate.key"},
    ),
    "software-key-with-a-stolen-certificate-and-no-event-log": (
        lambda a: _stolen(a, log=False),
        "grpc",
        {"ak.certificate.key", "eventlog.present"},
    ),
    "software-key-copied-pcrs-no-certificate": (
        lambda a: a.forger(),
        "grpc",
        {"ak.certificate"},
    ),
    "software-key-certified-by-a-lookalike-ca": (
        _lookalike,
        "http",
        {"ak.certificate.chain"},
    ),
    "certified-machine-marked-for-the-cluster-without-an-event-log": (
        lambda a: _without_log(_marked(a.insider(), a.cluster_id())),
        "grpc",
        {"eventlog.present"},
    ),
    "certified-machine-never-initialized": (
        lambda a: a.insider().issuer(),
        "grpc",
        {"pcr[15]"},
    ),
    "certified-machine-of-another-cluster": (
        lambda a: _marked(a.insider(), ANOTHER_CLUSTER_ID).issuer(),
        "http",
        {"pcr[15]"},
    ),
    "certified-machine-booting-a-tampered-image": (
        lambda a: _marked(a.insider(image=a.tampered_image()), a.cluster_id()).issuer(),
        "grpc",
        {"pcr[4]", "pcr[9]"},
    ),
    "certified-by-another-platform": (
        lambda a: _marked(
            a.insider(ca=PlatformCA.generate(LOOKALIKE_CA_NAME)), a.cluster_id()
        ).issuer(),
        "grpc",
        {"ak.certificate.chain"},
    ),
    "genuine-nodes-earlier-document-replayed": (
        lambda a: Fixed(a.public_document("mini-worker-0")),
        "grpc",
        {"quote.qualifying_data"},
    ),
    "joinservice-atls-evidence-for-the-admins-nonce": (
        lambda a: RelayedJoinService(a),
        "grpc",
        {"user_data"},
    ),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_a_rogue_verificationservice_is_refused(attacker: Attacker, attack: str) -> None:
    make, protocol, checks = ATTACKS[attack]
    with rogue_verificationservice(make(attacker)) as rogue:
        result = verify(attacker, rogue.endpoint(protocol), "--protocol", protocol, "-o", "json")
    assert result.code == NOT_TRUSTED, result.stderr
    assert failed_checks(result) == checks
    no_traceback(result)


def test_the_text_report_names_the_stolen_certificate(attacker: Attacker) -> None:
    with rogue_verificationservice(_stolen(attacker)) as rogue:
        result = verify(attacker, rogue.grpc)
    assert result.code == NOT_TRUSTED
    assert "NOT VERIFIED" in result.stdout
    assert "FAILED ak.certificate.key: " in result.stdout
    assert "rejected, 1 failed check: ak.certificate.key: " in result.stderr
    assert "do not send it secrets" in result.stderr
    no_traceback(result)


def test_a_genuine_node_with_another_clusters_id_is_refused(attacker: Attacker) -> None:
    endpoint = f"{LOOPBACK}:{attacker.verification('mini-worker-0')['grpcPort']}"
    result = verify(attacker, endpoint, "-o", "json", cluster_id=ANOTHER_CLUSTER_ID)
    assert result.code == NOT_TRUSTED, result.stderr
    assert failed_checks(result) == {"pcr[15]"}
    no_traceback(result)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_control_a_genuine_node_verifies(attacker: Attacker, protocol: str) -> None:
    port = attacker.verification("mini-worker-0")[f"{protocol}Port"]
    result = verify(attacker, f"{LOOPBACK}:{port}", "--protocol", protocol, "-o", "json")
    assert result.code == 0, result.stderr
    report = result.json()
    assert report["verified"] is True
    assert report["failures"] == []


# -- parser bombs -----------------------------------------------------------------------------


def test_a_document_nested_100k_deep_is_unusable_not_a_crash(attacker: Attacker) -> None:
    with rogue_verificationservice(Fixed(DEEP_JSON)) as rogue:
        result = verify(attacker, rogue.grpc, "-o", "json")
    assert result.code == NOT_TRUSTED, result.stderr
    # With -o json the one failure document goes to stdout (cli.output.emit_error).
    assert json.loads(result.stdout)["error"]["exit_code"] == NOT_TRUSTED
    assert (
        "Error: vTPM document: nesting deeper than 32 levels (at offset 32); refused before parsing"
        in result.stderr
    )
    no_traceback(result)


@contextmanager
def _answering(body: bytes) -> Iterator[str]:
    """An HTTP server that answers every request with ``body`` (JSON content type)."""

    class Answer(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((LOOPBACK, 0), Answer)
    server.daemon_threads = True
    thread = Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"{LOOPBACK}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_an_http_answer_nested_100k_deep_is_malformed_not_a_crash(attacker: Attacker) -> None:
    with _answering(DEEP_JSON) as endpoint:
        result = verify(attacker, endpoint, "--protocol", "http", "-o", "json")
    assert result.code == NOT_TRUSTED, result.stderr
    # With -o json the one failure document goes to stdout (cli.output.emit_error).
    assert json.loads(result.stdout)["error"]["exit_code"] == NOT_TRUSTED
    assert f"the verification service at {endpoint} sent a malformed answer" in result.stderr
    no_traceback(result)


# -- `constellation attestation verify` on what the attacker hands the admin ------------------


def _write(attacker: Attacker, name: str, data: bytes) -> Path:
    path = attacker.scratch / name
    path.write_bytes(data)
    return path


def _signer(attacker: Attacker) -> Path:
    """A well-formed certificate for --signer (a node's AK certificate: not an AMD VCEK)."""
    return attacker.workspace / "mini" / "nodes" / "mini-worker-0" / "ak-cert.der"


def test_attestation_verify_of_a_deep_json_signer_is_unusable(attacker: Attacker) -> None:
    deep = _write(attacker, "deep.json", DEEP_JSON)
    result = attacker.run("attestation", "verify", "--report", str(deep), "--signer", str(deep))
    assert result.code == UNUSABLE
    assert result.stdout == ""
    assert "Error: unusable input: not a DER X.509 certificate" in result.stderr
    no_traceback(result)


def test_attestation_verify_of_a_deep_json_report_is_rejected(attacker: Attacker) -> None:
    """Any 1184 bytes parse as an SEV-SNP report (the parser ignores what follows): 100k
    brackets are a report of version 0x5b5b5b5b and are rejected check by check, no crash."""
    deep = _write(attacker, "deep-report.json", DEEP_JSON)
    result = attacker.run(
        "attestation",
        "verify",
        "--report",
        str(deep),
        "--signer",
        str(_signer(attacker)),
        "-o",
        "json",
    )
    assert result.code == NOT_TRUSTED, result.stderr
    report = result.json()
    assert report["verified"] is False
    checks = {failure["check"] for failure in report["failures"]}
    assert {"snp.report.version", "snp.report.signature", "snp.vcek.key"} <= checks
    no_traceback(result)


def test_attestation_verify_of_an_atls_labelled_genuine_document(attacker: Attacker) -> None:
    """The real JoinService's aTLS evidence is no SEV-SNP report: rejected, not trusted."""
    from constellation.attestation.atls.protocol import CLIENT_NONCE_SIZE

    document = RelayedJoinService(attacker).issue(b"", bytes(CLIENT_NONCE_SIZE))
    assert b"constellation/atls/v1" in base64.b64decode(json.loads(document)["user_data"])
    path = _write(attacker, "atls-document.json", document)
    result = attacker.run(
        "attestation", "verify", "--report", str(path), "--signer", str(_signer(attacker))
    )
    assert result.code == NOT_TRUSTED, result.stderr
    assert "SEV-SNP report REJECTED" in result.stdout
    assert "  - snp.report.version: expected one of 2, 3, 4, 5, got " in result.stdout
    assert "Error: the report is not trusted." in result.stderr
    no_traceback(result)
