"""Component installer: verify SHA-256 before anything is installed, install atomically."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from constellation.bootstrapper.installer import (
    ComponentFetchError,
    ComponentHashMismatchError,
    ComponentInstaller,
    InvalidComponentError,
)
from constellation.proto import components_pb2


def _component(
    name: str, source: str, content: bytes, install_path: str, *, extract: bool = False
) -> components_pb2.Component:
    return components_pb2.Component(
        name=name,
        url=source,
        hash="sha256:" + hashlib.sha256(content).hexdigest(),
        install_path=install_path,
        extract=extract,
    )


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    directory = tmp_path / "artifacts"
    directory.mkdir()
    (directory / "kubeadm").write_bytes(b"#!/bin/sh\necho kubeadm\n")
    (directory / "kubectl").write_bytes(b"#!/bin/sh\necho kubectl\n")
    return directory


@pytest.fixture
def installer(tmp_path: Path) -> ComponentInstaller:
    return ComponentInstaller(tmp_path / "root", http_timeout_s=5, total_timeout_s=10)


def test_installs_verified_files_with_executable_mode(
    artifacts: Path, installer: ComponentInstaller
) -> None:
    kubeadm = (artifacts / "kubeadm").read_bytes()
    kubectl = (artifacts / "kubectl").read_bytes()
    installed = installer.install(
        [
            _component("kubeadm", (artifacts / "kubeadm").as_uri(), kubeadm, "/usr/bin/kubeadm"),
            _component("kubectl", str(artifacts / "kubectl"), kubectl, "/usr/bin/kubectl"),
        ]
    )
    root = installer.install_root.resolve()
    assert installed == [root / "usr/bin/kubeadm", root / "usr/bin/kubectl"]
    assert installed[0].read_bytes() == kubeadm
    assert installed[0].stat().st_mode & 0o777 == 0o755
    # No staging or temporary files are left behind.
    assert sorted(p.name for p in root.iterdir()) == ["usr"]
    assert sorted(p.name for p in (root / "usr/bin").iterdir()) == ["kubeadm", "kubectl"]


def test_hash_mismatch_names_component_and_installs_nothing(
    artifacts: Path, installer: ComponentInstaller
) -> None:
    good = (artifacts / "kubeadm").read_bytes()
    components = [
        _component("kubeadm", (artifacts / "kubeadm").as_uri(), good, "/usr/bin/kubeadm"),
        _component("kubectl", (artifacts / "kubectl").as_uri(), b"other", "/usr/bin/kubectl"),
    ]
    with pytest.raises(ComponentHashMismatchError) as info:
        installer.install(components)
    assert info.value.component == "kubectl"
    assert "kubectl" in str(info.value)
    assert (
        info.value.actual
        == "sha256:" + hashlib.sha256((artifacts / "kubectl").read_bytes()).hexdigest()
    )
    # The matching kubeadm was not installed either, and no directory was created.
    root = installer.install_root
    assert not (root / "usr").exists()
    assert list(root.iterdir()) == []


def test_existing_file_is_replaced_only_after_verification(
    artifacts: Path, installer: ComponentInstaller
) -> None:
    target = installer.install_root / "usr/bin/kubeadm"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"old")
    with pytest.raises(ComponentHashMismatchError):
        installer.install(
            [_component("kubeadm", str(artifacts / "kubeadm"), b"x", "/usr/bin/kubeadm")]
        )
    assert target.read_bytes() == b"old"
    content = (artifacts / "kubeadm").read_bytes()
    installer.install(
        [_component("kubeadm", str(artifacts / "kubeadm"), content, "/usr/bin/kubeadm")]
    )
    assert target.read_bytes() == content


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("hash", "md5:abcd"),
        ("hash", "sha256:" + "0" * 63),
        ("hash", "sha256:" + "g" * 64),
        ("install_path", "relative/kubeadm"),
        ("install_path", "/usr/../../etc/passwd"),
        ("install_path", "/"),
        ("url", "ftp://example.org/kubeadm"),
        ("url", "file://remote-host/kubeadm"),
        ("url", "relative/kubeadm"),
        ("url", ""),
    ],
)
def test_invalid_components_are_refused(
    artifacts: Path, installer: ComponentInstaller, field: str, value: str
) -> None:
    content = (artifacts / "kubeadm").read_bytes()
    component = _component("kubeadm", str(artifacts / "kubeadm"), content, "/usr/bin/kubeadm")
    setattr(component, field, value)
    with pytest.raises(InvalidComponentError, match="kubeadm"):
        installer.install([component])
    root = installer.install_root
    assert not root.exists() or list(root.iterdir()) == []


def test_duplicate_install_paths_are_refused(
    artifacts: Path, installer: ComponentInstaller
) -> None:
    content = (artifacts / "kubeadm").read_bytes()
    component = _component("kubeadm", str(artifacts / "kubeadm"), content, "/usr/bin/kubeadm")
    with pytest.raises(InvalidComponentError, match="twice"):
        installer.install([component, component])


def test_symlinked_directory_cannot_redirect_install(
    artifacts: Path, installer: ComponentInstaller, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    installer.install_root.mkdir()
    (installer.install_root / "usr").symlink_to(outside)
    content = (artifacts / "kubeadm").read_bytes()
    with pytest.raises(InvalidComponentError, match="leaves the install root"):
        installer.install(
            [_component("kubeadm", str(artifacts / "kubeadm"), content, "/usr/bin/kubeadm")]
        )
    assert list(outside.iterdir()) == []


def test_missing_source_is_a_fetch_error(installer: ComponentInstaller, tmp_path: Path) -> None:
    with pytest.raises(ComponentFetchError, match="kubeadm"):
        installer.install([_component("kubeadm", str(tmp_path / "nope"), b"", "/usr/bin/kubeadm")])


def test_size_limit_is_enforced(artifacts: Path, tmp_path: Path) -> None:
    small = ComponentInstaller(tmp_path / "root", max_size=4)
    content = (artifacts / "kubeadm").read_bytes()
    with pytest.raises(ComponentFetchError, match="larger than"):
        small.install(
            [_component("kubeadm", str(artifacts / "kubeadm"), content, "/usr/bin/kubeadm")]
        )


def _tar_gz(members: dict[str, bytes], *, link: tuple[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755
            archive.addfile(info, io.BytesIO(data))
        if link is not None:
            info = tarfile.TarInfo(link[0])
            info.type = tarfile.SYMTYPE
            info.linkname = link[1]
            archive.addfile(info)
    return buffer.getvalue()


def test_archive_is_unpacked_and_swapped_in(installer: ComponentInstaller, tmp_path: Path) -> None:
    archive = tmp_path / "cni.tar.gz"
    archive.write_bytes(_tar_gz({"bridge": b"bridge-plugin", "loopback": b"lo-plugin"}))
    target = installer.install_root / "opt/cni/bin"
    target.mkdir(parents=True)
    (target / "stale").write_bytes(b"old")
    installer.install(
        [_component("cni", str(archive), archive.read_bytes(), "/opt/cni/bin", extract=True)]
    )
    assert sorted(p.name for p in target.iterdir()) == ["bridge", "loopback"]
    assert (target / "bridge").read_bytes() == b"bridge-plugin"
    assert sorted(p.name for p in target.parent.iterdir()) == ["bin"]


def test_archive_escaping_its_directory_is_refused(
    installer: ComponentInstaller, tmp_path: Path
) -> None:
    archive = tmp_path / "evil.tar.gz"
    archive.write_bytes(_tar_gz({"../../escape": b"x"}))
    with pytest.raises(Exception, match="cni"):
        installer.install(
            [_component("cni", str(archive), archive.read_bytes(), "/opt/cni/bin", extract=True)]
        )
    assert not (installer.install_root / "escape").exists()
    assert not (tmp_path / "escape").exists()
    assert not (installer.install_root / "opt/cni/bin").exists()


@pytest.fixture
def http_server(artifacts: Path) -> Iterator[str]:
    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, directory=str(artifacts), **kwargs)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_http_source_verified(
    artifacts: Path, installer: ComponentInstaller, http_server: str
) -> None:
    content = (artifacts / "kubeadm").read_bytes()
    installer.install([_component("kubeadm", f"{http_server}/kubeadm", content, "/bin/kubeadm")])
    assert (installer.install_root / "bin/kubeadm").read_bytes() == content
    with pytest.raises(ComponentFetchError, match="HTTP 404"):
        installer.install([_component("kubectl", f"{http_server}/none", b"", "/bin/kubectl")])
    with pytest.raises(ComponentHashMismatchError, match="kubectl"):
        installer.install(
            [_component("kubectl", f"{http_server}/kubectl", content, "/bin/kubectl")]
        )
    assert not (installer.install_root / "bin/kubectl").exists()
    assert os.listdir(installer.install_root) == ["bin"]
