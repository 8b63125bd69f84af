"""``mini``, ``terminate`` and ``upgrade apply`` where no cluster (or no binaries) exists."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from constellation.cli.config import Provider, default_config
from constellation.cli.mini import image
from constellation.cli.workspace import ClusterState, Workspace


def test_down_without_a_cluster_does_nothing(invoke, tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    result = invoke(tmp_path, "mini", "down")
    assert result.code == 0
    assert "nothing to do" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_terminate_without_a_cluster_is_a_clear_error(invoke, tmp_path: Path) -> None:
    result = invoke(tmp_path, "terminate", "--yes")
    assert result.code == 1
    assert "no cluster" in result.stderr
    assert "Traceback" not in result.stderr


def test_up_without_kubernetes_binaries_says_to_run_setup_and_creates_nothing(
    invoke, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONSTELLATION_K8S_CACHE", str(tmp_path / "empty-cache"))
    workspace = tmp_path / "ws"
    workspace.mkdir()
    result = invoke(workspace, "mini", "up")
    assert result.code == 1
    assert "hack/setup" in result.stderr
    assert list(workspace.iterdir()) == []


def test_up_refuses_a_config_of_another_provider(invoke, tmp_path: Path) -> None:
    Workspace(tmp_path).save_config(default_config(Provider.AZURE), overwrite=False)
    result = invoke(tmp_path, "mini", "up")
    assert result.code == 1
    assert "not mini" in result.stderr


def test_apply_without_mini_nodes_is_refused(invoke, tmp_path: Path) -> None:
    Workspace(tmp_path).save_config(default_config(Provider.MINI), overwrite=False)
    result = invoke(tmp_path, "apply")
    assert result.code == 1
    assert "no measurements" in result.stderr


def _signed_workspace(tmp_path: Path) -> tuple[Workspace, Path, ec.EllipticCurvePrivateKey]:
    trusted = ec.generate_private_key(ec.SECP256R1())
    config = default_config(Provider.MINI)
    config = config.model_copy(
        update={
            "attestation": config.attestation.model_copy(
                update={"measurementServicePublicKey": image.public_pem(trusted).decode()}
            )
        }
    )
    workspace = Workspace(tmp_path)
    workspace.save_config(config, overwrite=False)
    workspace.save_state(ClusterState(name="c", cluster_id=b"\x07" * 32))
    built = tmp_path / "image"
    image.build_image(built, kubernetes_version="v1.36.3", components={}, version="mini-v9")
    return workspace, built, trusted


@pytest.mark.parametrize("signer", ["other-key", "tampered-file"])
def test_upgrade_apply_refuses_unverified_measurements_and_changes_nothing(
    invoke, tmp_path: Path, signer: str
) -> None:
    workspace, built, trusted = _signed_workspace(tmp_path)
    key = ec.generate_private_key(ec.SECP256R1()) if signer == "other-key" else trusted
    published = image.publish_image(built, key)
    data = published.data
    if signer == "tampered-file":
        data = data.replace(b'"mini-v9"', b'"mini-v8"')
    (tmp_path / "m.json").write_bytes(data)
    (tmp_path / "m.json.sig").write_bytes(published.signature)
    before = workspace.config_path.read_bytes()
    result = invoke(tmp_path, "upgrade", "apply", "--measurements", str(tmp_path / "m.json"))
    assert result.code == 1
    assert "signature" in result.stderr
    assert workspace.config_path.read_bytes() == before


def test_image_measure_signs_what_the_firmware_will_measure(invoke, tmp_path: Path) -> None:
    _, built, _ = _signed_workspace(tmp_path)
    key_path = tmp_path / "publisher.key"
    public = image.generate_publisher_key(key_path)
    out = tmp_path / "published.json"
    result = invoke(
        tmp_path,
        "mini",
        "image",
        "measure",
        str(built),
        "--sign",
        "--key",
        str(key_path),
        "--out",
        str(out),
        "-o",
        "json",
    )
    assert result.code == 0, result.stderr
    from constellation.attestation.measurements import verify_signed_measurements

    published = verify_signed_measurements(
        out.read_bytes(), (tmp_path / "published.json.sig").read_bytes(), public
    )
    assert published.version == "mini-v9"
    measured = published.for_variant("qemu-vtpm")
    assert {i: m.expected for i, m in measured.items()} == image.expected_pcrs(built)
    assert measured[15].expected == bytes(32)  # published with PCR 15 unmarked


@pytest.mark.parametrize("name", ["../escape", "Upper", "a/b", "-dash", "x" * 64])
def test_node_add_refuses_a_name_that_is_not_a_dns_label(invoke, tmp_path: Path, name: str) -> None:
    from constellation.cli.mini.cluster import MiniRecord

    record = MiniRecord(root=tmp_path, joinservice_running=True)
    record.save()
    result = invoke(tmp_path, "mini", "node", "add", "--name", name)
    assert result.code == 2
    assert "DNS label" in result.stderr
    assert not (tmp_path / "mini" / "nodes").exists()
