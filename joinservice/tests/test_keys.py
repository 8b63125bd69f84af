"""The KeyService client against the real KeyService: derived keys, typed failures, bounded
retries."""

from __future__ import annotations

import os
from collections.abc import Iterator

import grpc
import pytest

from constellation.attestation.kdf import derive_key
from constellation.attestation.service import ServiceMetrics
from constellation.joinservice.errors import UpstreamError
from constellation.joinservice.keys import KeyServiceClient
from constellation.keyservice.keys import DataKeys, MasterSecret
from constellation.keyservice.server import KeyServiceServer

SECRET = MasterSecret(key=os.urandom(32), salt=os.urandom(32))
METHOD = "/kms.API/GetDataKey"


@pytest.fixture
def metrics() -> ServiceMetrics:
    return ServiceMetrics("keyservice")


@pytest.fixture
def channel(metrics: ServiceMetrics) -> Iterator[grpc.Channel]:
    server = KeyServiceServer(DataKeys(SECRET), metrics)
    port = server.add_port("127.0.0.1:0")
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel
    server.grpc_server.stop(None).wait(5)


def test_disk_key_is_derived_from_the_lowercase_uuid(channel: grpc.Channel) -> None:
    client = KeyServiceClient(channel)
    disk = "6BA7B810-9DAD-11D1-80B4-00C04FD430C8"
    key = client.state_disk_key(disk)
    expected = derive_key(SECRET.key, SECRET.salt, "key-" + disk.lower(), 32)
    assert key.reveal() == expected
    assert expected.hex() not in repr(key)


def test_measurement_secret(channel: grpc.Channel) -> None:
    secret = KeyServiceClient(channel).measurement_secret()
    assert secret.reveal() == derive_key(SECRET.key, SECRET.salt, "key-measurementSecret", 32)


def test_refused_request_is_not_retried(channel: grpc.Channel, metrics: ServiceMetrics) -> None:
    client = KeyServiceClient(channel, attempts=5, backoff=0.01)
    with pytest.raises(UpstreamError, match="INVALID_ARGUMENT"):
        client.get_data_key("", 32)
    assert metrics.requests(METHOD, "INVALID_ARGUMENT") == 1


def test_unreachable_keyservice_fails_after_bounded_attempts() -> None:
    with grpc.insecure_channel("127.0.0.1:9") as channel:  # discard port: nothing listens
        client = KeyServiceClient(channel, timeout=0.5, attempts=2, backoff=0.01)
        with pytest.raises(UpstreamError, match="UNAVAILABLE"):
            client.measurement_secret()


def test_attempts_must_be_positive(channel: grpc.Channel) -> None:
    with pytest.raises(ValueError, match="attempts"):
        KeyServiceClient(channel, attempts=0)
