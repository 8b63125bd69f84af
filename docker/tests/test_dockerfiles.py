"""Every Dockerfile keeps the image contract: multi-stage, uv only in the build stage, non-root,
exec-form ENTRYPOINT of the component's own console script, OCI labels, hadolint-clean."""

from __future__ import annotations

import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"

# component -> (workspace directory of its package, needs tpm2-tss at run time)
COMPONENTS = {
    "keyservice": ("keyservice", False),
    "joinservice": ("joinservice", False),
    "verificationservice": ("verificationservice", True),
    "bootstrapper": ("bootstrapper", True),
    "cli": ("cli", True),
}
BASE_IMAGE = "localhost/constellation/base-python:bookworm-3.11"
NONROOT = "65532:65532"
# Labels fixed per Dockerfile, and labels hack/build-images adds per build (`--label`).
STATIC_OCI_LABELS = {
    "org.opencontainers.image.title",
    "org.opencontainers.image.description",
    "org.opencontainers.image.licenses",
}
BUILD_OCI_LABELS = (
    "org.opencontainers.image.version",
    "org.opencontainers.image.revision",
    "org.opencontainers.image.created",
    "org.opencontainers.image.base.name",
)
# Tools that belong to the build stage only; none may be installed into a runtime stage.
BUILD_ONLY_PACKAGES = (
    "gcc",
    "libc6-dev",
    "python3-dev",
    "libtss2-dev",
    "pkg-config",
    "python3-venv",
)
TPM_RUNTIME_LIBRARIES = ("libtss2-esys-3.0.2-0", "libtss2-tctildr0", "libtss2-tcti-device0")


def console_script(directory: str) -> str:
    """The command the component's pyproject.toml installs (its only console script)."""
    project = tomllib.loads((REPO / directory / "pyproject.toml").read_text())["project"]
    (name,) = project["scripts"]
    return str(name)


def runtime_apt_packages(stage: object) -> set[str]:
    words: set[str] = set()
    for run in stage.all("RUN"):  # type: ignore[attr-defined]
        if "apt-get install" in run.argument:
            words.update(w for w in run.argument.split() if not w.startswith("-") and w != "&&")
    return words


@pytest.fixture(params=sorted(COMPONENTS))
def component(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_every_component_has_a_dockerfile() -> None:
    present = {p.parent.name for p in DOCKER.glob("*/Dockerfile")} - {"base"}
    assert present == set(COMPONENTS)


def test_build_stage_installs_with_uv_and_runtime_copies_only_the_venv(
    component: str, dockerfile_reader: ModuleType
) -> None:
    parsed = dockerfile_reader.parse(DOCKER / component / "Dockerfile")
    assert [a.argument for a in parsed.global_args] == [f"BASE_IMAGE={BASE_IMAGE}"]
    build, runtime = parsed.stages
    assert (build.name, build.base, runtime.name, runtime.base) == (
        "build",
        "${BASE_IMAGE}",
        None,
        "${BASE_IMAGE}",
    )
    build_runs = " ".join(r.argument for r in build.all("RUN"))
    assert '"uv==${UV_VERSION}"' in build_runs
    assert "uv pip install" in build_runs
    assert "--requirement /build/requirements.txt" in build_runs
    assert "--no-deps /build/dist/*.whl" in build_runs
    assert [c.argument for c in build.all("COPY")] == [
        "build-ca-certificates.crt /etc/ssl/certs/build-ca-certificates.crt",
        "requirements.txt /build/requirements.txt",
        "dist/ /build/dist/",
    ]
    # The runtime stage gets the virtual environment and nothing else from the build.
    assert [c.argument for c in runtime.all("COPY")] == [
        "--from=build /opt/constellation /opt/constellation"
    ]
    runtime_text = " ".join(i.argument for i in runtime.instructions)
    assert "/opt/uv" not in runtime_text
    assert "build-ca-certificates" not in runtime_text
    assert not runtime_apt_packages(runtime) & set(BUILD_ONLY_PACKAGES)


def test_runtime_stage_runs_the_console_script_as_nonroot(
    component: str, dockerfile_reader: ModuleType
) -> None:
    directory, _ = COMPONENTS[component]
    runtime = dockerfile_reader.parse(DOCKER / component / "Dockerfile").stages[-1]
    (user,) = runtime.all("USER")
    assert user.argument == NONROOT
    (entrypoint,) = runtime.all("ENTRYPOINT")
    assert entrypoint.exec_form() == [f"/opt/constellation/bin/{console_script(directory)}"]
    # USER must come before ENTRYPOINT so nothing after it runs as root by accident.
    keywords = [i.keyword for i in runtime.instructions]
    assert keywords.index("USER") < keywords.index("ENTRYPOINT")
    assert "RUN" not in keywords[keywords.index("USER") :]


def test_service_images_drop_shells_and_package_managers(
    component: str, dockerfile_reader: ModuleType
) -> None:
    """The in-cluster services run no shell; the bootstrapper (which drives kubeadm and
    cryptsetup on a node) and the CLI (an operator's tool) keep theirs."""
    runtime = dockerfile_reader.parse(DOCKER / component / "Dockerfile").stages[-1]
    runs = runtime.all("RUN")
    slims = [r for r in runs if "/usr/bin/sh" in r.argument]
    if component in ("bootstrapper", "cli"):
        assert slims == []
        return
    (slim,) = slims
    for removed in ("/usr/bin/bash", "/usr/bin/dash", "/usr/bin/apt-*", "/usr/bin/dpkg"):
        assert removed in slim.argument
    assert "/var/lib/dpkg" not in slim.argument, "scanners need dpkg's status file"
    # Nothing after it may need a shell: no shell-form RUN follows it.
    assert runs[-1] is slim


def test_oci_labels(component: str, dockerfile_reader: ModuleType) -> None:
    runtime = dockerfile_reader.parse(DOCKER / component / "Dockerfile").stages[-1]
    labels: dict[str, str] = {}
    for label in runtime.all("LABEL"):
        labels.update(label.labels())
    assert set(labels) == STATIC_OCI_LABELS
    expected_title = "constellation-cli" if component == "cli" else f"constellation-{component}"
    assert labels["org.opencontainers.image.title"] == expected_title
    assert labels["org.opencontainers.image.licenses"] == "AGPL-3.0-only"
    # LABEL is the last instruction: nothing after it, so the labels never break layer caching.
    assert runtime.instructions[-1].keyword == "LABEL"


def test_build_script_adds_the_per_build_labels() -> None:
    script = (REPO / "hack" / "build-images").read_text()
    for label in BUILD_OCI_LABELS:
        assert f'--label "{label}=$' in script


def test_tpm_components_get_tpm2_tss_at_build_and_run_time(
    component: str, dockerfile_reader: ModuleType
) -> None:
    _, needs_tpm = COMPONENTS[component]
    build, runtime = dockerfile_reader.parse(DOCKER / component / "Dockerfile").stages
    build_packages = runtime_apt_packages(build)
    packages = runtime_apt_packages(runtime)
    if needs_tpm:
        assert {"libtss2-dev", "gcc", "pkg-config"} <= build_packages
        assert set(TPM_RUNTIME_LIBRARIES) <= packages
        assert any('import tpm2_pytss"' in r.argument for r in runtime.all("RUN"))
    else:
        assert not packages, "the service needs no Debian package beyond the base image"
        assert "libtss2-dev" not in build_packages
    assert ("cryptsetup-bin" in packages) == (component == "bootstrapper")


def test_base_image_is_built_from_a_local_rootfs(dockerfile_reader: ModuleType) -> None:
    parsed = dockerfile_reader.parse(DOCKER / "base" / "Dockerfile")
    (stage,) = parsed.stages
    assert stage.base == "scratch"
    assert [a.argument for a in stage.all("ADD")] == ["rootfs.tar /"]
    assert any("useradd --uid 65532" in r.argument for r in stage.all("RUN"))
    packages = (DOCKER / "base" / "debootstrap-packages").read_text().split()
    assert "python3" in [p for p in packages if not p.startswith("#")]


def test_reader_sees_an_instruction_swallowed_by_a_stray_backslash(
    tmp_path: Path, dockerfile_reader: ModuleType
) -> None:
    """The contract tests rely on this: a trailing backslash hides the next instruction."""
    broken = tmp_path / "Dockerfile"
    broken.write_text("FROM x AS build\nFROM x\nRUN true \\\nCOPY --from=build /a /a\nUSER 1\n")
    runtime = dockerfile_reader.parse(broken).stages[-1]
    assert runtime.all("COPY") == []


def _hadolint(uvx: Callable[[str], list[str]], *files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*uvx("hadolint"), "--no-color", "-c", str(DOCKER / ".hadolint.yaml"), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_hadolint_clean(uvx: Callable[[str], list[str]]) -> None:
    files = sorted(DOCKER.glob("*/Dockerfile"))
    assert len(files) == len(COMPONENTS) + 1
    result = _hadolint(uvx, *files)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_rejects_a_bad_dockerfile(tmp_path: Path, uvx: Callable[[str], list[str]]) -> None:
    """The lint gate can fail: shell-form ENTRYPOINT and `cd` in RUN are reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM localhost/x:1\nRUN cd /tmp && true\nENTRYPOINT run-me --flag\n")
    result = _hadolint(uvx, bad)
    assert result.returncode != 0
    assert "DL3003" in result.stdout
    assert "DL3025" in result.stdout
