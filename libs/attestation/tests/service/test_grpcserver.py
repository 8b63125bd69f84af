"""PlainGrpcServer over a real gRPC server: health follows start, errors map, bugs stay hidden."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from constellation.attestation.errors import ConstellationError
from constellation.attestation.service.grpcserver import PlainGrpcServer
from constellation.attestation.service.metrics import ServiceMetrics
from constellation.attestation.service.status import INTERNAL_ERROR_TEXT


class BadRequestError(ConstellationError):
    pass


def _echo(request: bytes, context: grpc.ServicerContext) -> bytes:
    if request == b"bad":
        raise BadRequestError("the request names no key")
    if request == b"bug":
        raise KeyError("internal detail")
    return request


@pytest.fixture
def server() -> Iterator[tuple[PlainGrpcServer, grpc.Channel]]:
    service = PlainGrpcServer(
        "test.Echo",
        ServiceMetrics("test"),
        {BadRequestError: grpc.StatusCode.INVALID_ARGUMENT},
        max_workers=2,
    )
    handler = grpc.method_handlers_generic_handler(
        "test.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
    )
    service.grpc_server.add_generic_rpc_handlers((handler,))
    port = service.add_port("127.0.0.1:0")
    assert port > 0
    service.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield service, channel
    finally:
        channel.close()
        service.grpc_server.stop(grace=None).wait(5)


def _echo_call(channel: grpc.Channel, payload: bytes) -> bytes:
    method = channel.unary_unary("/test.Echo/Echo")
    response: bytes = method(payload, timeout=5)
    return response


def test_health_reports_the_named_service_serving_after_start(
    server: tuple[PlainGrpcServer, grpc.Channel],
) -> None:
    _, channel = server
    stub = health_pb2_grpc.HealthStub(channel)
    answer = stub.Check(health_pb2.HealthCheckRequest(service="test.Echo"), timeout=5)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_health_does_not_know_other_services(
    server: tuple[PlainGrpcServer, grpc.Channel],
) -> None:
    _, channel = server
    stub = health_pb2_grpc.HealthStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.Check(health_pb2.HealthCheckRequest(service="other.API"), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_typed_errors_map_and_bugs_are_hidden(
    server: tuple[PlainGrpcServer, grpc.Channel],
) -> None:
    _, channel = server
    assert _echo_call(channel, b"hello") == b"hello"
    with pytest.raises(grpc.RpcError) as bad:
        _echo_call(channel, b"bad")
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "names no key" in str(bad.value.details())
    with pytest.raises(grpc.RpcError) as bug:
        _echo_call(channel, b"bug")
    assert bug.value.code() == grpc.StatusCode.INTERNAL
    assert bug.value.details() == INTERNAL_ERROR_TEXT
