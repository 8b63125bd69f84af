"""A local cluster end to end: up, verify, a tampered worker refused then admitted after a
signed upgrade, a forged join refused, a wrong init secret refused without logs, and a down
that leaves no process and no file behind. Tests run in file order on one shared cluster."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec

from constellation.attestation import atls
from constellation.attestation.identity import Role
from constellation.attestation.identity.ca import PlatformCA
from constellation.attestation.measurements import Measurements
from constellation.attestation.swtpm import Swtpm
from constellation.attestation.vtpm import VtpmIssuer, VtpmValidator
from constellation.bootstrapper.joinclient import joinservice_measurements
from constellation.bootstrapper.testing import call_init, init_request, uninitialized_node_validator
from constellation.cli.config import parse_config
from constellation.cli.mini import image
from constellation.cli.mini.firmware import boot_measure
from constellation.cli.mini.platform import (
    PLATFORM_CA_DIR,
    certify_node,
    load_or_create_platform_ca,
)
from constellation.cli.testing import Completed, run_cli
from constellation.cli.testing import mini_cluster as up_mini_cluster
from constellation.proto import join_pb2, join_pb2_grpc

COMMAND_TIMEOUT_S = 300


@dataclass
class MiniCluster:
    workspace: Path
    summary: dict[str, Any]

    def run(self, *args: str, timeout: float = COMMAND_TIMEOUT_S) -> Completed:
        return run_cli(self.workspace, *args, timeout=timeout)

    def record(self) -> dict[str, Any]:
        return json.loads((self.workspace / "mini" / "cluster.json").read_text())


@pytest.fixture(scope="module")
def mini_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MiniCluster]:
    with up_mini_cluster(tmp_path_factory.mktemp("workspace"), workers=2) as up:
        yield MiniCluster(up.workspace, up.summary)


pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.swtpm, pytest.mark.kube]

JOIN_WAIT_S = 120
WRONG_SECRET = b"definitely not the init secret!!"


def _platform_ca(cluster: MiniCluster) -> PlatformCA:
    """The workspace's platform CA: the one that certified the nodes' AKs."""
    return load_or_create_platform_ca(cluster.workspace / "mini" / PLATFORM_CA_DIR)


def _config_measurements(cluster: MiniCluster) -> Measurements:
    config = parse_config((cluster.workspace / "constellation-conf.yaml").read_bytes())
    return config.attestation.parsed_measurements()


def test_up_initialized_the_cluster_and_every_node_verified(mini_cluster: MiniCluster) -> None:
    summary = mini_cluster.summary
    assert len(base64.b64decode(summary["clusterID"])) == 32
    nodes = {n["name"]: n for n in summary["nodes"]}
    assert set(nodes) == {"mini-cp-0", "mini-worker-0", "mini-worker-1"}
    assert all(node["verified"] for node in nodes.values())
    assert nodes["mini-worker-0"]["registered"]
    assert nodes["mini-worker-1"]["registered"]
    master = mini_cluster.workspace / "constellation-mastersecret.json"
    assert master.stat().st_mode & 0o077 == 0
    assert (mini_cluster.workspace / "constellation-admin.conf").stat().st_mode & 0o077 == 0


def test_the_joinservice_runs_as_its_charts_serviceaccount(mini_cluster: MiniCluster) -> None:
    (process,) = (p for p in mini_cluster.record()["processes"] if p["name"] == "joinservice")
    argv = Path(f"/proc/{process['pid']}/cmdline").read_bytes().decode().split("\0")
    (flag,) = (a for a in argv if a.startswith("--kubeconfig="))
    kubeconfig = Path(flag.removeprefix("--kubeconfig="))
    assert kubeconfig != mini_cluster.workspace / "constellation-admin.conf"
    assert kubeconfig.stat().st_mode & 0o077 == 0
    (user,) = yaml.safe_load(kubeconfig.read_text())["users"]
    assert set(user["user"]) == {"token"}


def test_verify_checks_every_node_with_a_fresh_nonce(mini_cluster: MiniCluster) -> None:
    for name in ("mini-cp-0", "mini-worker-0", "mini-worker-1"):
        result = mini_cluster.run("verify", "--node-endpoint", name, "-o", "json")
        assert result.code == 0, result.stderr
        report = result.json()
        assert report["verified"] is True
        assert report["clusterID"] == mini_cluster.summary["clusterID"]
        statuses = {row["pcr"]: row["status"] for row in report["pcrs"]}
        assert statuses[15] == "ok"  # PCR 15 carries this cluster's mark


def test_verify_with_another_cluster_id_fails_on_pcr_15(mini_cluster: MiniCluster) -> None:
    other = base64.b64encode(bytes(32)).decode()
    result = mini_cluster.run("verify", "--cluster-id", other, "-o", "json")
    assert result.code == 1
    failed = [f["check"] for f in result.json()["failures"]]
    assert failed == ["pcr[15]"]


def test_status_lists_the_registered_workers(mini_cluster: MiniCluster) -> None:
    result = mini_cluster.run("status", "-o", "json")
    assert result.code == 0, result.stderr
    status = result.json()
    registered = {n["name"] for n in status["nodes"] if n["registered"]}
    assert registered >= {"mini-worker-0", "mini-worker-1"}
    assert status["attestationVariant"] == "qemu-vtpm"
    assert all(p["running"] for p in status["processes"])


@pytest.fixture(scope="module")
def tampered_image(mini_cluster: MiniCluster) -> Path:
    directory = mini_cluster.workspace.parent / "image-v2"
    result = mini_cluster.run("mini", "image", "build", str(directory), "--version", "mini-v2")
    assert result.code == 0, result.stderr
    target = directory / "constellation" / "bootstrapper" / "joinclient.py"
    target.write_bytes(target.read_bytes() + b"\n# a change the published image did not have\n")
    return directory


def test_a_worker_from_a_tampered_image_is_refused_naming_the_pcrs(
    mini_cluster: MiniCluster, tampered_image: Path
) -> None:
    result = mini_cluster.run(
        "mini",
        "node",
        "add",
        "--image",
        str(tampered_image),
        "--name",
        "tampered",
        "--timeout",
        "20",
        "-o",
        "json",
    )
    assert result.code == 1, result.stderr
    outcome = result.json()
    assert outcome["joined"] is False
    checks = {f["check"] for r in outcome["refusals"] for f in r["failures"]}
    # The code changed (PCRs 4 and 9) and so did the version in image.json (PCR 11); nothing else.
    assert checks == {"pcr[4]", "pcr[9]", "pcr[11]"}


def test_init_with_a_wrong_secret_is_refused_without_logs(mini_cluster: MiniCluster) -> None:
    node = next(n for n in mini_cluster.record()["nodes"] if n["name"] == "tampered")
    target = f"127.0.0.1:{node['initPort']}"
    log = Path(node["bootstrapper"]["log"])
    before = log.stat().st_size
    with pytest.raises(grpc.RpcError) as info:
        # The node is uninitialized (PCR 15 zero): the attestation passes, the secret does not.
        call_init(
            target,
            init_request([], secret=WRONG_SECRET),
            # A worker: the CLI itself would not send it Init; the node must refuse it too.
            validator=uninitialized_node_validator(ca=_platform_ca(mini_cluster), role=None),
        )
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert info.value.received == []  # no progress, no node logs streamed to the caller
    assert WRONG_SECRET not in log.read_bytes()[before:]


class ForgingIssuer:
    """A node that is not the firmware's: real quotes of a tampered boot, with the PCR values
    and event log in the document replaced by the expected ones."""

    def __init__(
        self, tcti: str, forged_pcrs: dict[int, bytes], forged_log: bytes, ak_certificate: bytes
    ) -> None:
        # A machine the platform did certify (its AK is rooted): only the forgery is refused.
        self._inner = VtpmIssuer(tcti, ak_certificate=ak_certificate)
        self._pcrs = forged_pcrs
        self._log = forged_log

    @property
    def variant(self) -> str:
        return self._inner.variant

    def issue(self, user_data: bytes, nonce: bytes) -> bytes:
        document = json.loads(self._inner.issue(user_data, nonce))
        for index, value in self._pcrs.items():
            document["pcrs"][str(index)] = base64.b64encode(value).decode()
        document["event_log"] = base64.b64encode(self._log).decode()
        return json.dumps(document, sort_keys=True).encode()


def _join_log_size(cluster: MiniCluster) -> int:
    return (cluster.workspace / "mini" / "logs" / "joinservice.log").stat().st_size


def _new_refusals(cluster: MiniCluster, offset: int) -> list[dict[str, Any]]:
    data = (cluster.workspace / "mini" / "logs" / "joinservice.log").read_bytes()[offset:]
    entries = [json.loads(line) for line in data.splitlines() if line.startswith(b"{")]
    return [e for e in entries if e.get("event") == "join.refused"]


def test_a_forged_join_document_is_refused(
    mini_cluster: MiniCluster, tampered_image: Path, swtpm: Swtpm, tmp_path: Path
) -> None:
    boot_measure(swtpm.tcti, tampered_image, tmp_path / "eventlog.bin")
    measurements = _config_measurements(mini_cluster)
    pristine_log = (mini_cluster.workspace / "mini/nodes/mini-worker-0/eventlog.bin").read_bytes()
    platform_ca = load_or_create_platform_ca(mini_cluster.workspace / "mini" / PLATFORM_CA_DIR)
    issuer = ForgingIssuer(
        swtpm.tcti,
        {i: m.expected for i, m in measurements.items()},
        pristine_log,
        certify_node(swtpm.tcti, platform_ca, "forger-0", Role.WORKER),
    )
    record = mini_cluster.record()
    target = f"127.0.0.1:{record['joinServicePort']}"
    joinservice = VtpmValidator(
        joinservice_measurements(measurements),
        platform_roots=(platform_ca.certificate,),
        require_event_log=True,
    )
    offset = _join_log_size(mini_cluster)
    with (
        pytest.raises(grpc.RpcError) as info,
        atls.connect(target, [joinservice], issuer=issuer, timeout=30) as channel,
    ):
        join_pb2_grpc.APIStub(channel.channel).IssueJoinTicket(
            join_pb2.IssueJoinTicketRequest(disk_uuid="0" * 8, certificate_request=b"x"),
            timeout=30,
        )
    assert info.value.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
    time.sleep(0.5)
    refusals = _new_refusals(mini_cluster, offset)
    assert refusals, "the JoinService logged no refusal"
    checks = {f["check"] for r in refusals for f in r.get("failures", [])}
    assert any(check.startswith("quote") for check in checks), refusals


def test_upgrade_to_signed_measurements_of_the_new_image_admits_the_worker(
    mini_cluster: MiniCluster, tampered_image: Path
) -> None:
    published = mini_cluster.workspace.parent / "v2-measurements.json"
    result = mini_cluster.run(
        "mini", "image", "measure", str(tampered_image), "--sign", "--out", str(published)
    )
    assert result.code == 0, result.stderr
    # A signature by another key is refused and changes nothing.
    config_before = (mini_cluster.workspace / "constellation-conf.yaml").read_bytes()
    forged = mini_cluster.workspace.parent / "forged.sig"
    other_key = ec.generate_private_key(ec.SECP256R1())
    forged.write_bytes(
        image.publish("mini-v2", _config_measurements(mini_cluster), other_key).signature
    )
    refused = mini_cluster.run(
        "upgrade", "apply", "--measurements", str(published), "--signature", str(forged)
    )
    assert refused.code == 1
    assert (mini_cluster.workspace / "constellation-conf.yaml").read_bytes() == config_before

    result = mini_cluster.run(
        "upgrade",
        "apply",
        "--measurements",
        str(published),
        "--signature",
        f"{published}.sig",
        "-o",
        "json",
    )
    assert result.code == 0, result.stderr
    assert result.json()["image"] == "mini-v2"
    # The refused worker keeps retrying; the JoinService reloads join-config without restart.
    deadline = time.monotonic() + JOIN_WAIT_S
    names: set[str] = set()
    while time.monotonic() < deadline:
        status = mini_cluster.run("status", "-o", "json")
        nodes = status.json()["nodes"] if status.code == 0 else []
        # status lists the workspace's nodes too: only a registered Node has joined.
        names = {n["name"] for n in nodes if n["registered"]}
        if "tampered" in names:
            break
        time.sleep(1)
    assert "tampered" in names


def test_down_leaves_no_process_and_no_file(mini_cluster: MiniCluster) -> None:
    record = mini_cluster.record()
    from constellation.cli.mini.processes import ProcessRecord, is_running

    processes = [ProcessRecord.from_dict(p) for p in record["processes"]]
    assert all(is_running(p) for p in processes)
    sockets = [Path(node["swtpmSocket"]).parent for node in record["nodes"]]
    assert all(directory.is_dir() for directory in sockets)
    result = mini_cluster.run("mini", "down")
    assert result.code == 0, result.stderr
    assert not any(is_running(p) for p in processes)
    assert not any(directory.exists() for directory in sockets)  # the vTPM socket dirs too
    assert sorted(os.listdir(mini_cluster.workspace)) == []
    again = mini_cluster.run("mini", "down")
    assert again.code == 0
    assert "nothing to do" in again.stdout
    assert run_cli(mini_cluster.workspace, "verify").code == 1
