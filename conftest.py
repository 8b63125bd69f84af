"""Fixtures shared by every component's tests.

Real local parts only: swtpm software TPMs and a loopback Kubernetes control plane. The
fixtures live in importable modules so that tests of any component (and the e2e suite) use the
same, always-cleaned-up processes.
"""

pytest_plugins: list[str] = [
    "constellation.attestation.testing.fixtures",  # swtpm
    "constellation.attestation.testing.service_process",  # service commands as processes
    "constellation.bootstrapper.kubernetes.testing",  # control plane
]
