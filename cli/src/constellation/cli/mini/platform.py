"""Mini mode's platform: the CA that vouches for each node's vTPM, as a cloud does for its own.

On Azure or GCP the provider creates a vTPM's attestation key (AK) inside it and signs an AK
certificate naming the instance; a verifier that trusts the provider's CA then knows the quote
came from *that* instance's TPM and not from a software key claiming TPM attributes. Mini mode
is this project's cloud, so the CLI plays the provider:

- ``mini up`` creates the platform CA once per workspace (``mini/platform-ca/``: ``ca.pem``
  public, ``ca.key`` 0600). Its key never reaches a node; its certificate becomes
  ``attestation.platformRoots`` in the configuration and ``platformRoots`` in the join-config.
- When a node is created, :func:`certify_node` persists the AK in the node's swtpm (reached
  only through the node's private Unix socket) and issues its AK certificate with the node's
  name and role; the node attaches it to every attestation.

What rests on this CA: whoever holds ``ca.key`` can mint an identity for any node name and role,
so it is a workspace secret like the master secret. A real QEMU/KVM host or cloud plugs in its
own AK CA by putting its root certificate(s) into ``attestation.platformRoots``.
"""

from __future__ import annotations

from pathlib import Path

from constellation.attestation.errors import ConstellationError
from constellation.attestation.identity import Role
from constellation.attestation.identity.ca import PlatformCA
from constellation.attestation.vtpm import ak_spki_der, provision_ak
from constellation.bootstrapper.atomicfile import PUBLIC_MODE, SECRET_MODE, write_atomic
from constellation.cli.mini.errors import MiniError

PLATFORM_CA_DIR = "platform-ca"
CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"
CA_NAME = "constellation-mini platform CA"
#: Where a node keeps what its platform gave it (public files of the node's directory).
AK_CERT_FILE = "ak-cert.der"
PLATFORM_ROOTS_FILE = "platform-roots.pem"


class PlatformError(MiniError):
    """The mini platform CA could not be created, read or used."""


def load_or_create_platform_ca(directory: Path) -> PlatformCA:
    """The workspace's platform CA under ``directory``, created (0700/0600) on first use."""
    cert_path, key_path = directory / CA_CERT_FILE, directory / CA_KEY_FILE
    if cert_path.exists() or key_path.exists():
        try:
            return PlatformCA.from_pem(cert_path.read_bytes(), key_path.read_bytes())
        except (OSError, ConstellationError) as err:
            raise PlatformError(
                f"cannot load the mini platform CA from {directory}: {err}",
                hint="remove the cluster with `constellation mini down` and create it again",
            ) from None
    ca = PlatformCA.generate(CA_NAME)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(key_path, ca.key_pem.reveal(), mode=SECRET_MODE)
    write_atomic(cert_path, ca.cert_pem, mode=PUBLIC_MODE)
    return ca


def certify_node(tcti: str, ca: PlatformCA, name: str, role: Role) -> bytes:
    """Persist the AK in the node's vTPM and certify it as ``name`` in ``role`` (DER)."""
    try:
        return ca.issue_ak_certificate(ak_spki_der(provision_ak(tcti)), name, role)
    except ConstellationError as err:
        raise PlatformError(f"cannot certify the vTPM of node {name}: {err}") from None
