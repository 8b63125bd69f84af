"""A kubelet certificate from ``kubelet_cert`` is accepted by a real API server as the node.

The node's certificate authenticates as ``system:node:<name>`` in ``system:nodes``; Node
authorization + NodeRestriction let it create its own Node object and nothing else; a
certificate from a foreign CA is refused.
"""

from __future__ import annotations

import ipaddress
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from constellation.bootstrapper.kubernetes.controlplane import ControlPlane
from constellation.joinservice.kubelet_cert import KubeletCertSigner, SigningCA

pytestmark = pytest.mark.kube


def node_credentials(tmp_path: Path, signer: KubeletCertSigner, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
                    x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{name}"),
                ]
            )
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    signed = signer.sign(csr.public_bytes(serialization.Encoding.PEM), node_name=name)
    cert_path, key_path = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert_path.write_bytes(signed.cert_pem)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def client_for(control_plane: ControlPlane, cert: Path, key: Path) -> k8s.ApiClient:
    config = k8s.Configuration()
    config.host = control_plane.server
    config.ssl_ca_cert = str(control_plane.ca_cert_path)
    config.cert_file = str(cert)
    config.key_file = str(key)
    return k8s.ApiClient(config)


def node_body(name: str) -> k8s.V1Node:
    return k8s.V1Node(
        metadata=k8s.V1ObjectMeta(name=name, labels={"kubernetes.io/hostname": name}),
    )


@pytest.fixture(scope="module")
def cluster_signer(control_plane: ControlPlane) -> KubeletCertSigner:
    ca = SigningCA.from_pem(
        control_plane.ca_cert_path.read_bytes(), control_plane.ca_key_path.read_bytes()
    )
    return KubeletCertSigner(ca)


def test_node_certificate_authenticates_and_registers_its_own_node(
    control_plane: ControlPlane, cluster_signer: KubeletCertSigner, tmp_path: Path
) -> None:
    # The control plane is shared by the whole session: a name no other test uses.
    name = f"kubelet-cert-{uuid.uuid4().hex[:8]}"
    cert, key = node_credentials(tmp_path, cluster_signer, name)
    with client_for(control_plane, cert, key) as api:
        user = (
            k8s.AuthenticationV1Api(api)
            .create_self_subject_review(k8s.V1SelfSubjectReview())
            .status.user_info
        )
        assert user.username == f"system:node:{name}"
        assert "system:nodes" in user.groups

        created = k8s.CoreV1Api(api).create_node(node_body(name))
        assert created.metadata.name == name

        # NodeRestriction: a node may not create (or impersonate) another node.
        with pytest.raises(ApiException) as err:
            k8s.CoreV1Api(api).create_node(node_body(f"{name}-other"))
        assert err.value.status == 403

        # Node authorization: no reading secrets it was not given.
        with pytest.raises(ApiException) as err:
            k8s.CoreV1Api(api).list_namespaced_secret("kube-system")
        assert err.value.status == 403


def test_certificate_from_a_foreign_ca_is_refused(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    foreign_cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    foreign = KubeletCertSigner(
        SigningCA(certificate=foreign_cert, key=key), validity=timedelta(hours=1)
    )
    cert, client_key = node_credentials(tmp_path, foreign, "intruder")
    with client_for(control_plane, cert, client_key) as api, pytest.raises(ApiException) as err:
        k8s.CoreV1Api(api).create_node(node_body("intruder"))
    assert err.value.status == 401
