"""Fixtures of the KeyService tests: secret files, the service PKI as the CLI creates it, and
TLS channels with chosen credentials (the command runs through `run_service`)."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from constellation.cli.servicepki import ServicePKI, TLSBundle, issue_service_pki
from constellation.keyservice.tls import SERVER_NAME

Channel = Callable[..., grpc.Channel]


@pytest.fixture
def secret_files(tmp_path: Path) -> Callable[[bytes, bytes], tuple[Path, Path]]:
    def write(key: bytes, salt: bytes) -> tuple[Path, Path]:
        key_file, salt_file = tmp_path / "mastersecret", tmp_path / "salt"
        key_file.write_bytes(key)
        salt_file.write_bytes(salt)
        return key_file, salt_file

    return write


@pytest.fixture(scope="session")
def service_pki() -> ServicePKI:
    """The CA, server and client certificates exactly as `constellation apply` makes them."""
    return issue_service_pki()


@pytest.fixture
def tls_files(tmp_path: Path, service_pki: ServicePKI) -> dict[str, Path]:
    """The KeyService's Secret as mounted: ca.crt, tls.crt, tls.key."""
    directory = tmp_path / "keyservice-tls"
    directory.mkdir()
    paths = {}
    for name, data in service_pki.keyservice_server.secret_data().items():
        (directory / name).write_bytes(data)
        paths[name] = directory / name
    return paths


@pytest.fixture
def tls_channel() -> Channel:
    """``tls_channel(port, bundle=None, *, ca=None, name=SERVER_NAME)``: a TLS channel that
    trusts ``ca`` (default: the bundle's CA) and presents ``bundle``'s certificate, if any."""

    def make(
        port: int,
        bundle: TLSBundle | None = None,
        *,
        ca: bytes | None = None,
        name: str = SERVER_NAME,
    ) -> grpc.Channel:
        root = ca if ca is not None else (bundle.ca_pem if bundle is not None else None)
        credentials = grpc.ssl_channel_credentials(
            root_certificates=root,
            private_key=bundle.key_pem if bundle is not None else None,
            certificate_chain=bundle.cert_pem if bundle is not None else None,
        )
        return grpc.secure_channel(
            f"127.0.0.1:{port}", credentials, options=[("grpc.ssl_target_name_override", name)]
        )

    return make


@pytest.fixture
def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
