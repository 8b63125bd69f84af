"""The Pants build definitions really work: targets, inference, wheels and tests through Pants.

Pants is run through ``hack/pants`` (Pants 2.17.1 in a CPython 3.9 venv outside the clone, its
tools built from local files), always with ``--no-pantsd`` so no daemon outlives a test. The
checks that need no Pants (the third-party list, the wheel comparison) run everywhere; the rest
skip with the reason when this machine cannot run Pants at all.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import tempfile
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
PANTS = REPO / "hack" / "pants"
REQUIREMENTS = REPO / "3rdparty" / "python" / "requirements.txt"
# Needed under Pants but declared by no component: the test runner.
EXTRA_REQUIREMENTS = {"pytest", "pytest-timeout"}
# Installing Pants and its tools the first time takes minutes; later runs take seconds.
PANTS_TIMEOUT_S = 1500


def _members() -> list[Path]:
    root = tomllib.loads((REPO / "pyproject.toml").read_text())
    return [REPO / member for member in root["tool"]["uv"]["workspace"]["members"]]


def _project(member: Path) -> dict[str, Any]:
    project: dict[str, Any] = tomllib.loads((member / "pyproject.toml").read_text())["project"]
    return project


def _name(requirement: str) -> str:
    """The normalized distribution name of a PEP 508 requirement string."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match is not None, f"not a requirement: {requirement!r}"
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def external_requirements(projects: list[dict[str, Any]]) -> set[str]:
    """Every third-party requirement (as written) of the given projects, extras included."""
    found: set[str] = set()
    for project in projects:
        extras = project.get("optional-dependencies", {}).values()
        for requirement in [*project["dependencies"], *(r for group in extras for r in group)]:
            if not _name(requirement).startswith("constellation-"):
                found.add(requirement.replace(" ", ""))
    return found


def listed_requirements(text: str) -> set[str]:
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return {line.replace(" ", "") for line in lines if line}


def requirement_drift(projects: list[dict[str, Any]], listed: set[str]) -> list[str]:
    """What the Pants requirement list lacks or has beyond the components' declarations."""
    declared = external_requirements(projects)
    missing = sorted(declared - listed)
    surplus = sorted(r for r in listed - declared if _name(r) not in EXTRA_REQUIREMENTS)
    return [f"missing {r}" for r in missing] + [
        f"not declared by any component: {r}" for r in surplus
    ]


def wheel_differences(ours: Path, theirs: Path) -> list[str]:
    """Every member that is absent from one wheel or whose bytes differ."""
    with zipfile.ZipFile(ours) as a, zipfile.ZipFile(theirs) as b:
        names_a, names_b = set(a.namelist()), set(b.namelist())
        problems = [f"only in {ours.name}: {n}" for n in sorted(names_a - names_b)]
        problems += [f"only in {theirs.name}: {n}" for n in sorted(names_b - names_a)]
        problems += [f"differs: {n}" for n in sorted(names_a & names_b) if a.read(n) != b.read(n)]
    return problems


def _pytest_plugins(source: str) -> list[str]:
    """The module names a conftest.py lists in `pytest_plugins`, read without importing it."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "pytest_plugins" for t in targets):
                assert node.value is not None
                value: list[str] = ast.literal_eval(node.value)
                return value
    return []


def _pants_unavailable() -> str | None:
    pythons = [*Path.home().glob(".pyenv/versions/3.9.*/bin/python3.9")]
    if not pythons and shutil.which("python3.9") is None:
        return "Pants 2.17.1 needs CPython 3.9 (pyenv install 3.9)"
    for tool in ("protoc", "grpc_python_plugin", "uv"):
        if shutil.which(tool) is None:
            return f"{tool} missing (apt-get install protobuf-compiler protobuf-compiler-grpc)"
    return None


def pants(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PANTS), "--no-pantsd", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=PANTS_TIMEOUT_S,
        check=False,
    )


needs_pants = pytest.mark.skipif(_pants_unavailable() is not None, reason=str(_pants_unavailable()))


@pytest.fixture(scope="module")
def peek() -> dict[str, dict[str, Any]]:
    result = pants("peek", "--exclude-defaults", "::")
    assert result.returncode == 0, result.stderr[-4000:]
    return {target["address"]: target for target in json.loads(result.stdout)}


def test_requirement_list_is_the_union_of_the_components_dependencies() -> None:
    projects = [_project(member) for member in _members()]
    assert requirement_drift(projects, listed_requirements(REQUIREMENTS.read_text())) == []


def test_requirement_drift_names_a_missing_and_a_surplus_requirement() -> None:
    projects = [{"dependencies": ["grpcio>=1.70", "constellation-proto"]}]
    drift = requirement_drift(projects, {"cryptography>=44", "pytest"})
    assert drift == ["missing grpcio>=1.70", "not declared by any component: cryptography>=44"]


def test_wheel_differences_notice_changed_missing_and_added_members(tmp_path: Path) -> None:
    def wheel(name: str, members: dict[str, bytes]) -> Path:
        path = tmp_path / name
        with zipfile.ZipFile(path, "w") as out:
            for member, data in members.items():
                out.writestr(member, data)
        return path

    same = wheel("a.whl", {"x.py": b"1"})
    assert wheel_differences(same, wheel("b.whl", {"x.py": b"1"})) == []
    other = wheel("c.whl", {"x.py": b"2", "y.py": b""})
    assert wheel_differences(same, other) == ["only in c.whl: y.py", "differs: x.py"]


@pytest.mark.slow
@pytest.mark.timeout(PANTS_TIMEOUT_S * 2)
@needs_pants
def test_every_member_is_a_distribution_with_its_command(
    peek: dict[str, dict[str, Any]],
) -> None:
    for member in _members():
        spec = member.relative_to(REPO).as_posix()
        project = _project(member)
        dist = peek.get(f"{spec}:dist")
        assert dist is not None, f"{spec}/BUILD has no python_distribution `dist`"
        assert dist["target_type"] == "python_distribution"
        assert dist["generate_setup"] is False, "the wheel must come from pyproject.toml"
        assert dist["provides"] == {"name": project["name"], "version": project["version"]}
        for command, entry_point in project.get("scripts", {}).items():
            binary = peek.get(f"{spec}:{command}")
            assert binary is not None, f"{spec}/BUILD has no pex_binary for {command}"
            assert binary["target_type"] == "pex_binary"
            target_entry = binary["entry_point"]
            assert f"{target_entry['module']}:{target_entry['function']}" == entry_point
        if (member / "tests").is_dir():
            assert peek[f"{spec}/tests:tests"]["target_type"] == "python_tests"


@pytest.mark.slow
@pytest.mark.timeout(PANTS_TIMEOUT_S * 2)
@needs_pants
def test_dependency_inference_crosses_namespace_packages_and_protobuf_codegen() -> None:
    result = pants("dependencies", "keyservice/src/constellation/keyservice/server.py")
    assert result.returncode == 0, result.stderr[-4000:]
    deps = set(result.stdout.split())
    assert "proto/src/constellation/proto/kms.proto:../../protos" in deps
    assert any(d.startswith("libs/attestation/src/constellation/attestation/") for d in deps)
    assert "3rdparty/python:reqs#grpcio" in deps


@pytest.mark.slow
@pytest.mark.timeout(PANTS_TIMEOUT_S * 2)
@needs_pants
def test_root_conftest_depends_on_every_fixture_module_it_names() -> None:
    plugins = _pytest_plugins((REPO / "conftest.py").read_text())
    assert plugins, "conftest.py names no fixture modules"
    result = pants("dependencies", "//conftest.py:conftest")
    assert result.returncode == 0, result.stderr[-4000:]
    files = {address.split(":", 1)[0] for address in result.stdout.split()}
    for plugin in plugins:
        component = plugin.split(".")[1]
        root = "libs/attestation" if component == "attestation" else component
        module = f"{root}/src/{plugin.replace('.', '/')}.py"
        assert module in files, f"Pants misses the fixture module {plugin}"


@pytest.mark.slow
@pytest.mark.timeout(PANTS_TIMEOUT_S * 2)
@needs_pants
@pytest.mark.parametrize("member", ["keyservice", "proto"])
def test_pants_wheel_equals_the_uv_wheel(member: str, tmp_path: Path) -> None:
    project = _project(REPO / member)
    uv_dist = tmp_path / "uv"
    # Pants writes only inside the build root; dist/ is git-ignored, the subdirectory is ours.
    (REPO / "dist").mkdir(exist_ok=True)
    pants_dist = Path(tempfile.mkdtemp(prefix="build-tests-", dir=REPO / "dist"))
    try:
        result = pants(f"--pants-distdir={pants_dist}", "package", f"{member}:dist")
        assert result.returncode == 0, result.stderr[-4000:]
        (ours,) = pants_dist.glob("*.whl")
        shutil.copy(ours, tmp_path / ours.name)
    finally:
        shutil.rmtree(pants_dist)
    ours = tmp_path / ours.name
    built = subprocess.run(
        ["uv", "build", "--wheel", "--package", project["name"], "--out-dir", str(uv_dist)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=PANTS_TIMEOUT_S,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-4000:]
    (theirs,) = uv_dist.glob("*.whl")
    assert ours.name == theirs.name
    assert wheel_differences(ours, theirs) == []


@pytest.mark.slow
@pytest.mark.timeout(PANTS_TIMEOUT_S * 2)
@needs_pants
def test_pants_runs_a_test_file_and_reports_a_failed_run() -> None:
    # test_main starts the KeyService as `python -m constellation.keyservice`: no import shows
    # that, so the tests' BUILD files must give them the whole package.
    passed = pants("test", "libs/attestation/tests/test_kdf.py", "keyservice/tests/test_main.py")
    assert passed.returncode == 0, passed.stderr[-4000:]
    assert "libs/attestation/tests/test_kdf.py succeeded" in passed.stderr
    assert "keyservice/tests/test_main.py succeeded" in passed.stderr
    # Selecting no test is a pytest failure (exit 5); Pants must pass that on, not hide it.
    failed = pants("test", "libs/attestation/tests/test_kdf.py", "--", "-k", "no_such_test")
    assert failed.returncode != 0
    assert "libs/attestation/tests/test_kdf.py failed" in failed.stderr
