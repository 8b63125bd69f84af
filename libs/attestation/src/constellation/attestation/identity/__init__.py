"""Platform identity: who a node is, as its platform (not the node) vouches.

A TPM quote proves *what* booted; it does not prove *which machine* quoted, nor that the key
that signed it lives in a TPM at all: the attributes in an attestation key's ``TPMT_PUBLIC``
(fixedTPM, restricted, sign) are claims anyone can write into a software key. Clouds close
that gap with an AK certificate: when they create a vTPM they create its AK inside it and
sign a certificate for the AK's public key with the provider's CA, naming the instance.

This package is that certificate's profile and its pure verification (no I/O):

- ``Role`` and ``NodeIdentity``: what a verified AK certificate establishes (instance name,
  role, the AK's SPKI hash, and which platform root vouched for it). Validators put it in
  ``VerifiedEvidence.identity``; services take names, roles and membership from it and from
  records bound to it, never from a request.

What rests on the platform CA: whoever holds its key can mint an identity for any name and
role. In mini mode that key lives in the admin's workspace (the CLI plays the cloud), never on
a node; a real QEMU/KVM host or cloud plugs in its own AK CA by configuring its root
certificate(s) as the platform roots.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    """A node's role in the cluster, as its platform identity states it."""

    CONTROL_PLANE = "control-plane"
    WORKER = "worker"


@dataclass(frozen=True)
class NodeIdentity:
    """What a verified AK certificate establishes about the quoting machine.

    ``ak_sha256`` is the hex SHA-256 of the AK's DER SubjectPublicKeyInfo (the key the quote
    verified with); ``platform`` the hex SHA-256 of the DER of the platform root that the
    certificate chains to.
    """

    name: str
    role: Role
    ak_sha256: str
    platform: str


__all__ = ["NodeIdentity", "Role"]
