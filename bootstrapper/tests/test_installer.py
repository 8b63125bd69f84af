"""Component installer: verify SHA-256 before anything is installed, install atomically."""

from __future__ import annotations

import builtins
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
def installer(tmp_path: Path, artifacts: Path) -> ComponentInstaller:
    return ComponentInstaller(
        tmp_path / "root", source_dirs=(artifacts,), http_timeout_s=5, total_timeout_s=10
    )


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
    assert "content does not match the pinned SHA-256" in str(info.value)
    # The error goes back to the requester: it must not reveal anything about the content.
    actual = hashlib.sha256((artifacts / "kubectl").read_bytes()).hexdigest()
    assert actual not in str(info.value)
    assert not hasattr(info.value, "actual")
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


def test_missing_source_is_a_fetch_error(installer: ComponentInstaller, artifacts: Path) -> None:
    with pytest.raises(ComponentFetchError, match="kubeadm"):
        installer.install([_component("kubeadm", str(artifacts / "nope"), b"", "/usr/bin/kubeadm")])


def test_size_limit_is_enforced(artifacts: Path, tmp_path: Path) -> None:
    small = ComponentInstaller(tmp_path / "root", source_dirs=(artifacts,), max_size=4)
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


def test_archive_is_unpacked_and_swapped_in(installer: ComponentInstaller, artifacts: Path) -> None:
    archive = artifacts / "cni.tar.gz"
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
    installer: ComponentInstaller, tmp_path: Path, artifacts: Path
) -> None:
    archive = artifacts / "evil.tar.gz"
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


# -- where local sources may come from -------------------------------------------------------


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    """A file outside the source directories (think /etc/shadow or a key file)."""
    path = tmp_path / "elsewhere" / "secret"
    path.parent.mkdir()
    path.write_bytes(b"not for the requester")
    return path


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every path opened through ``os.open`` or ``open`` while the test runs (observed only)."""
    paths: list[str] = []
    for module, name in ((os, "open"), (builtins, "open"), (io, "open")):
        real = getattr(module, name)

        def recording(path, *args, _real=real, **kwargs):
            paths.append(str(path))
            return _real(path, *args, **kwargs)

        monkeypatch.setattr(module, name, recording)
    return paths


def _refused_unread(installer: ComponentInstaller, component, opened: list[str]) -> str:
    """Install ``component`` expecting a refusal before any source file was opened."""
    opened.clear()  # (the test itself may have read the files to build the request)
    with pytest.raises(InvalidComponentError, match="kubeadm") as refused:
        installer.install([component])
    assert not any("artifacts" in p or "elsewhere" in p for p in opened), opened
    root = installer.install_root
    assert not root.exists() or list(root.iterdir()) == []
    return str(refused.value)


@pytest.mark.parametrize("form", ["uri", "path"])
def test_source_outside_the_source_directories_is_refused_unread(
    installer: ComponentInstaller, secret_file: Path, opened, form: str
) -> None:
    content = secret_file.read_bytes()
    source = secret_file.as_uri() if form == "uri" else str(secret_file)
    message = _refused_unread(
        installer, _component("kubeadm", source, content, "/usr/bin/kubeadm"), opened
    )
    assert "is outside the component source directories" in message
    assert hashlib.sha256(content).hexdigest() not in message.split("pinned")[0]


@pytest.mark.parametrize(
    "relative",
    [
        "../elsewhere/secret",  # traversal out of the directory
        "./kubeadm",
        "sub/../kubeadm",  # even when it would stay inside
    ],
)
def test_dot_segments_are_refused(
    installer: ComponentInstaller, artifacts: Path, secret_file: Path, opened, relative: str
) -> None:
    (artifacts / "sub").mkdir()
    source = f"file://{artifacts}/{relative}"
    message = _refused_unread(
        installer, _component("kubeadm", source, b"x", "/usr/bin/kubeadm"), opened
    )
    assert "without '.' or '..'" in message


def test_percent_encoded_traversal_is_refused(
    installer: ComponentInstaller, artifacts: Path, secret_file: Path, opened
) -> None:
    source = f"file://{artifacts}/%2E%2E/elsewhere/secret"
    message = _refused_unread(
        installer, _component("kubeadm", source, b"x", "/usr/bin/kubeadm"), opened
    )
    assert "without '.' or '..'" in message


def test_symlink_out_of_the_source_directory_is_refused(
    installer: ComponentInstaller, artifacts: Path, secret_file: Path, opened
) -> None:
    (artifacts / "link").symlink_to(secret_file)
    (artifacts / "dirlink").symlink_to(secret_file.parent, target_is_directory=True)
    for name in ("link", "dirlink/secret"):
        message = _refused_unread(
            installer,
            _component("kubeadm", str(artifacts / name), b"x", "/usr/bin/kubeadm"),
            opened,
        )
        assert "symbolic link out of the component source directories" in message


def test_symlink_within_the_source_directory_is_followed(
    installer: ComponentInstaller, artifacts: Path
) -> None:
    (artifacts / "current").symlink_to(artifacts / "kubeadm")
    content = (artifacts / "kubeadm").read_bytes()
    installer.install(
        [_component("kubeadm", str(artifacts / "current"), content, "/usr/bin/kubeadm")]
    )
    assert (installer.install_root / "usr/bin/kubeadm").read_bytes() == content


def test_one_refused_source_means_no_source_is_read(
    installer: ComponentInstaller, artifacts: Path, secret_file: Path, opened
) -> None:
    """Every source is checked before the first one is fetched."""
    good = (artifacts / "kubectl").read_bytes()
    opened.clear()
    with pytest.raises(InvalidComponentError, match="kubeadm"):
        installer.install(
            [
                _component("kubectl", str(artifacts / "kubectl"), good, "/usr/bin/kubectl"),
                _component("kubeadm", str(secret_file), b"x", "/usr/bin/kubeadm"),
            ]
        )
    assert not any(str(artifacts) in p or str(secret_file) in p for p in opened)


def test_fifo_in_the_source_directory_is_not_read(
    installer: ComponentInstaller, artifacts: Path
) -> None:
    os.mkfifo(artifacts / "fifo")  # opening it for reading would block without O_NONBLOCK
    with pytest.raises(ComponentFetchError, match="not a regular file"):
        installer.install([_component("kubeadm", str(artifacts / "fifo"), b"", "/usr/bin/kubeadm")])


@pytest.mark.parametrize(
    "url",
    ["file:///x?y=1", "file:///x#frag", "data:,hello", "ftp://127.0.0.1/kubeadm", "kubeadm"],
)
def test_other_url_forms_are_refused(installer: ComponentInstaller, url: str) -> None:
    with pytest.raises(InvalidComponentError, match="kubeadm"):
        installer.install([_component("kubeadm", url, b"", "/usr/bin/kubeadm")])


def test_no_source_directories_means_http_only(artifacts: Path, tmp_path: Path) -> None:
    strict = ComponentInstaller(tmp_path / "root", source_dirs=())
    content = (artifacts / "kubeadm").read_bytes()
    with pytest.raises(InvalidComponentError, match="none configured"):
        strict.install(
            [_component("kubeadm", str(artifacts / "kubeadm"), content, "/usr/bin/kubeadm")]
        )


def test_default_source_directories_are_the_image_and_the_component_cache(tmp_path: Path) -> None:
    from constellation.bootstrapper.installer import NODE_IMAGE_COMPONENTS_DIR, default_source_dirs

    env = {"HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    assert default_source_dirs(env) == (
        NODE_IMAGE_COMPONENTS_DIR,
        tmp_path / "xdg" / "constellation" / "kubernetes",
    )
    env["CONSTELLATION_K8S_CACHE"] = str(tmp_path / "pinned")
    assert default_source_dirs(env)[1] == tmp_path / "pinned"
    assert ComponentInstaller(tmp_path / "root").source_dirs[0] == NODE_IMAGE_COMPONENTS_DIR


def test_configured_source_directories_reach_the_installer(tmp_path: Path) -> None:
    from constellation.bootstrapper.config import ConfigError, config_from_mapping

    base = {
        "metadata_path": "m.json",
        "state_disk_path": "disk.img",
        "state_dir": "state",
        "install_root": "root",
        "tpm_tcti": "swtpm:path=/x",
    }
    config = config_from_mapping({**base, "component_source_dirs": [str(tmp_path)]})
    assert config.component_source_dirs == (tmp_path,)
    assert config_from_mapping(base).component_source_dirs is None
    with pytest.raises(ConfigError, match="component_source_dirs"):
        config_from_mapping({**base, "component_source_dirs": str(tmp_path)})


@pytest.mark.parametrize(
    "url",
    [
        "http://[::1/kubeadm",
        "file://[x/kubeadm",
        "https://\uff03x/kubeadm",
        # These parse, but http.client refuses them at fetch time (InvalidURL, a ValueError;
        # UnicodeEncodeError): refused as a request error before anything is fetched.
        "http://127.0.0.1:1/kube adm",
        "http://127.0.0.1:1/kubeadm\x00",
        "http://127.0.0.1:abc/kubeadm",
        "http://127.0.0.1:99999/kubeadm",
        "http://\u0430.example/kubeadm",
        "http:///kubeadm",
    ],
    ids=[
        "unclosed-ipv6-http",
        "unclosed-ipv6-file",
        "nfkc-netloc",
        "space",
        "nul",
        "nonnumeric-port",
        "port-out-of-range",
        "non-ascii-host",
        "no-host",
    ],
)
def test_url_the_parser_refuses_is_an_invalid_component(
    installer: ComponentInstaller, url: str
) -> None:
    # Was ValueError from urllib.parse.urlparse (fuzz target init_request): INTERNAL, not
    # INVALID_ARGUMENT, for the caller.
    with pytest.raises(InvalidComponentError, match="kubeadm"):
        installer.install([_component("kubeadm", url, b"", "/usr/bin/kubeadm")])
