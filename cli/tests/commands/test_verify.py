"""``constellation verify`` against real vTPM evidence from swtpm.

Two kinds of node: the real VerificationService command (a subprocess quoting with the swtpm),
and a small in-test gRPC server that issues with ``VtpmIssuer`` on the same kind of swtpm but
can be told to misbehave (replay an old document, use other user data, drop the event log), so
every check is seen to reject. In both, PCR 15 was marked with the cluster ID by the real node
lock, and the node's AK was certified by the test platform CA that the configuration's
``attestation.platformRoots`` names, as ``mini up`` does. The attacker without a TPM is the
software key of ``attestation.testing.softtpm``, quoting the PCRs and event log it copied from
the node's public evidence.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import grpc
import pytest

from constellation.attestation.evidence import VERIFY_USER_DATA_LABEL, Issuer
from constellation.attestation.identity import Role
from constellation.attestation.measurements import Measurement, Measurements, pcr15_for_cluster_id
from constellation.attestation.nodelock import NodeLock
from constellation.attestation.testing.platform import cached_platform_ca, provision_node
from constellation.attestation.testing.softtpm import SoftwareTpmIssuer, public_facts
from constellation.attestation.vtpm import VtpmIssuer, firmware_measure, open_tpm, read_pcrs
from constellation.bootstrapper.metadata import Endpoint
from constellation.cli.config import Provider, default_config
from constellation.cli.loopbackapi import closed_port, node_list, write_kubeconfig
from constellation.cli.mini.cluster import kubeconfig_path
from constellation.cli.workspace import ClusterState, NodeRecord, Workspace
from constellation.proto import verify_pb2, verify_pb2_grpc

pytestmark = pytest.mark.swtpm

MEASURED_PCRS = (4, 9, 11)


@dataclass
class NodeBehaviour:
    user_data: bytes = VERIFY_USER_DATA_LABEL
    replay_nonce: bytes | None = None  # answer with evidence for this nonce instead
    drop_event_log: bool = False  # remove the event log from the genuine document
    requests: list[bytes] = field(default_factory=list)


class _VerifyServicer(verify_pb2_grpc.APIServicer):
    def __init__(self, issuer: Issuer, behaviour: NodeBehaviour) -> None:
        self.issuer = issuer
        self.behaviour = behaviour

    def GetAttestation(self, request: Any, context: Any) -> Any:
        self.behaviour.requests.append(request.nonce)
        nonce = self.behaviour.replay_nonce or request.nonce
        document = self.issuer.issue(self.behaviour.user_data, nonce)
        if self.behaviour.drop_event_log:
            fields = json.loads(document)
            fields["event_log"] = None
            document = json.dumps(fields, sort_keys=True).encode()
        return verify_pb2.GetAttestationResponse(attestation=document)


@contextlib.contextmanager
def _serve(issuer: Issuer, behaviour: NodeBehaviour) -> Iterator[Endpoint]:
    """A verification endpoint on loopback answering with ``issuer``'s evidence."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    verify_pb2_grpc.add_APIServicer_to_server(_VerifyServicer(issuer, behaviour), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield Endpoint("127.0.0.1", port)
    finally:
        server.stop(grace=None).wait(5)


@dataclass
class Node:
    workspace: Path
    cluster_id: bytes
    pcrs: dict[int, bytes]
    endpoint: str
    behaviour: NodeBehaviour
    issuer: VtpmIssuer
    event_log: bytes
    ak_certificate: bytes


@pytest.fixture
def node(swtpm: Any, tmp_path: Path, mini_config: Any) -> Iterator[Node]:
    log = b""
    for pcr in MEASURED_PCRS:
        log = firmware_measure(swtpm.tcti, log, pcr, os.urandom(32), f"image part {pcr}".encode())
    cluster_id = os.urandom(32)
    assert NodeLock(swtpm.tcti).try_lock(cluster_id)
    with open_tpm(swtpm.tcti) as esapi:
        _, pcrs = read_pcrs(esapi)

    certificate = provision_node(swtpm.tcti, cached_platform_ca(), "mini-cp-0", Role.CONTROL_PLANE)
    issuer = VtpmIssuer(swtpm.tcti, event_log=log, ak_certificate=certificate)
    behaviour = NodeBehaviour()
    workspace = Workspace(tmp_path)
    measurements = Measurements({i: Measurement(pcrs[i]) for i in MEASURED_PCRS})
    workspace.save_config(mini_config(measurements), overwrite=False)
    with _serve(issuer, behaviour) as endpoint:
        workspace.save_state(
            ClusterState(
                name="mini",
                cluster_id=cluster_id,
                verify_endpoint=endpoint,
                nodes=(NodeRecord("mini-cp-0", "control-plane", endpoint),),
            )
        )
        yield Node(tmp_path, cluster_id, pcrs, str(endpoint), behaviour, issuer, log, certificate)


def _set_measurements(node: Node, measurements: Measurements) -> None:
    workspace = Workspace(node.workspace)
    config = workspace.load_config().with_measurements(measurements)
    workspace.save_config(config, overwrite=True)


def _checks(report: dict[str, Any]) -> set[str]:
    return {f["check"] for f in report["failures"]}


def test_node_of_this_cluster_is_verified(invoke: Any, node: Node) -> None:
    result = invoke(node.workspace, "verify", "-o", "json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["verified"] is True
    assert report["failures"] == []
    assert report["identity"]["name"] == "mini-cp-0"
    assert report["identity"]["role"] == "control-plane"
    assert report["identity"]["platformRootSHA256"] == cached_platform_ca().fingerprint
    rows = {row["pcr"]: row for row in report["pcrs"]}
    assert set(rows) == {*MEASURED_PCRS, 15}
    assert rows[15]["expected"] == pcr15_for_cluster_id(node.cluster_id).hex()
    assert rows[15]["actual"] == rows[15]["expected"]
    assert all(row["status"] == "ok" for row in rows.values())
    # A fresh 32-byte nonce per run.
    assert invoke(node.workspace, "verify", "-o", "json").code == 0
    assert len(node.behaviour.requests) == 2
    assert all(len(n) == 32 for n in node.behaviour.requests)
    assert node.behaviour.requests[0] != node.behaviour.requests[1]


def test_text_output_is_a_table(invoke: Any, node: Node) -> None:
    result = invoke(node.workspace, "verify")
    assert result.code == 0, result.stderr
    assert "VERIFIED" in result.stdout
    assert "Platform identity: mini-cp-0 (control-plane)" in result.stdout
    assert pcr15_for_cluster_id(node.cluster_id).hex() in result.stdout
    assert "requesting attestation" in result.stderr


def test_other_cluster_id_is_rejected(invoke: Any, node: Node) -> None:
    other = base64.b64encode(os.urandom(32)).decode()
    result = invoke(node.workspace, "verify", "--cluster-id", other, "-o", "json")
    assert result.code == 1
    report = json.loads(result.stdout)
    assert report["verified"] is False
    assert report["identity"] is None  # nothing is vouched for by a refused document
    assert _checks(report) == {"pcr[15]"}
    assert "pcr[15]" in result.stderr
    assert "Traceback" not in result.stderr


def test_every_measurement_mismatch_is_listed(invoke: Any, node: Node) -> None:
    wrong = Measurements(
        {
            4: Measurement(bytes(32)),
            9: Measurement(b"\x01" * 32),
            11: Measurement(node.pcrs[11]),
        }
    )
    _set_measurements(node, wrong)
    result = invoke(node.workspace, "verify", "-o", "json")
    assert result.code == 1
    report = json.loads(result.stdout)
    assert _checks(report) == {"pcr[4]", "pcr[9]"}
    rows = {row["pcr"]: row for row in report["pcrs"]}
    assert rows[4]["actual"] == node.pcrs[4].hex()
    assert rows[4]["status"] == "mismatch"
    assert rows[11] == {
        "pcr": 11,
        "expected": node.pcrs[11].hex(),
        "actual": node.pcrs[11].hex(),
        "status": "ok",
    }


def test_warn_only_mismatch_is_accepted_with_a_warning(invoke: Any, node: Node) -> None:
    measurements = Measurements(
        {
            4: Measurement(bytes(32), warn_only=True),
            9: Measurement(node.pcrs[9]),
            11: Measurement(node.pcrs[11]),
        }
    )
    _set_measurements(node, measurements)
    result = invoke(node.workspace, "verify", "-o", "json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert [w["check"] for w in report["warnings"]] == ["pcr[4]"]
    assert {row["pcr"]: row["status"] for row in report["pcrs"]}[4] == "warn"
    assert "Warning: pcr[4]" in result.stderr


def test_replayed_evidence_is_rejected(invoke: Any, node: Node) -> None:
    node.behaviour.replay_nonce = os.urandom(32)
    result = invoke(node.workspace, "verify", "-o", "json")
    assert result.code == 1
    report = json.loads(result.stdout)
    assert any(check.startswith("quote.") for check in _checks(report))
    # The quote did not verify, so no PCR value in the document may be shown as trusted.
    assert {row["status"] for row in report["pcrs"]} <= {"unverified", "mismatch"}


def test_evidence_for_other_user_data_is_rejected(invoke: Any, node: Node) -> None:
    node.behaviour.user_data = b"some TLS key hash"
    result = invoke(node.workspace, "verify", "-o", "json")
    assert result.code == 1
    assert _checks(json.loads(result.stdout)) == {"user_data"}


def test_config_without_measurements_is_refused(invoke: Any, node: Node) -> None:
    _set_measurements(node, Measurements())
    result = invoke(node.workspace, "verify")
    assert result.code == 1
    assert "no measurements" in result.stderr
    assert node.behaviour.requests == []


def test_node_endpoint_by_name_and_address(invoke: Any, node: Node) -> None:
    assert invoke(node.workspace, "verify", "--node-endpoint", "mini-cp-0").code == 0
    assert invoke(node.workspace, "verify", "--node-endpoint", node.endpoint).code == 0
    missing = invoke(node.workspace, "verify", "--node-endpoint", "mini-worker-9")
    assert missing.code == 1
    assert "knows no node" in missing.stderr


def test_unreachable_endpoint_is_a_bounded_typed_error(invoke: Any, node: Node) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    result = invoke(node.workspace, "verify", "-e", f"127.0.0.1:{port}", "--timeout", "1")
    assert result.code == 1
    assert "did not answer" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("--cluster-id", "!!"),
        ("--cluster-id", base64.b64encode(b"x" * 31).decode()),
        ("-e", "localhost"),
    ],
)
def test_bad_flags_are_usage_errors(invoke: Any, node: Node, args: tuple[str, ...]) -> None:
    assert invoke(node.workspace, "verify", *args).code == 2
    assert node.behaviour.requests == []


def test_http_protocol(invoke: Any, node: Node, http_answering: Any) -> None:
    issuer = node.issuer

    def answer(path: str) -> bytes:
        nonce = base64.urlsafe_b64decode(parse_qs(urlsplit(path).query)["nonce"][0])
        document = issuer.issue(VERIFY_USER_DATA_LABEL, nonce)
        return json.dumps({"data": base64.b64encode(document).decode()}).encode()

    with http_answering(answer) as port:
        endpoint = f"127.0.0.1:{port}"
        result = invoke(node.workspace, "verify", "--protocol", "http", "-e", endpoint)
        assert result.code == 0, result.stderr


def test_flags_replace_the_state_file(invoke: Any, node: Node) -> None:
    Workspace(node.workspace).state_path.unlink()
    cluster_id = base64.b64encode(node.cluster_id).decode()
    result = invoke(node.workspace, "verify", "-e", node.endpoint, "--cluster-id", cluster_id)
    assert result.code == 0, result.stderr
    missing = invoke(node.workspace, "verify", "-e", node.endpoint)
    assert missing.code == 1
    assert "constellation-state.yaml does not exist" in missing.stderr


def test_state_without_cluster_id_is_refused(invoke: Any, node: Node) -> None:
    workspace = Workspace(node.workspace)
    workspace.save_state(ClusterState(name="mini", verify_endpoint=Endpoint.parse(node.endpoint)))
    result = invoke(node.workspace, "verify")
    assert result.code == 1
    assert "no cluster ID" in result.stderr
    assert "--cluster-id" in result.stderr
    assert node.behaviour.requests == []


@dataclass
class RealService:
    grpc_endpoint: str
    http_endpoint: str


@pytest.fixture
def real_service(node: Node, swtpm: Any, tmp_path: Path) -> Iterator[RealService]:
    """The real VerificationService command, quoting with the node's swtpm; killed by PID."""
    import queue
    import subprocess
    import sys
    import time

    event_log = tmp_path / "event.log"
    event_log.write_bytes(node.event_log)
    ak_certificate = tmp_path / "ak-cert.der"
    ak_certificate.write_bytes(node.ak_certificate)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "constellation.verificationservice",
            *("--tpm", swtpm.tcti, "--event-log", str(event_log), "--listen", "127.0.0.1"),
            *("--ak-certificate-file", str(ak_certificate)),
            *("--grpc-port", "0", "--http-port", "0", "--metrics-port", "0"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        deadline = time.monotonic() + 30
        started: dict[str, Any] | None = None
        seen: list[str] = []
        while started is None and (left := deadline - time.monotonic()) > 0:
            try:
                line = lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                if process.poll() is not None:
                    break
                continue
            seen.append(line)
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if record.get("event") == "service.started":
                    started = record
        if started is None:
            pytest.fail(f"the VerificationService did not start: {seen}")
        yield RealService(f"127.0.0.1:{started['grpc_port']}", f"127.0.0.1:{started['http_port']}")
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def test_real_verification_service_over_grpc_and_http(
    invoke: Any, node: Node, real_service: RealService
) -> None:
    grpc_result = invoke(node.workspace, "verify", "-e", real_service.grpc_endpoint, "-o", "json")
    assert grpc_result.code == 0, grpc_result.stderr
    assert json.loads(grpc_result.stdout)["verified"] is True
    http_result = invoke(
        node.workspace, "verify", "--protocol", "http", "-e", real_service.http_endpoint
    )
    assert http_result.code == 0, http_result.stderr


def test_real_verification_service_on_a_tampered_node_is_refused(
    invoke: Any, node: Node, real_service: RealService, swtpm: Any, tmp_path: Path
) -> None:
    # Something outside the measured boot chain extends PCR 4 after boot (the event log
    # the service attaches does not know it): both the replay and PCR 4 must fail.
    with open_tpm(swtpm.tcti) as esapi:
        from tpm2_pytss.constants import ESYS_TR, TPM2_ALG
        from tpm2_pytss.types import TPML_DIGEST_VALUES, TPMT_HA, TPMU_HA

        digest = TPMU_HA(sha256=os.urandom(32))
        values = TPML_DIGEST_VALUES([TPMT_HA(hashAlg=TPM2_ALG.SHA256, digest=digest)])
        esapi.pcr_extend(ESYS_TR.parse("PCR4"), values)
    result = invoke(node.workspace, "verify", "-e", real_service.grpc_endpoint, "-o", "json")
    assert result.code == 1
    assert _checks(json.loads(result.stdout)) == {"pcr[4]", "eventlog.replay[pcr4]"}


def _issuer_named(node: Node, tcti: str, name: str, role: Role = Role.WORKER) -> VtpmIssuer:
    """A genuine issuer on the node's vTPM whose AK the platform CA certified as ``name``
    (the AK is the same; only the certificate names another node)."""
    certificate = provision_node(tcti, cached_platform_ca(), name, role)
    return VtpmIssuer(tcti, event_log=node.event_log, ak_certificate=certificate)


def _add_to_state(node: Node, *records: NodeRecord) -> None:
    workspace = Workspace(node.workspace)
    state = workspace.load_state()
    workspace.save_state(replace(state, nodes=(*state.nodes, *records)))


@contextlib.contextmanager
def _registered(node: Node, http_answering: Any, *names: str) -> Iterator[None]:
    """The workspace's admin kubeconfig points at an API server listing exactly ``names``."""
    with http_answering(lambda path: node_list(names)) as port:
        write_kubeconfig(kubeconfig_path(Workspace(node.workspace)), f"http://127.0.0.1:{port}")
        yield


def _rows(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in report["nodes"]}


def test_all_verifies_every_node_with_its_own_nonce(
    invoke: Any, node: Node, swtpm: Any, http_answering: Any
) -> None:
    worker = NodeBehaviour()
    with (
        _serve(_issuer_named(node, swtpm.tcti, "mini-worker-0"), worker) as endpoint,
        _registered(node, http_answering, "mini-cp-0", "mini-worker-0"),
    ):
        _add_to_state(node, NodeRecord("mini-worker-0", "worker", endpoint))
        result = invoke(node.workspace, "verify", "--all", "-o", "json")
        text = invoke(node.workspace, "verify", "--all")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["verified"] is True
    assert report["clusterID"] == base64.b64encode(node.cluster_id).decode()
    assert report["summary"] == {"verified": 2, "refused": 0, "notChecked": 0, "total": 2}
    assert report["registeredNodes"] == {"known": True, "reason": None}
    assert [n["endpoint"] for n in report["nodes"]] == [node.endpoint, str(endpoint)]
    assert [n["identity"]["name"] for n in report["nodes"]] == ["mini-cp-0", "mini-worker-0"]
    assert all(n["status"] == "verified" and n["registered"] for n in report["nodes"])
    assert node.behaviour.requests[0] != worker.requests[0]
    assert text.code == 0, text.stderr
    assert "Verified 2 of 2 nodes." in text.stdout


def test_all_fails_when_one_node_is_not_trusted(
    invoke: Any, node: Node, swtpm: Any, http_answering: Any
) -> None:
    issuer = _issuer_named(node, swtpm.tcti, "mini-worker-0")
    with (
        _serve(issuer, NodeBehaviour(user_data=b"not the verify service")) as endpoint,
        _registered(node, http_answering, "mini-cp-0", "mini-worker-0"),
    ):
        _add_to_state(node, NodeRecord("mini-worker-0", "worker", endpoint))
        result = invoke(node.workspace, "verify", "--all", "-o", "json")
    assert result.code == 1
    report = json.loads(result.stdout)
    assert report["verified"] is False
    verdicts = {n["endpoint"]: n["status"] for n in report["nodes"]}
    assert verdicts == {node.endpoint: "verified", str(endpoint): "refused"}
    assert str(endpoint) in result.stderr


def test_all_refuses_an_endpoint_answering_with_another_nodes_evidence(
    invoke: Any, node: Node, http_answering: Any
) -> None:
    # The worker's recorded endpoint answers with the control plane's genuine evidence.
    with (
        _serve(node.issuer, NodeBehaviour()) as endpoint,
        _registered(node, http_answering, "mini-cp-0", "mini-worker-0"),
    ):
        _add_to_state(node, NodeRecord("mini-worker-0", "worker", endpoint))
        result = invoke(node.workspace, "verify", "--all", "-o", "json")
    assert result.code == 1
    row = _rows(json.loads(result.stdout))["mini-worker-0"]
    assert row["status"] == "refused"
    assert row["identity"] is None
    assert row["failures"] == [
        {
            "check": "identity.name",
            "expected": "mini-worker-0",
            "actual": "mini-cp-0",
            "enforced": True,
            "detail": "the endpoint answered with evidence of another node",
        }
    ]
    assert "identity.name" in result.stderr


def test_all_names_the_reason_each_node_could_not_be_checked(
    invoke: Any, node: Node, http_answering: Any
) -> None:
    unreachable = Endpoint("127.0.0.1", closed_port())
    _add_to_state(
        node,
        NodeRecord("unreachable", "worker", unreachable),
        NodeRecord("no-endpoint", "worker", None),
        # Not registered: not asked, although an endpoint (the control plane's) is recorded.
        NodeRecord("unregistered", "worker", Endpoint.parse(node.endpoint)),
    )
    registered = ("mini-cp-0", "unreachable", "no-endpoint", "late")
    with _registered(node, http_answering, *registered):
        result = invoke(node.workspace, "verify", "--all", "-o", "json", "--timeout", "2")
        text = invoke(node.workspace, "verify", "--all", "--timeout", "2")
    assert result.code == 3, result.stderr
    report = json.loads(result.stdout)
    assert report["verified"] is False
    assert report["summary"] == {"verified": 1, "refused": 0, "notChecked": 4, "total": 5}
    rows = _rows(report)
    assert list(rows) == ["mini-cp-0", "unreachable", "no-endpoint", "unregistered", "late"]
    assert rows["mini-cp-0"]["status"] == "verified"
    assert {name: row["status"] for name, row in rows.items() if name != "mini-cp-0"} == {
        name: "not-checked" for name in ("unreachable", "no-endpoint", "unregistered", "late")
    }
    assert rows["unreachable"]["reason"].startswith(
        f"endpoint unreachable: the verification service at {unreachable}"
    )
    assert rows["no-endpoint"]["reason"] == "no verification endpoint known for this node"
    assert rows["unregistered"]["registered"] is False
    assert rows["unregistered"]["reason"].startswith("not registered in Kubernetes")
    assert rows["late"]["registered"] is True
    assert "the workspace does not know" in rows["late"]["reason"]
    assert len(node.behaviour.requests) == 2  # once per run, for mini-cp-0 only
    assert text.code == 3
    assert "Verified 1 of 5 nodes." in text.stdout
    assert "not every node could be checked" in text.stderr
    assert "Traceback" not in result.stderr + text.stderr


@pytest.mark.parametrize("api", ["closed-port", "no-kubeconfig"])
def test_all_without_the_registered_nodes_says_they_are_unknown(
    invoke: Any, node: Node, api: str
) -> None:
    if api == "closed-port":
        kubeconfig = kubeconfig_path(Workspace(node.workspace))
        write_kubeconfig(kubeconfig, f"http://127.0.0.1:{closed_port()}")
    result = invoke(node.workspace, "verify", "--all", "-o", "json")
    assert result.code == 3, result.stderr
    report = json.loads(result.stdout)
    assert report["verified"] is False
    assert report["registeredNodes"]["known"] is False
    reason = report["registeredNodes"]["reason"]
    assert ("unreachable" if api == "closed-port" else "no admin kubeconfig") in reason
    (row,) = report["nodes"]
    assert (row["name"], row["status"], row["registered"]) == ("mini-cp-0", "verified", None)
    assert "registered Nodes" in result.stderr
    assert "Retrying" not in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.kube
def test_all_enumerates_registered_and_workspace_nodes_of_a_real_api_server(
    invoke: Any, node: Node, swtpm: Any, control_plane: Any
) -> None:
    from kubernetes import client as k8s

    from constellation.cli.mini import clusterobjects

    # Unique names: the session's API server is shared with other tests.
    suffix = os.urandom(4).hex()
    member, stranger, absent = f"member-{suffix}", f"stranger-{suffix}", f"absent-{suffix}"
    workspace = Workspace(node.workspace)
    shutil.copyfile(control_plane.admin_kubeconfig, kubeconfig_path(workspace))
    core = clusterobjects.core_api(control_plane.admin_kubeconfig)
    for name in (member, stranger):
        core.create_node(k8s.V1Node(metadata=k8s.V1ObjectMeta(name=name)))
    try:
        with _serve(_issuer_named(node, swtpm.tcti, member), NodeBehaviour()) as endpoint:
            state = workspace.load_state()
            workspace.save_state(
                replace(
                    state,
                    nodes=(
                        NodeRecord(member, "worker", endpoint),
                        NodeRecord(absent, "worker", None),
                    ),
                )
            )
            result = invoke(node.workspace, "verify", "--all", "-o", "json")
    finally:
        for name in (member, stranger):
            core.delete_node(name)
    assert result.code == 3, result.stderr
    rows = _rows(json.loads(result.stdout))
    assert (rows[member]["status"], rows[member]["registered"]) == ("verified", True)
    assert rows[member]["identity"]["name"] == member
    assert (rows[absent]["status"], rows[absent]["registered"]) == ("not-checked", False)
    assert (rows[stranger]["status"], rows[stranger]["registered"]) == ("not-checked", True)
    assert "the workspace does not know" in rows[stranger]["reason"]


def test_all_with_an_endpoint_is_a_usage_error(invoke: Any, node: Node) -> None:
    assert invoke(node.workspace, "verify", "--all", "-e", node.endpoint).code == 2
    assert node.behaviour.requests == []


def _copied_facts(node: Node) -> tuple[dict[int, bytes], bytes | None, bytes | None]:
    """What an attacker copies from the node's published evidence (PCRs, log, AK cert)."""
    return public_facts(node.issuer.issue(VERIFY_USER_DATA_LABEL, os.urandom(32)))


def _verify_forgery(invoke: Any, node: Node, forger: SoftwareTpmIssuer) -> dict[str, Any]:
    with _serve(forger, NodeBehaviour()) as endpoint:
        result = invoke(node.workspace, "verify", "-e", str(endpoint), "-o", "json")
    assert result.code == 1
    assert "Traceback" not in result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    assert report["verified"] is False
    # The quote is not rooted in a TPM: none of its PCR values may be shown as trusted.
    assert {row["status"] for row in report["pcrs"]} == {"unverified"}
    for check in _checks(report):
        assert check in result.stderr
    return report


def test_a_software_key_with_copied_pcrs_and_event_log_is_refused(invoke: Any, node: Node) -> None:
    pcrs, log, _ = _copied_facts(node)
    report = _verify_forgery(invoke, node, SoftwareTpmIssuer(pcrs=pcrs, event_log=log))
    assert _checks(report) == {"ak.certificate"}


def test_a_software_key_with_the_nodes_copied_ak_certificate_is_refused(
    invoke: Any, node: Node
) -> None:
    pcrs, log, certificate = _copied_facts(node)
    assert certificate == node.ak_certificate
    forger = SoftwareTpmIssuer(pcrs=pcrs, event_log=log, ak_certificate=certificate)
    report = _verify_forgery(invoke, node, forger)
    assert _checks(report) == {"ak.certificate.key"}


def test_without_platform_roots_no_quote_is_trusted(invoke: Any, node: Node) -> None:
    workspace = Workspace(node.workspace)
    measurements = workspace.load_config().attestation.parsed_measurements()
    workspace.save_config(
        default_config(Provider.MINI).with_measurements(measurements), overwrite=True
    )
    pcrs, log, _ = _copied_facts(node)
    report = _verify_forgery(invoke, node, SoftwareTpmIssuer(pcrs=pcrs, event_log=log))
    assert _checks(report) == {"ak.root"}
    # Not even the genuine node: an unrooted AK proves nothing.
    genuine = invoke(node.workspace, "verify", "-o", "json")
    assert genuine.code == 1
    assert _checks(json.loads(genuine.stdout)) == {"ak.root"}
    assert "ak.root" in genuine.stderr


def test_a_genuine_document_without_its_event_log_is_refused(invoke: Any, node: Node) -> None:
    node.behaviour.drop_event_log = True
    result = invoke(node.workspace, "verify", "-o", "json")
    assert result.code == 1
    report = json.loads(result.stdout)
    assert report["verified"] is False
    assert _checks(report) == {"eventlog.present"}
    assert "eventlog.present" in result.stderr
