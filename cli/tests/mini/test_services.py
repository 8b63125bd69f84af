"""Mini mode's KeyService, started as `apply` starts it: from the Secrets read back from the API,
it serves the JoinService's materialized client certificate and nobody else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest

from constellation.attestation.kdf import derive_measurement_secret
from constellation.attestation.measurements import Measurement, Measurements
from constellation.attestation.testing.platform import cached_platform_ca
from constellation.cli.mini import clusterobjects, services
from constellation.cli.mini.processes import stop
from constellation.cli.servicepki import issue_service_pki
from constellation.joinservice.keys import KeyServiceClient, KeyServiceTLS, keyservice_channel
from constellation.keyservice.tls import SERVER_NAME
from constellation.proto import kms_pb2, kms_pb2_grpc

pytestmark = pytest.mark.kube


def test_keyservice_serves_the_joinservice_client_files_only(
    control_plane: Any, tmp_path: Path
) -> None:
    core = clusterobjects.core_api(control_plane.admin_kubeconfig)
    master_key, master_salt = b"\x05" * 32, b"\x06" * 32
    clusterobjects.write_cluster_objects(
        core,
        variant="qemu-vtpm",
        measurements=Measurements({4: Measurement(b"\x04" * 32)}),
        platform_roots=cached_platform_ca().cert_pem.decode(),
        measurement_salt=b"\x01" * 32,
        master_key=master_key,
        master_salt=master_salt,
        pki_dir=control_plane.pki_dir,
        components={"kubernetesVersion": "v1.36.3", "components": []},
        service_pki=issue_service_pki(),
    )
    files = clusterobjects.MountedFiles(tmp_path / "keyservice", tmp_path / "joinservice")
    clusterobjects.materialize(core, files)
    record, port = services.start_keyservice(files, tmp_path)
    try:
        services.wait_serving(record, port)
        client = files.keyservice_client_dir
        tls = KeyServiceTLS.from_files(
            client / "ca.crt", client / "tls.crt", client / "tls.key", SERVER_NAME
        )
        with keyservice_channel(f"127.0.0.1:{port}", tls) as channel:
            secret = KeyServiceClient(channel).measurement_secret()
        assert secret.reveal() == derive_measurement_secret(master_key, master_salt)
        with (
            grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
            pytest.raises(grpc.RpcError) as refused,
        ):
            kms_pb2_grpc.APIStub(channel).GetDataKey(
                kms_pb2.GetDataKeyRequest(data_key_id="measurementSecret", length=32), timeout=10
            )
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        stop(record)
    log = (tmp_path / "keyservice.log").read_text()
    assert "service.started" in log
    assert secret.reveal().hex() not in log
    assert master_key.hex() not in log
