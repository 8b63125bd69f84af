"""The node's Kubernetes identity: its kubelet key, CSR and its Node object.

A joining node creates a fresh ECDSA P-256 key that never leaves it, and sends the JoinService
a CSR with exactly ``O=system:nodes`` and ``CN=system:node:<name>`` plus the node's IP as a
SAN (DESIGN.md §3). The JoinService signs it with the cluster CA only after the node attested.

The first control-plane node has no JoinService to ask: it creates the same key and CSR and
signs the CSR itself with the cluster CA its init just generated (:func:`sign_own_kubelet_csr`,
the JoinService's certificate profile), so it is a Node like every other. Its control-plane
role label is set by the admin afterwards (:func:`label_control_plane_node`): NodeRestriction
forbids a node to set ``node-role.kubernetes.io/*`` labels on itself.

With that certificate the node registers itself: it creates its own ``Node`` object,
authenticated as ``system:node:<name>`` (the API server's Node authorizer and NodeRestriction
admission allow a node to create exactly its own object). No kubelet or container runtime runs
in this project's mini mode, so nobody posts node heartbeats: registered nodes show
``NotReady``. That is expected and documented; it does not mean the join failed.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from constellation.bootstrapper.atomicfile import PUBLIC_MODE, SECRET_MODE, write_atomic
from constellation.bootstrapper.errors import BootstrapperError

NODES_GROUP = "system:nodes"
NODE_USER_PREFIX = "system:node:"
# RFC 1123 DNS subdomain, which is what Kubernetes accepts as a Node name.
_NODE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_MAX_NODE_NAME = 253
DEFAULT_API_TIMEOUT_S = 15.0
CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"
OWN_CERT_VALIDITY = datetime.timedelta(days=365)
# Tolerated clock skew between this node and the API server (as the JoinService's profile).
OWN_CERT_BACKDATE = datetime.timedelta(minutes=5)


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


def sign_own_kubelet_csr(
    identity: KubeletIdentity,
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    *,
    now: datetime.datetime,
) -> bytes:
    """Sign this node's own kubelet CSR with the cluster CA (first control-plane node only).

    Same profile as the JoinService issues: subject O=system:nodes, CN=system:node:<name>, the
    CSR's IP SANs, not a CA, EKU client+server auth, never valid beyond the CA. The CSR's
    self-signature and subject are checked although this node made it: a CSR that does not
    match ``identity`` is a bug that must not yield a certificate.
    """
    try:
        csr = x509.load_pem_x509_csr(identity.csr_pem)
        ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
        ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    except ValueError as exc:
        raise RegistrationError(f"cannot load the CSR or the cluster CA: {exc}") from None
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise RegistrationError("the cluster CA key is not an ECDSA key (DESIGN.md §3)")
    if not csr.is_signature_valid:
        raise RegistrationError("the kubelet CSR's self-signature does not verify")
    expected_cn = NODE_USER_PREFIX + identity.node_name
    common_names = [a.value for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    groups = [a.value for a in csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    if common_names != [expected_cn] or groups != [NODES_GROUP]:
        raise RegistrationError(
            f"the kubelet CSR names CN={common_names} O={groups}, expected "
            f"CN={expected_cn} O={NODES_GROUP}"
        )
    if not ca_cert.not_valid_before_utc <= now < ca_cert.not_valid_after_utc:
        raise RegistrationError(f"the cluster CA is not valid at {now.isoformat()}")
    try:
        sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise RegistrationError("the kubelet CSR carries no IP SAN") from None
    ips = sans.get_values_for_type(x509.IPAddress)
    if not ips or len(ips) != len(sans):
        raise RegistrationError("the kubelet CSR's SANs must be IP addresses only")
    public_key = csr.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise RegistrationError("the kubelet CSR does not carry an ECDSA key")
    cert = (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(max(now - OWN_CERT_BACKDATE, ca_cert.not_valid_before_utc))
        .not_valid_after(min(now + OWN_CERT_VALIDITY, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ip) for ip in ips]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    identity.check_certificate(cert_pem)
    return cert_pem


def label_control_plane_node(
    *, admin_kubeconfig: bytes, node_name: str, timeout_s: float = DEFAULT_API_TIMEOUT_S
) -> None:
    """Mark ``node_name`` as a control-plane node, as the cluster admin.

    NodeRestriction refuses ``node-role.kubernetes.io/*`` labels from the node itself, so this
    one label is set with the admin kubeconfig the init produced (a merge patch, idempotent).
    """
    import yaml
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    validate_node_name(node_name)
    configuration = k8s.Configuration()
    try:
        k8s_config.load_kube_config_from_dict(  # type: ignore[no-untyped-call]
            yaml.safe_load(admin_kubeconfig), client_configuration=configuration
        )
    except Exception as exc:  # a malformed kubeconfig: name the kind only, never its content
        raise RegistrationError(
            f"cannot use the admin kubeconfig to label node {node_name!r}: {type(exc).__name__}"
        ) from None
    patch = {"metadata": {"labels": {CONTROL_PLANE_LABEL: ""}}}
    with k8s.ApiClient(configuration) as api_client:
        try:
            k8s.CoreV1Api(api_client).patch_node(node_name, patch, _request_timeout=timeout_s)
        except k8s.ApiException as exc:
            raise RegistrationError(
                f"the API server refused to label node {node_name!r} as control plane: "
                f"HTTP {exc.status} {exc.reason}"
            ) from None
        except Exception as exc:  # urllib3/ssl errors: report without a traceback
            raise RegistrationError(
                f"cannot reach the API server to label node {node_name!r}: "
                f"{type(exc).__name__}: {exc}"
            ) from None
