"""hack/build-images: shellcheck-clean, clear errors on bad arguments, and (slow) a real build of
the KeyService image with buildah that podman then runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "hack" / "build-images"
BUILDAH = ["buildah", "--storage-driver", "vfs"]
PODMAN_RUN = [
    "podman",
    "--storage-driver",
    "vfs",
    "--runtime",
    "runc",
    "run",
    "--rm",
    "--ulimit",
    "nofile=1024:20000",
    "--ulimit",
    "nproc=1024:1024",
]
# Prints the uid and whichever build tools, shells or package managers the runtime image
# (wrongly) still has.
NO_BUILD_TOOLS_PROBE = (
    "import os, shutil; print(os.getuid(), [t for t in"
    " ('uv', 'pip', 'gcc', 'sh', 'bash', 'dash', 'apt-get', 'dpkg') if shutil.which(t)])"
)


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_shellcheck_clean(uvx: Callable[[str], list[str]]) -> None:
    result = subprocess.run(
        [*uvx("shellcheck"), "--severity=style", str(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_rejects_a_bad_script(tmp_path: Path, uvx: Callable[[str], list[str]]) -> None:
    """The lint gate can fail: an unquoted expansion is reported."""
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/usr/bin/env bash\nrm -rf $1/tmp\n")
    result = subprocess.run(
        [*uvx("shellcheck"), str(bad)], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode != 0
    assert "SC2086" in result.stdout


def test_help_lists_the_components() -> None:
    result = run_script("--help")
    assert result.returncode == 0
    for component in ("keyservice", "joinservice", "verificationservice", "bootstrapper", "cli"):
        assert component in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["keyservice", "nosuchservice"], "unknown component 'nosuchservice'"),
        (["--no-such-flag"], "unknown option: --no-such-flag"),
    ],
)
def test_bad_arguments_fail_before_building(args: list[str], message: str) -> None:
    result = run_script(*args)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert "STEP" not in result.stdout  # nothing was built


def test_unreadable_ca_bundle_is_a_clear_error(tmp_path: Path) -> None:
    if shutil.which("buildah") is None or shutil.which("uv") is None:
        pytest.skip("buildah or uv missing: the script checks them before the CA bundle")
    result = subprocess.run(
        [str(SCRIPT), "keyservice"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "BUILD_CA_BUNDLE": str(tmp_path / "missing.crt")},
    )
    assert result.returncode != 0
    assert "missing.crt not readable" in result.stderr


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_keyservice_image_builds_and_runs() -> None:
    """Build the base (if missing) and the KeyService image for real, then run it with podman."""
    for tool in ("buildah", "podman", "debootstrap"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (Debian packages buildah podman debootstrap)")
    if os.geteuid() != 0:
        pytest.skip("buildah/podman with the vfs driver and debootstrap need root here")
    if not (REPO / "keyservice" / "src" / "constellation" / "keyservice" / "__main__.py").exists():
        pytest.skip("constellation.keyservice has no __main__ yet: the image would have no command")

    build = subprocess.run(
        [str(SCRIPT), "keyservice"], capture_output=True, text=True, timeout=3500, check=False
    )
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    tag = "localhost/constellation/keyservice:0.1.0"
    assert tag in build.stdout  # the summary names the image it built

    inspect = subprocess.run(
        [*BUILDAH, "inspect", "--type", "image", tag],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    config = json.loads(inspect.stdout)["OCIv1"]["config"]
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"] == ["/opt/constellation/bin/constellation-keyservice"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == "0.1.0"
    assert len(labels["org.opencontainers.image.revision"]) == 40
    assert labels["org.opencontainers.image.title"] == "constellation-keyservice"
    assert labels["org.opencontainers.image.base.name"].startswith("localhost/constellation/")

    help_run = subprocess.run(
        [*PODMAN_RUN, tag, "--help"], capture_output=True, text=True, timeout=300, check=False
    )
    assert help_run.returncode == 0, help_run.stdout + help_run.stderr
    assert "usage" in help_run.stdout.lower()

    # The image holds no build tooling (uv, pip, compiler), no shell and no package manager.
    probe = subprocess.run(
        [
            *PODMAN_RUN,
            "--entrypoint",
            "/opt/constellation/bin/python",
            tag,
            "-c",
            NO_BUILD_TOOLS_PROBE,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "65532 []"
