"""The node's Kubernetes identity: its kubelet key, CSR and its Node object.

A joining node creates a fresh ECDSA P-256 key that never leaves it, and sends the JoinService
a CSR with exactly ``O=system:nodes`` and ``CN=system:node:<name>`` plus the node's IP as a
SAN (DESIGN.md §3). The JoinService signs it with the cluster CA only after the node attested.

With that certificate the node registers itself: it creates its own ``Node`` object,
authenticated as ``system:node:<name>`` (the API server's Node authorizer and NodeRestriction
admission allow a node to create exactly its own object). No kubelet or container runtime runs
in this project's mini mode, so nobody posts node heartbeats: registered nodes show
``NotReady``. That is expected and documented; it does not mean the join failed.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from constellation.bootstrapper.atomicfile import PUBLIC_MODE, SECRET_MODE, write_atomic
from constellation.bootstrapper.errors import BootstrapperError

NODES_GROUP = "system:nodes"
NODE_USER_PREFIX = "system:node:"
# RFC 1123 DNS subdomain, which is what Kubernetes accepts as a Node name.
_NODE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_MAX_NODE_NAME = 253
DEFAULT_API_TIMEOUT_S = 15.0


class RegistrationError(BootstrapperError):
    """The kubelet identity is unusable or the Node object could not be created."""


def validate_node_name(name: str) -> str:
    """Return ``name`` if Kubernetes accepts it as a Node name; raise otherwise."""
    if len(name) > _MAX_NODE_NAME or not _NODE_NAME.fullmatch(name):
        raise RegistrationError(
            f"node name {name[:80]!r} is not a valid Kubernetes name (lower-case RFC 1123 "
            "subdomain, at most 253 characters)"
        )
    return name


@dataclass(frozen=True, repr=False)
class KubeletIdentity:
    """The node's kubelet private key and CSR (``repr`` is redacted: it holds a key)."""

    node_name: str
    node_ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    key: ec.EllipticCurvePrivateKey
    csr_pem: bytes

    def __repr__(self) -> str:
        return f"KubeletIdentity(node_name={self.node_name!r}, key=<redacted>)"

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def check_certificate(self, cert_pem: bytes) -> x509.Certificate:
        """Parse the certificate the JoinService issued and confirm it is for THIS key/node.

        A ticket whose certificate names another key or node is refused: the node would
        otherwise register with an identity it cannot use.
        """
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
        except ValueError:
            raise RegistrationError("the kubelet certificate in the ticket is not PEM") from None
        public = cert.public_key()
        ours = self.key.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey) or public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ) != ours.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ):
            raise RegistrationError(
                "the kubelet certificate in the ticket is not for this node's key"
            )
        common_names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        expected_cn = NODE_USER_PREFIX + self.node_name
        if [attr.value for attr in common_names] != [expected_cn]:
            raise RegistrationError(
                f"the kubelet certificate names {[a.value for a in common_names]}, "
                f"expected CN={expected_cn}"
            )
        return cert


def create_kubelet_identity(node_name: str, node_ip: str) -> KubeletIdentity:
    """A fresh ECDSA P-256 key and a CSR with O=system:nodes, CN=system:node:<name>, IP SAN."""
    validate_node_name(node_name)
    try:
        address = ipaddress.ip_address(node_ip)
    except ValueError:
        raise RegistrationError(f"node IP {node_ip!r} is not an IP address") from None
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, NODES_GROUP),
                    x509.NameAttribute(NameOID.COMMON_NAME, NODE_USER_PREFIX + node_name),
                ]
            )
        )
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(address)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KubeletIdentity(
        node_name=node_name,
        node_ip=address,
        key=key,
        csr_pem=csr.public_bytes(serialization.Encoding.PEM),
    )


@dataclass(frozen=True)
class KubeletFiles:
    """Where the node keeps its kubelet credentials (key 0600, written atomically)."""

    directory: Path

    @property
    def key_path(self) -> Path:
        return self.directory / "kubelet.key"

    @property
    def cert_path(self) -> Path:
        return self.directory / "kubelet.crt"

    @property
    def ca_path(self) -> Path:
        return self.directory / "ca.crt"

    def write(self, identity: KubeletIdentity, cert_pem: bytes, ca_pem: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(self.key_path, identity.key_pem, mode=SECRET_MODE)
        write_atomic(self.cert_path, cert_pem, mode=PUBLIC_MODE)
        write_atomic(self.ca_path, ca_pem, mode=PUBLIC_MODE)


def register_node(
    *,
    api_server_endpoint: str,
    files: KubeletFiles,
    node_name: str,
    node_ip: str,
    labels: dict[str, str] | None = None,
    timeout_s: float = DEFAULT_API_TIMEOUT_S,
) -> None:
    """Create this node's Node object, authenticated with its own kubelet certificate.

    An existing object with the same name (a restarted node) is accepted as is.
    """
    from kubernetes import client as k8s  # imported lazily: heavy, and only joins need it

    validate_node_name(node_name)
    host = api_server_endpoint
    if not host.startswith("https://"):
        host = "https://" + host
    configuration = k8s.Configuration()
    configuration.host = host
    configuration.ssl_ca_cert = str(files.ca_path)
    configuration.cert_file = str(files.cert_path)
    configuration.key_file = str(files.key_path)
    configuration.verify_ssl = True
    node = k8s.V1Node(
        metadata=k8s.V1ObjectMeta(name=node_name, labels=dict(labels or {})),
        spec=k8s.V1NodeSpec(),
        status=k8s.V1NodeStatus(addresses=[k8s.V1NodeAddress(type="InternalIP", address=node_ip)]),
    )
    with k8s.ApiClient(configuration) as api_client:
        api = k8s.CoreV1Api(api_client)
        try:
            api.create_node(node, _request_timeout=timeout_s)
        except k8s.ApiException as exc:
            if exc.status == 409:
                return
            raise RegistrationError(
                f"the API server refused to register node {node_name!r}: HTTP {exc.status} "
                f"{exc.reason}"
            ) from None
        except Exception as exc:  # urllib3/ssl errors: report without a traceback
            raise RegistrationError(
                f"cannot reach the API server at {host} to register node {node_name!r}: "
                f"{type(exc).__name__}: {exc}"
            ) from None
