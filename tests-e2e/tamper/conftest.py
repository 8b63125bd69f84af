"""The tamper suite's harness: one live mini cluster, and an attacker on its loopback ports.

The attacker of issue 10 has network access to a mini cluster and nothing else: no workspace
files, no node's vTPM socket. What it can learn, it learns as anyone could: the ports (read here
from the cluster record for convenience, as a port scan would find them), every node's public
evidence from its VerificationService (PCR values, event log, AK certificate), and the public
cluster ID (admins pass it to `constellation verify`; it is not a secret). From these it forges.

A second kind of attacker is a *platform-certified machine it controls*: a VM rented from the
same platform, running the genuine image, with its own vTPM whose AK the platform certified
under its own instance name (``Attacker.insider``). Its attestation is genuine; what must stop
it is identity-bound membership (its CSR, role, disks and tickets). The test plays the
platform for it with the workspace's platform CA, exactly as ``mini up`` does for real nodes.

Every attack asserts its exact refusal: the gRPC status code and the name of the failed check
in the status details (or the CLI's exit code and report). ``Refusal`` carries both.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from constellation.attestation import atls
from constellation.attestation.atls.certificates import (
    SERVER_NAME,
    TLSIdentity,
    new_client_identity,
)
from constellation.attestation.atls.protocol import (
    GRPC_OPTIONS,
    METADATA_EVIDENCE,
    METADATA_NONCE,
    METADATA_VARIANT,
    atls_user_data,
)
from constellation.attestation.evidence import Issuer, VerifiedEvidence
from constellation.attestation.identity import Role
from constellation.attestation.identity.ca import PlatformCA
from constellation.attestation.swtpm import Swtpm, SwtpmManager
from constellation.attestation.testing.certs import self_signed
from constellation.attestation.testing.softtpm import SoftwareTpmIssuer, public_facts
from constellation.attestation.vtpm import VtpmIssuer
from constellation.bootstrapper.registration import create_kubelet_identity
from constellation.cli.mini.firmware import boot_measure
from constellation.cli.mini.platform import certify_node, load_or_create_platform_ca
from constellation.cli.testing import Completed, run_cli
from constellation.cli.testing import mini_cluster as up_mini_cluster
from constellation.cli.workspace import Workspace
from constellation.proto import atls_pb2, atls_pb2_grpc, join_pb2, join_pb2_grpc

LOOPBACK = "127.0.0.1"
RPC_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Refusal:
    """How an attack ended: a gRPC status code and its details (empty if it was accepted)."""

    code: grpc.StatusCode | None
    details: str

    @classmethod
    def of(cls, call: Callable[[], Any]) -> Refusal:
        try:
            call()
        except grpc.RpcError as err:
            if isinstance(err, grpc.Call):
                return cls(err.code(), err.details() or "")
            return cls(grpc.StatusCode.UNKNOWN, str(err))
        return cls(None, "accepted")

    def is_accepted(self) -> None:
        assert self.code is None, f"refused: {self.code}: {self.details}"

    def is_(self, code: grpc.StatusCode, *checks: str) -> None:
        assert self.code == code, f"expected {code.name}, got {self.code}: {self.details}"
        for check in checks:
            assert check in self.details, f"{check!r} not named in: {self.details}"


class RelayedJoinService:
    """The real JoinService's evidence, fetched for a nonce of the caller's choosing and passed
    on as the attacker's own: genuine and fresh, but labelled for aTLS and naming the real
    service's TLS key (what a relaying rogue server or VerificationService can present)."""

    variant = "qemu-vtpm"

    def __init__(self, attacker: Attacker) -> None:
        self._attacker = attacker

    def issue(self, user_data: bytes, nonce: bytes) -> bytes:
        session = self._attacker.raw_session(client_nonce=nonce)
        session.close()
        return session.server_evidence


class AcceptAnyServer:
    """The attacker does not care whom it talks to: it accepts any server evidence, only
    echoing the user data the aTLS client needs to see bound to the pinned key."""

    variant = "qemu-vtpm"

    def verify(self, document: bytes, nonce: bytes) -> VerifiedEvidence:
        user_data = base64.b64decode(json.loads(document)["user_data"])
        return VerifiedEvidence(self.variant, user_data)

    def validate(self, document: bytes, nonce: bytes) -> bytes:
        return self.verify(document, nonce).user_data


@dataclass
class RawSession:
    """A TLS connection to a mutual aTLS server after the handshake, metadata under the
    attacker's control: for replays, swapped nonces and hand-made evidence."""

    channel: grpc.Channel
    client: TLSIdentity
    server_nonce: bytes
    server_certificate: bytes
    server_evidence: bytes

    @property
    def user_data(self) -> bytes:
        """What genuine client evidence on this connection must be bound to."""
        return atls_user_data(self.client.spki_hash)

    def join(
        self,
        request: join_pb2.IssueJoinTicketRequest,
        *,
        variant: str | None = "qemu-vtpm",
        evidence: bytes | None = None,
        nonce: bytes | None = None,
    ) -> Refusal:
        metadata: list[tuple[str, str | bytes]] = []
        if variant is not None:
            metadata.append((METADATA_VARIANT, variant))
        if evidence is not None:
            metadata.append((METADATA_EVIDENCE, evidence))
        if nonce is not None:
            metadata.append((METADATA_NONCE, nonce))
        stub = join_pb2_grpc.APIStub(self.channel)
        return Refusal.of(
            lambda: stub.IssueJoinTicket(request, metadata=metadata, timeout=RPC_TIMEOUT_S)
        )

    def close(self) -> None:
        self.channel.close()


@dataclass
class Insider:
    """A platform-certified machine running the genuine image, with a vTPM the attacker drives."""

    name: str
    role: Role
    tpm: Swtpm
    event_log: bytes
    ak_certificate: bytes

    def issuer(self) -> VtpmIssuer:
        return VtpmIssuer(
            self.tpm.tcti, event_log=self.event_log, ak_certificate=self.ak_certificate
        )


@dataclass
class Attacker:
    """Everything the tamper suite's attacks use; see the module docstring."""

    workspace: Path
    record: dict[str, Any]
    swtpms: SwtpmManager
    scratch: Path

    # -- what the network shows -------------------------------------------------------------

    @property
    def joinservice(self) -> str:
        return f"{LOOPBACK}:{self.record['joinServicePort']}"

    @property
    def keyservice(self) -> str:
        return f"{LOOPBACK}:{self.record['keyServicePort']}"

    def verification(self, node: str) -> dict[str, Any]:
        return next(v for v in self.record["verification"] if v["node"] == node)

    def init_port(self, node: str) -> int:
        return int(next(n for n in self.record["nodes"] if n["name"] == node)["initPort"])

    def public_document(self, node: str = "mini-worker-0") -> bytes:
        """A node's fresh evidence, as anyone can ask its VerificationService for it."""
        import urllib.request

        nonce = os.urandom(32)
        query = base64.urlsafe_b64encode(nonce).decode()
        url = f"http://{LOOPBACK}:{self.verification(node)['httpPort']}/?nonce={query}"
        with urllib.request.urlopen(url, timeout=RPC_TIMEOUT_S) as answer:
            return base64.b64decode(json.loads(answer.read())["data"])

    def copied(self, node: str = "mini-worker-0") -> tuple[dict[int, bytes], bytes, bytes]:
        """PCRs, event log and AK certificate copied from a node's public evidence."""
        pcrs, log, certificate = public_facts(self.public_document(node))
        assert log is not None
        assert certificate is not None
        return pcrs, log, certificate

    def cluster_id(self) -> bytes:
        """The cluster ID: public (admins hand it to `verify`); read from the state file here."""
        state = Workspace(self.workspace).load_state()
        assert state.cluster_id is not None
        return state.cluster_id

    def forger(self, **overrides: Any) -> SoftwareTpmIssuer:
        """A software "TPM" carrying a genuine node's public PCRs and event log."""
        pcrs, log, _ = self.copied()
        fields: dict[str, Any] = {"pcrs": pcrs, "event_log": log}
        fields.update(overrides)
        return SoftwareTpmIssuer(**fields)

    # -- talking to the JoinService -------------------------------------------------------

    def request(
        self, name: str = "mini-worker-9", *, control_plane: bool = False, disk: str | None = None
    ) -> join_pb2.IssueJoinTicketRequest:
        return join_pb2.IssueJoinTicketRequest(
            disk_uuid=disk or str(uuid.uuid4()),
            certificate_request=create_kubelet_identity(name, LOOPBACK).csr_pem,
            is_control_plane=control_plane,
        )

    def join(
        self, issuer: Issuer, request: join_pb2.IssueJoinTicketRequest | None = None
    ) -> Refusal:
        """A join over mutual aTLS with ``issuer``'s evidence (the aTLS client does the rest)."""
        request = request or self.request()
        with atls.connect(
            self.joinservice, [AcceptAnyServer()], issuer=issuer, timeout=RPC_TIMEOUT_S
        ) as channel:
            stub = join_pb2_grpc.APIStub(channel.channel)
            return Refusal.of(lambda: stub.IssueJoinTicket(request, timeout=RPC_TIMEOUT_S))

    def rejoin(self, issuer: Issuer, disk: str) -> Refusal:
        request = join_pb2.IssueRejoinTicketRequest(disk_uuid=disk)
        with atls.connect(
            self.joinservice, [AcceptAnyServer()], issuer=issuer, timeout=RPC_TIMEOUT_S
        ) as channel:
            stub = join_pb2_grpc.APIStub(channel.channel)
            return Refusal.of(lambda: stub.IssueRejoinTicket(request, timeout=RPC_TIMEOUT_S))

    def tls_channel(self, client: TLSIdentity | None = None) -> tuple[grpc.Channel, bytes]:
        """TLS to the JoinService with a client certificate of the public aTLS client CA, as
        anyone can make one, and the server certificate (DER) it showed; nothing attested."""
        client = client or new_client_identity()
        certificate = atls.fetch_server_certificate(self.joinservice, client, timeout=RPC_TIMEOUT_S)
        pem = x509.load_der_x509_certificate(certificate).public_bytes(serialization.Encoding.PEM)
        credentials = grpc.ssl_channel_credentials(
            root_certificates=pem, private_key=client.key_pem, certificate_chain=client.cert_pem
        )
        channel = grpc.secure_channel(
            self.joinservice,
            credentials,
            options=[("grpc.ssl_target_name_override", SERVER_NAME), *GRPC_OPTIONS],
        )
        return channel, certificate

    def raw_session(
        self,
        client: TLSIdentity | None = None,
        nonce_size: int = 32,
        *,
        client_nonce: bytes | None = None,
    ) -> RawSession:
        """TLS to the JoinService and its ``Attest`` step (for ``client_nonce``, random by
        default), nothing verified, nothing else sent yet."""
        client = client or new_client_identity()
        channel, certificate = self.tls_channel(client)
        nonce = os.urandom(nonce_size) if client_nonce is None else client_nonce
        answer = atls_pb2_grpc.HandshakeStub(channel).Attest(
            atls_pb2.AttestRequest(client_nonce=nonce), timeout=RPC_TIMEOUT_S
        )
        return RawSession(
            channel, client, answer.server_nonce, certificate, bytes(answer.attestation)
        )

    # -- machines the platform certifies ------------------------------------------------------

    def platform_ca(self) -> PlatformCA:
        """The workspace's platform CA: the attacker's *platform*, not the attacker, uses it."""
        return load_or_create_platform_ca(self.workspace / "mini" / "platform-ca")

    def insider(
        self,
        role: Role = Role.WORKER,
        *,
        name: str | None = None,
        image: Path | None = None,
        ca: PlatformCA | None = None,
    ) -> Insider:
        """A fresh platform-certified machine that booted ``image`` (default: the genuine one)."""
        # Unique across runs: a name, once joined, stays bound to its first AK.
        name = name or f"mini-rogue-{uuid.uuid4().hex[:8]}"
        (tpm,) = self.swtpms.start(1)
        certificate = certify_node(tpm.tcti, ca or self.platform_ca(), name, role)
        log_path = self.scratch / f"{name}-{uuid.uuid4().hex[:6]}.eventlog"
        log = boot_measure(tpm.tcti, image or self.workspace / "mini" / "image", log_path)
        return Insider(name, role, tpm, log, certificate)

    def tampered_image(self) -> Path:
        """A copy of the genuine image with one byte of its bootstrapper changed."""
        target = self.scratch / f"tampered-{uuid.uuid4().hex[:6]}"
        shutil.copytree(self.workspace / "mini" / "image", target)
        victim = next(target.rglob("bootstrapper/joinclient.py"))
        victim.write_bytes(victim.read_bytes() + b"\n# tampered\n")
        return target

    def run(self, *args: str) -> Completed:
        return run_cli(self.workspace, *args)


def self_signed_ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """An attacker's own CA, with whatever name it likes (e.g. the platform CA's)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key, self_signed(key, common_name, organization="constellation-platform")


#: Run the suite against a mini cluster that is already up (its workspace directory) instead of
#: bringing one up and down: ``CONSTELLATION_TAMPER_WORKSPACE=./constellation-mini``.
EXISTING_WORKSPACE = "CONSTELLATION_TAMPER_WORKSPACE"


@contextmanager
def _cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    existing = os.environ.get(EXISTING_WORKSPACE)
    if existing:
        yield Path(existing).resolve()
        return
    with up_mini_cluster(tmp_path_factory.mktemp("tamper-workspace"), workers=1) as up:
        yield up.workspace


@dataclass(frozen=True)
class ServerLogs:
    """Every log file of the mini cluster, and how far each had been written when the attacks
    began: what the attacks made the servers log is everything after that.

    An untyped error is a bug whatever the attack was (issue 14): a typed refusal is logged as
    ``rpc.refused`` with its status code, never with a traceback, and never as INTERNAL.
    """

    workspace: Path
    record: dict[str, Any]
    offsets: dict[Path, int]

    @classmethod
    def mark(cls, workspace: Path, record: dict[str, Any]) -> ServerLogs:
        logs = cls(workspace, record, {})
        return cls(workspace, record, {path: path.stat().st_size for path in logs.files()})

    def files(self) -> list[Path]:
        """The cluster's logs: ``mini/logs/``, each node's control-plane logs, and whatever
        log the cluster record names for a process (services, supervisors, swtpms)."""
        mini = self.workspace / "mini"
        found = set(mini.glob("logs/*.log")) | set(mini.glob("nodes/*/state/**/*.log"))
        named = [p.get("log") for p in self.record.get("processes", [])]
        for node in self.record.get("nodes", []):
            named += [node.get(part, {}).get("log") for part in ("swtpm", "bootstrapper")]
        found |= {Path(log) for log in named if log}
        return sorted(path for path in found if path.is_file())

    def untyped_errors(self) -> list[str]:
        """``file:line: text`` of each traceback or INTERNAL logged since :meth:`mark`."""
        files = self.files()
        if not files:  # a check that read nothing must not pass
            return [f"{self.workspace / 'mini'}: no log file found to check"]
        problems: list[str] = []
        for path in files:
            with path.open("rb") as log:
                log.seek(self.offsets.get(path, 0))
                start = log.read().decode(errors="replace")
            first = self._line_number(path, self.offsets.get(path, 0))
            for number, line in enumerate(start.splitlines(), first):
                if _is_untyped_error(line):
                    problems.append(f"{path}:{number}: {line[:600]}")
        return problems

    @staticmethod
    def _line_number(path: Path, offset: int) -> int:
        with path.open("rb") as log:
            return log.read(offset).count(b"\n") + 1


def _is_untyped_error(line: str) -> bool:
    """A traceback, or a status INTERNAL (``rpc.refused``/``rpc.failed`` of the status
    interceptor, ``outcome`` of the request counter)."""
    if "Traceback (most recent call last)" in line or "StatusCode.INTERNAL" in line:
        return True
    if not line.startswith("{"):
        return False
    try:
        entry = json.loads(line)
    except ValueError:
        return False
    if not isinstance(entry, dict):
        return False
    return (
        entry.get("event") == "rpc.failed"
        or entry.get("code") == "INTERNAL"
        or entry.get("outcome") == "INTERNAL"
    )


@pytest.fixture(scope="session")
def attacker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Attacker]:
    """The attacker of every tamper module; when the session ends (after the last attack of
    every module, before the cluster goes down) the cluster's logs must show no untyped error
    that the attacks caused."""
    with _cluster(tmp_path_factory) as workspace, SwtpmManager() as swtpms:
        record = json.loads((workspace / "mini" / "cluster.json").read_text())
        logs = ServerLogs.mark(workspace, record)
        yield Attacker(workspace, record, swtpms, tmp_path_factory.mktemp("tamper-scratch"))
        problems = logs.untyped_errors()
        if problems:
            pytest.fail(
                f"the tamper suite's attacks made the mini cluster log {len(problems)} untyped "
                "error(s) (a traceback or status INTERNAL; every bad input must get a typed "
                "refusal: find the handler that raised and map its error in the service's "
                "status table):\n" + "\n".join(problems),
                pytrace=False,
            )
