"""A node runs the code of its own image copy, not the installed packages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from constellation.cli.mini import image
from constellation.cli.mini.node import bootstrapper_env


def test_the_node_imports_the_measured_image(tmp_path: Path) -> None:
    built = tmp_path / "image"
    image.build_image(built, kubernetes_version="v1.36.3", components={}, version="node")
    marker = built / "constellation" / "bootstrapper" / "__init__.py"
    marker.write_text(marker.read_text() + "\nIMAGE_MARKER = 'from the image'\n")
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import constellation.bootstrapper as b, constellation.attestation as a; "
            "print(b.IMAGE_MARKER); print(b.__file__); print(a.__file__)",
        ],
        env=bootstrapper_env(built),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    marker_line, bootstrapper_file, attestation_file = result.stdout.splitlines()
    assert marker_line == "from the image"
    assert Path(bootstrapper_file).is_relative_to(built)
    assert Path(attestation_file).is_relative_to(built)
    assert not list(built.rglob("__pycache__"))  # the image stays byte-identical
