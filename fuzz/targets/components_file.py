"""The components file the JoinService reads and hands to every joining node (JSON: the
Kubernetes version and the artifacts with their hashes), ``clusterfiles.parse_components``."""

from __future__ import annotations

import json
from collections.abc import Iterator

from constellation.joinservice.clusterfiles import parse_components


def seeds() -> Iterator[bytes]:
    yield json.dumps(
        {
            "kubernetesVersion": "v1.31.1",
            "components": [
                {
                    "name": "kubelet",
                    "url": "file:///opt/kubelet",
                    "hash": "sha256:" + "ab" * 32,
                    "installPath": "/usr/bin/kubelet",
                    "extract": False,
                },
                {
                    "name": "cni",
                    "url": "https://example.invalid/cni.tgz",
                    "hash": "sha256:" + "cd" * 32,
                    "installPath": "/opt/cni/bin",
                    "extract": True,
                },
            ],
        }
    ).encode()


def target(data: bytes) -> None:
    parse_components(data)
