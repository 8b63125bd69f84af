from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from constellation.bootstrapper.metadata import Endpoint
from constellation.cli.config import Provider, default_config
from constellation.cli.errors import ConfigExistsError, WorkspaceError
from constellation.cli.workspace import ClusterState, MasterSecret, NodeRecord, Workspace


def test_master_secret_is_written_0600_and_read_back(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    secret = MasterSecret.generate()
    workspace.save_master_secret(secret)
    assert stat.S_IMODE(workspace.master_secret_path.stat().st_mode) == 0o600
    loaded = workspace.load_master_secret()
    assert (loaded.key, loaded.salt) == (secret.key, secret.salt)


def test_master_secret_is_never_overwritten_silently(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    workspace.save_master_secret(MasterSecret.generate())
    before = workspace.master_secret_path.read_bytes()
    with pytest.raises(WorkspaceError, match="already exists"):
        workspace.save_master_secret(MasterSecret.generate())
    assert workspace.master_secret_path.read_bytes() == before


def test_world_readable_master_secret_is_refused(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    workspace.save_master_secret(MasterSecret.generate())
    workspace.master_secret_path.chmod(0o644)
    with pytest.raises(WorkspaceError, match="readable by others") as info:
        workspace.load_master_secret()
    assert "chmod 600" in info.value.hint


@pytest.mark.parametrize(
    "content",
    [b"", b"[]", b'{"key": "!!", "salt": "AA=="}', b'{"key": "QUFB", "salt": "QUFB"}', b"{"],
)
def test_corrupt_master_secret_is_a_typed_error(tmp_path: Path, content: bytes) -> None:
    workspace = Workspace(tmp_path)
    workspace.master_secret_path.write_bytes(content)
    workspace.master_secret_path.chmod(0o600)
    with pytest.raises(WorkspaceError):
        workspace.load_master_secret()


def test_master_secret_repr_and_errors_never_show_the_key(tmp_path: Path) -> None:
    secret = MasterSecret(b"K" * 32, b"S" * 32)
    assert "KKKK" not in repr(secret)
    assert "KKKK" not in str(secret)
    with pytest.raises(WorkspaceError, match="at least 16 bytes"):
        MasterSecret(b"short", os.urandom(32))
    workspace = Workspace(tmp_path)
    workspace.master_secret_path.write_text('{"key": "S0tLS0tL", "salt": 1}')
    workspace.master_secret_path.chmod(0o600)
    with pytest.raises(WorkspaceError) as info:
        workspace.load_master_secret()
    assert "S0tLS0tL" not in str(info.value)


def test_config_save_refuses_overwrite_without_permission(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    workspace.save_config(default_config(Provider.MINI), overwrite=False)
    before = workspace.config_path.read_bytes()
    with pytest.raises(ConfigExistsError):
        workspace.save_config(default_config(Provider.AZURE), overwrite=False)
    assert workspace.config_path.read_bytes() == before
    workspace.save_config(default_config(Provider.AZURE), overwrite=True)
    assert workspace.load_config().provider is Provider.AZURE


def test_missing_workspace_directory_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError, match="not a directory"):
        Workspace(tmp_path / "absent").save_config(default_config(Provider.MINI), overwrite=False)


def test_missing_config_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError) as info:
        Workspace(tmp_path).load_config()
    assert "config generate" in info.value.hint


def test_state_round_trip(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    state = ClusterState(
        name="mini",
        cluster_id=os.urandom(32),
        measurement_salt=os.urandom(32),
        init_endpoint=Endpoint("127.0.0.1", 9000),
        verify_endpoint=Endpoint("127.0.0.1", 30081),
        nodes=(NodeRecord("mini-cp-0", "control-plane", Endpoint("127.0.0.1", 30081)),),
    )
    workspace.save_state(state)
    assert workspace.load_state() == state


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("version: v2\n", "version"),
        ("version: v1\nclusterID: '!!'\n", "clusterID: not valid base64"),
        ("version: v1\nclusterID: QUFB\n", "clusterID must be 32 bytes"),
        ("version: v1\nverifyEndpoint: localhost:1\n", "not an IP address"),
        ("version: v1\nsurprise: 1\n", "unknown key"),
        ("version: v1\nnodes: [{name: a, role: b, extra: c}]\n", r"nodes\[0\]"),
        ("[unclosed\n", "corrupt"),
    ],
)
def test_corrupt_state_is_a_typed_error(tmp_path: Path, content: str, message: str) -> None:
    workspace = Workspace(tmp_path)
    workspace.state_path.write_text(content)
    with pytest.raises(WorkspaceError, match=message):
        workspace.load_state()


def test_log_path_creates_private_logs_dir(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    path = workspace.log_path("mini-up.log")
    assert path == tmp_path / "logs" / "mini-up.log"
    assert stat.S_IMODE((tmp_path / "logs").stat().st_mode) == 0o700
    for bad in ("", "../escape", ".."):
        with pytest.raises(WorkspaceError):
            workspace.log_path(bad)
