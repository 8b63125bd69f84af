"""Generate the Python gRPC code from the .proto sources whenever the package is built.

Runs for wheels and for editable installs alike, so a fresh clone followed by ``uv sync`` has
importable ``constellation.proto.*_pb2`` modules without any generated file in git.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class ProtoBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        from grpc_tools import protoc

        root = Path(self.root)
        src = root / "src"
        protos = sorted((src / "constellation" / "proto").glob("*.proto"))
        if not protos:
            raise RuntimeError(f"no .proto files under {src}")
        include = Path(protoc.__file__).parent / "_proto"
        plugin_dir = Path(sys.executable).parent
        args = [
            "grpc_tools.protoc",
            f"-I{src}",
            f"-I{include}",
            f"--python_out={src}",
            f"--grpc_python_out={src}",
            f"--mypy_out={src}",
            f"--mypy_grpc_out={src}",
            f"--plugin=protoc-gen-mypy={plugin_dir / 'protoc-gen-mypy'}",
            f"--plugin=protoc-gen-mypy_grpc={plugin_dir / 'protoc-gen-mypy_grpc'}",
            *(str(p.relative_to(src)) for p in protos),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError("protoc failed; see the messages above")
        # Generated files are git-ignored; make sure wheels still ship them.
        build_data.setdefault("artifacts", []).extend(
            ["src/constellation/proto/*_pb2*.py", "src/constellation/proto/*_pb2*.pyi"]
        )
