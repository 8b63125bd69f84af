"""Bootstrap tokens against a real API server: created through the API, they authenticate as
``system:bootstrap:<id>``; an expired or wrong token is refused."""

from __future__ import annotations

import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from constellation.bootstrapper.kubernetes.controlplane import ControlPlane
from constellation.joinservice.bootstrap_token import (
    DEFAULT_EXTRA_GROUPS,
    BootstrapToken,
    BootstrapTokens,
    discovery_hash,
    generate_token,
)

pytestmark = pytest.mark.kube


def who_am_i(control_plane: ControlPlane, bearer: str) -> k8s.V1UserInfo:
    """Ask the API server who a bearer token is (SelfSubjectReview)."""
    config = k8s.Configuration()
    config.host = control_plane.server
    config.ssl_ca_cert = str(control_plane.ca_cert_path)
    config.api_key = {"authorization": f"Bearer {bearer}"}
    with k8s.ApiClient(config) as api:
        review = k8s.AuthenticationV1Api(api).create_self_subject_review(
            k8s.V1SelfSubjectReview(), _request_timeout=10
        )
    return review.status.user_info


@pytest.fixture
def tokens(kube_client: object) -> BootstrapTokens:
    return BootstrapTokens(k8s.CoreV1Api(kube_client))


def test_created_token_authenticates_as_its_bootstrap_user(
    control_plane: ControlPlane, kube_client: object, tokens: BootstrapTokens
) -> None:
    token = tokens.create_token()
    secret = k8s.CoreV1Api(kube_client).read_namespaced_secret(
        f"bootstrap-token-{token.token_id}", "kube-system"
    )
    assert secret.type == "bootstrap.kubernetes.io/token"

    user = who_am_i(control_plane, token.token.reveal().decode())
    assert user.username == f"system:bootstrap:{token.token_id}"
    assert "system:bootstrappers" in user.groups
    assert set(DEFAULT_EXTRA_GROUPS) <= set(user.groups)


def test_issued_token_protocol_value_authenticates(
    control_plane: ControlPlane, tokens: BootstrapTokens
) -> None:
    issued = tokens.create()
    user = who_am_i(control_plane, issued.token.reveal().decode())
    assert user.username == f"system:bootstrap:{issued.token_id}"


def test_expired_token_is_refused(control_plane: ControlPlane, kube_client: object) -> None:
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    stale = BootstrapTokens(k8s.CoreV1Api(kube_client), clock=lambda: an_hour_ago)
    token = stale.create_token()  # expired 45 minutes ago
    with pytest.raises(ApiException) as err:
        who_am_i(control_plane, token.token.reveal().decode())
    assert err.value.status == 401


def test_wrong_secret_for_a_real_id_is_refused(
    control_plane: ControlPlane, tokens: BootstrapTokens
) -> None:
    real = tokens.create_token()
    forged = BootstrapToken(token_id=real.token_id, secret=generate_token().secret)
    with pytest.raises(ApiException) as err:
        who_am_i(control_plane, forged.token.reveal().decode())
    assert err.value.status == 401


def test_token_never_created_is_refused(control_plane: ControlPlane) -> None:
    with pytest.raises(ApiException) as err:
        who_am_i(control_plane, generate_token().token.reveal().decode())
    assert err.value.status == 401


def test_discovery_hash_matches_kubeadms_openssl_recipe(control_plane: ControlPlane) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl not installed; the cross-check needs it")
    pubkey = subprocess.run(
        [openssl, "x509", "-pubkey", "-noout", "-in", str(control_plane.ca_cert_path)],
        capture_output=True,
        check=True,
    ).stdout
    der = subprocess.run(
        [openssl, "pkey", "-pubin", "-outform", "der"],
        input=pubkey,
        capture_output=True,
        check=True,
    ).stdout
    digest = subprocess.run(
        [openssl, "dgst", "-sha256", "-hex"], input=der, capture_output=True, check=True
    ).stdout.decode()
    expected = "sha256:" + digest.strip().split()[-1]
    assert discovery_hash(control_plane.ca_cert_path.read_bytes()) == expected


def test_controller_manager_removes_expired_token_secrets(
    control_plane: ControlPlane, kube_client: object
) -> None:
    core = k8s.CoreV1Api(kube_client)
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    token = BootstrapTokens(core, clock=lambda: an_hour_ago).create_token()
    name = f"bootstrap-token-{token.token_id}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        present = {item.metadata.name for item in core.list_namespaced_secret("kube-system").items}
        if name not in present:
            return
        time.sleep(0.5)
    pytest.fail(f"tokencleaner did not delete {name} within 60 s")
