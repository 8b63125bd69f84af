"""The components lock, the hash gate, and the ``hack/kubernetes-components`` workflow.

The script is exercised for real: a throw-away lock pins a tiny Go program, ``ensure`` builds
it with the Go toolchain into a temporary cache, and ``verify``/``path``/``ensure`` must refuse
once the cached binary is tampered with.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from constellation.bootstrapper.kubernetes.components import (
    CACHE_RECORD_NAME,
    CacheEntry,
    CacheRecord,
    ComponentLock,
    default_cache_dir,
    load_lock,
    sha256_file,
    verified_components,
    verify_file,
)
from constellation.bootstrapper.kubernetes.errors import (
    ComponentHashError,
    ComponentLockError,
    ComponentMissingError,
)

REPO = Path(__file__).resolve().parents[3]
LOCK = REPO / "hack" / "kubernetes-components.lock.json"
SCRIPT = REPO / "hack" / "kubernetes-components"
EXPECTED = {"etcd", "helm", "kube-apiserver", "kube-controller-manager", "kubeadm", "kubectl"}


@pytest.fixture
def raw_lock() -> dict:
    return json.loads(LOCK.read_text())


def test_repository_lock_pins_every_component(raw_lock: dict) -> None:
    lock = load_lock(LOCK)
    assert set(lock.components) == EXPECTED
    for name in ("kube-apiserver", "kube-controller-manager", "kubeadm", "kubectl"):
        component = lock.component(name)
        assert component.version == lock.kubernetes_version
        assert component.go.module_version == lock.kubernetes_version
        assert f"gitVersion={lock.kubernetes_version}" in " ".join(component.go.ldflags)
    assert lock.component("etcd").version.startswith("v3.6.")
    assert lock.component("helm").version.startswith("v3.")
    assert ComponentLock.from_dict(lock.to_dict()) == lock
    for component in lock.components.values():
        assert (REPO / component.go.module_dir / "go.mod").is_file()
        assert (REPO / component.go.module_dir / "go.sum").is_file()


def test_unknown_component_is_named(raw_lock: dict) -> None:
    with pytest.raises(ComponentLockError, match="known: etcd"):
        ComponentLock.from_dict(raw_lock).component("kubelet")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(schema=2), "schema"),
        (lambda d: d.pop("kubernetes_version"), "kubernetes_version"),
        (lambda d: d.update(components={}), "at least one"),
        (lambda d: d["components"].update({"Bad Name": d["components"]["etcd"]}), "name"),
        (lambda d: d["components"]["etcd"]["source"].update(sha256="AB" * 32), "SHA-256"),
        (lambda d: d["components"]["etcd"]["source"].update(sha256="ab" * 31), "SHA-256"),
        (lambda d: d["components"]["etcd"].update(reference_build_sha256="x"), "SHA-256"),
        (lambda d: d["components"]["etcd"]["go"].update(ldflags="-s"), "ldflags"),
        (lambda d: d["components"]["etcd"]["go"].pop("package"), "package"),
        (lambda d: d["components"]["etcd"].update(go=[]), "JSON object"),
    ],
)
def test_malformed_locks_are_refused(raw_lock: dict, mutate, message: str) -> None:
    broken = copy.deepcopy(raw_lock)
    mutate(broken)
    with pytest.raises(ComponentLockError, match=message):
        ComponentLock.from_json(json.dumps(broken).encode())


def test_non_json_lock_is_refused() -> None:
    with pytest.raises(ComponentLockError, match="JSON"):
        ComponentLock.from_json(b"{not json")


def test_verify_file_accepts_only_the_pinned_hash(tmp_path: Path) -> None:
    binary = tmp_path / "kubectl"
    binary.write_bytes(b"the real binary")
    good = sha256_file(binary)
    assert verify_file("kubectl", binary, good) == binary
    binary.write_bytes(b"the real binarY")
    with pytest.raises(ComponentHashError) as err:
        verify_file("kubectl", binary, good)
    assert err.value.expected == good
    assert err.value.actual == sha256_file(binary)


def test_verify_file_refuses_missing_files_and_bad_pins(tmp_path: Path) -> None:
    with pytest.raises(ComponentMissingError):
        verify_file("etcd", tmp_path / "etcd", "0" * 64)
    (tmp_path / "etcd").write_bytes(b"x")
    with pytest.raises(ComponentLockError):
        verify_file("etcd", tmp_path / "etcd", "not-a-hash")


def test_cache_record_round_trip_and_verified_components(tmp_path: Path, raw_lock: dict) -> None:
    lock = ComponentLock.from_dict(raw_lock)
    record = CacheRecord(entries={})
    for name in lock.components:
        (tmp_path / name).write_bytes(name.encode())
        record = record.with_entry(
            name,
            CacheEntry(
                sha256=sha256_file(tmp_path / name),
                origin="go-build",
                pin=lock.component(name).pin(),
            ),
        )
    record.save(tmp_path)
    assert CacheRecord.load(tmp_path) == record
    installed = verified_components(lock, tmp_path)
    assert installed.path("etcd") == tmp_path / "etcd"

    (tmp_path / "etcd").write_bytes(b"swapped")
    with pytest.raises(ComponentHashError):
        verified_components(lock, tmp_path)
    with pytest.raises(ComponentMissingError):
        verified_components(lock, tmp_path, names=("kubectl",)).path("etcd")


def test_release_binary_must_match_the_pinned_release_hash(tmp_path: Path, raw_lock: dict) -> None:
    raw_lock["components"]["etcd"]["source"]["sha256"] = "1" * 64
    lock = ComponentLock.from_dict(raw_lock)
    (tmp_path / "etcd").write_bytes(b"etcd")
    entry = CacheEntry(sha256_file(tmp_path / "etcd"), "release", lock.component("etcd").pin())
    CacheRecord(entries={"etcd": entry}).save(tmp_path)
    with pytest.raises(ComponentHashError):
        verified_components(lock, tmp_path, names=("etcd",))


def test_missing_record_means_missing_component(tmp_path: Path, raw_lock: dict) -> None:
    with pytest.raises(ComponentMissingError, match="ensure"):
        verified_components(ComponentLock.from_dict(raw_lock), tmp_path)


def test_corrupt_record_is_refused(tmp_path: Path) -> None:
    (tmp_path / CACHE_RECORD_NAME).write_text('{"schema": 1, "binaries": {"etcd": {"sha256": 1}}}')
    with pytest.raises(ComponentLockError):
        CacheRecord.load(tmp_path)


def test_default_cache_dir() -> None:
    assert default_cache_dir("v1", {"CONSTELLATION_K8S_CACHE": "/c"}) == Path("/c")
    assert default_cache_dir("v1", {"XDG_CACHE_HOME": "/x", "HOME": "/h"}) == Path(
        "/x/constellation/kubernetes/v1"
    )
    assert default_cache_dir("v1", {"HOME": "/h"}) == Path("/h/.cache/constellation/kubernetes/v1")


# -- the script, end to end, on a tiny Go program -------------------------------------------


def _go() -> str | None:
    return shutil.which("go") or (
        "/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").is_file() else None
    )


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )


@pytest.fixture
def tiny_setup(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    go = _go()
    if go is None:
        pytest.skip("no Go toolchain (go on PATH or /usr/local/go/bin/go)")
    version = subprocess.run(
        [go, "env", "GOVERSION"], capture_output=True, text=True, check=True
    ).stdout.strip()
    module = tmp_path / "mod"
    module.mkdir()
    (module / "go.mod").write_text("module example.test/hello\n\ngo 1.22\n")
    (module / "main.go").write_text(
        'package main\n\nimport "fmt"\n\nvar version = "dev"\n\n'
        "func main() { fmt.Println(version) }\n"
    )
    lock = {
        "schema": 1,
        "kubernetes_version": "v0.0.1-test",
        "platform": "linux/amd64",
        "components": {
            "hello": {
                "version": "v0.0.1",
                "source": {
                    "url": "https://127.0.0.1:9/unreachable",
                    "sha256": None,
                    "archive_member": None,
                },
                "go": {
                    "module": "example.test/hello",
                    "module_version": "v0.0.1",
                    "package": "example.test/hello",
                    "module_dir": str(module),
                    "toolchain": version,
                    "ldflags": ["-X main.version=v0.0.1"],
                },
                "reference_build_sha256": None,
            }
        },
    }
    lock_path = tmp_path / "lock.json"
    lock_path.write_text(json.dumps(lock))
    env = {
        **os.environ,
        "CONSTELLATION_K8S_CACHE": str(tmp_path / "cache"),
        "GO": go,
    }
    return lock_path, env


def test_script_builds_records_verifies_and_refuses_tampering(
    tiny_setup: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    lock_path, env = tiny_setup
    cache = tmp_path / "cache"
    base = ["--lock", str(lock_path)]

    first = _run([*base, "ensure", "--download-timeout", "2"], env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == str(cache)
    binary = cache / "hello"
    assert subprocess.run([binary], capture_output=True, text=True).stdout == "v0.0.1\n"
    record = CacheRecord.load(cache)
    assert record.entries["hello"].sha256 == sha256_file(binary)
    assert "unreachable" in first.stderr  # the release URL was probed, then the build ran

    second = _run([*base, "ensure"], env)
    assert second.returncode == 0
    assert "cached and verified" in second.stderr
    assert _run([*base, "verify"], env).returncode == 0
    assert _run([*base, "path", "hello"], env).stdout.strip() == str(binary)

    binary.write_bytes(binary.read_bytes() + b"\0")
    assert _run([*base, "verify"], env).returncode != 0
    assert _run([*base, "path", "hello"], env).returncode != 0
    refused = _run([*base, "ensure"], env)
    assert refused.returncode != 0
    assert "does not match" in refused.stderr
    assert CacheRecord.load(cache) == record  # ensure never rewrites a recorded hash

    # Only the explicit record command changes hashes, and it writes the lock's reference.
    assert _run([*base, "record"], env).returncode == 0
    assert CacheRecord.load(cache).entries["hello"].sha256 == sha256_file(binary)
    assert load_lock(lock_path).component("hello").reference_build_sha256 == sha256_file(binary)
    assert _run([*base, "verify"], env).returncode == 0


def test_script_reports_a_missing_binary(
    tiny_setup: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    lock_path, env = tiny_setup
    base = ["--lock", str(lock_path)]
    assert _run([*base, "ensure"], env).returncode == 0
    (tmp_path / "cache" / "hello").unlink()
    assert _run([*base, "verify"], env).returncode != 0
    assert _run([*base, "path", "hello"], env).returncode != 0
    assert _run([*base, "ensure"], env).returncode == 0  # rebuilt, same hash as recorded


def test_verify_reference_compares_local_builds_with_the_lock(
    tiny_setup: tuple[Path, dict[str, str]],
) -> None:
    lock_path, env = tiny_setup
    base = ["--lock", str(lock_path)]
    assert _run([*base, "ensure"], env).returncode == 0
    assert _run([*base, "record"], env).returncode == 0
    assert _run([*base, "verify", "--reference"], env).returncode == 0

    raw = json.loads(lock_path.read_text())
    raw["components"]["hello"]["reference_build_sha256"] = "0" * 64
    lock_path.write_text(json.dumps(raw))
    assert _run([*base, "verify"], env).returncode == 0  # the cache record still matches
    strict = _run([*base, "verify", "--reference"], env)
    assert strict.returncode != 0
    assert "reference build" in strict.stderr


def test_a_binary_cached_for_another_pin_is_not_handed_out(tmp_path: Path, raw_lock: dict) -> None:
    lock = ComponentLock.from_dict(raw_lock)
    (tmp_path / "etcd").write_bytes(b"etcd v3.6.15")
    entry = CacheEntry(sha256_file(tmp_path / "etcd"), "go-build", pin="0123456789abcdef")
    CacheRecord(entries={"etcd": entry}).save(tmp_path)
    with pytest.raises(ComponentMissingError, match="another pin"):
        verified_components(lock, tmp_path, names=("etcd",))


def test_pin_changes_with_the_recipe_not_with_recorded_hashes(raw_lock: dict) -> None:
    before = ComponentLock.from_dict(raw_lock).component("etcd").pin()
    raw_lock["components"]["etcd"]["reference_build_sha256"] = "2" * 64
    assert ComponentLock.from_dict(raw_lock).component("etcd").pin() == before
    raw_lock["components"]["etcd"]["go"]["module_version"] = "v3.6.99"
    assert ComponentLock.from_dict(raw_lock).component("etcd").pin() != before


def test_a_new_pin_is_rebuilt_not_refused(
    tiny_setup: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    lock_path, env = tiny_setup
    base = ["--lock", str(lock_path)]
    assert _run([*base, "ensure"], env).returncode == 0
    raw = json.loads(lock_path.read_text())
    raw["components"]["hello"]["version"] = "v0.0.2"
    raw["components"]["hello"]["go"]["ldflags"] = ["-X main.version=v0.0.2"]
    lock_path.write_text(json.dumps(raw))

    stale = _run([*base, "verify"], env)
    assert stale.returncode != 0
    assert "STALE" in stale.stderr
    rebuilt = _run([*base, "ensure"], env)
    assert rebuilt.returncode == 0, rebuilt.stderr
    binary = tmp_path / "cache" / "hello"
    assert subprocess.run([binary], capture_output=True, text=True).stdout == "v0.0.2\n"
    assert _run([*base, "verify"], env).returncode == 0


def test_a_rebuild_that_differs_from_the_record_is_refused_before_caching(
    tiny_setup: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    lock_path, env = tiny_setup
    base = ["--lock", str(lock_path)]
    assert _run([*base, "ensure"], env).returncode == 0
    cache = tmp_path / "cache"
    record = CacheRecord.load(cache)
    # Same pin, different source: what a tampered module cache or toolchain would produce.
    main_go = tmp_path / "mod" / "main.go"
    main_go.write_text(main_go.read_text().replace("fmt.Println(version)", 'fmt.Println("evil")'))
    (cache / "hello").unlink()

    refused = _run([*base, "ensure"], env)
    assert refused.returncode != 0
    assert "does not match" in refused.stderr
    assert not (cache / "hello").exists()  # never placed where users pick binaries up
    assert CacheRecord.load(cache) == record
    assert not list(cache.glob(".build-*"))
