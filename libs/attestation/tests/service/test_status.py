"""Error -> status mapping over a real gRPC server: typed errors mapped, bugs hidden."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from constellation.attestation.errors import ConstellationError, Failure, ValidationError
from constellation.attestation.service.errors import UndecodableRequestError
from constellation.attestation.service.handlers import decode_request
from constellation.attestation.service.health import Health, PlaintextHealthPorts
from constellation.attestation.service.metrics import ServiceMetrics
from constellation.attestation.service.status import INTERNAL_ERROR_TEXT, ErrorStatusInterceptor


class RequestError(ConstellationError):
    pass


class SpecificRequestError(RequestError):
    pass


def _raise(exc: BaseException) -> Callable[[bytes, grpc.ServicerContext], bytes]:
    def behaviour(request: bytes, context: grpc.ServicerContext) -> bytes:
        raise exc

    return behaviour


def _abort(request: bytes, context: grpc.ServicerContext) -> bytes:
    context.abort(grpc.StatusCode.FAILED_PRECONDITION, "handler aborted")
    return b""


BEHAVIOURS = {
    "ok": lambda request, context: b"ok:" + request,
    "mapped": _raise(SpecificRequestError("id must not be empty")),
    "validation": _raise(ValidationError([Failure("pcr[4]", "aa", "bb")])),
    "unmapped": _raise(ConstellationError("typed but unmapped")),
    "bug": _raise(KeyError("secret-looking-internal-detail")),
    "abort": _abort,
}


@pytest.fixture
def call() -> Iterator[tuple[Callable[[str], bytes], ServiceMetrics]]:
    metrics = ServiceMetrics("test")
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=2),
        interceptors=[
            metrics.interceptor(),
            ErrorStatusInterceptor({RequestError: grpc.StatusCode.INVALID_ARGUMENT}),
        ],
    )
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "test.T",
                {n: grpc.unary_unary_rpc_method_handler(b) for n, b in BEHAVIOURS.items()},
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield (lambda name: channel.unary_unary(f"/test.T/{name}")(b"x", timeout=10)), metrics
    finally:
        channel.close()
        server.stop(None).wait(5)


def _status(call, name: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as failed:
        call(name)
    return failed.value


def test_success_passes_through(call):
    invoke, metrics = call
    assert invoke("ok") == b"ok:x"
    assert metrics.requests("/test.T/ok", "OK") == 1


def test_mapped_error_uses_most_specific_class(call):
    invoke, metrics = call
    error = _status(invoke, "mapped")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "id must not be empty"
    assert metrics.requests("/test.T/mapped", "INVALID_ARGUMENT") == 1


def test_validation_error_is_permission_denied_with_report(call):
    invoke, _ = call
    error = _status(invoke, "validation")
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "pcr[4]" in error.details()


def test_unmapped_project_error_is_internal_with_its_message(call):
    invoke, _ = call
    error = _status(invoke, "unmapped")
    assert error.code() == grpc.StatusCode.INTERNAL
    assert error.details() == "typed but unmapped"


def test_unexpected_exception_is_internal_without_its_text(call):
    invoke, metrics = call
    error = _status(invoke, "bug")
    assert error.code() == grpc.StatusCode.INTERNAL
    assert error.details() == INTERNAL_ERROR_TEXT
    assert "secret-looking" not in error.details()
    assert metrics.requests("/test.T/bug", "INTERNAL") == 1


def test_abort_in_handler_is_kept(call):
    invoke, metrics = call
    error = _status(invoke, "abort")
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == "handler aborted"
    assert metrics.requests("/test.T/abort", "FAILED_PRECONDITION") == 1


# -- undecodable requests: grpcio alone answers INTERNAL ("Exception deserializing request!");
# -- every Constellation server answers INVALID_ARGUMENT through ErrorStatusInterceptor.

#: Field 1, length-delimited, announcing 16 bytes of which only 9 follow: no message decodes it.
UNDECODABLE = b"\x0a\x10truncated"


def _health_request_server(interceptors: list[Any]) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), interceptors=interceptors)
    handler = grpc.unary_unary_rpc_method_handler(
        lambda request, context: health_pb2.HealthCheckResponse(
            status=health_pb2.HealthCheckResponse.SERVING
        ),
        request_deserializer=health_pb2.HealthCheckRequest.FromString,
        response_serializer=health_pb2.HealthCheckResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("test.Decode", {"Check": handler}),)
    )
    return server, server.add_insecure_port("127.0.0.1:0")


def _raw_call(port: int, method: str, payload: bytes) -> grpc.RpcError:
    # No request serializer: the bytes go out as they are.
    with (
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
        pytest.raises(grpc.RpcError) as failed,
    ):
        channel.unary_unary(method)(payload, timeout=10)
    return failed.value


@pytest.mark.parametrize("with_interceptor", [False, True], ids=["grpcio-alone", "constellation"])
def test_undecodable_request_is_invalid_argument(with_interceptor: bool) -> None:
    metrics = ServiceMetrics("test")
    chain: list[Any] = [metrics.interceptor()]
    if with_interceptor:
        chain.append(ErrorStatusInterceptor())
    server, port = _health_request_server(chain)
    server.start()
    try:
        error = _raw_call(port, "/test.Decode/Check", UNDECODABLE)
    finally:
        server.stop(None).wait(5)
    if not with_interceptor:
        assert error.code() == grpc.StatusCode.INTERNAL  # why the interceptor has to do it
        return
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid protobuf message" in (error.details() or "")
    assert metrics.requests("/test.Decode/Check", "INVALID_ARGUMENT") == 1


def test_decode_request_raises_the_typed_error() -> None:
    with pytest.raises(UndecodableRequestError, match=r"/test\.Decode/Check"):
        decode_request(health_pb2.HealthCheckRequest.FromString, UNDECODABLE, "/test.Decode/Check")
    request = health_pb2.HealthCheckRequest(service="kms.API")
    decoded = decode_request(health_pb2.HealthCheckRequest.FromString, request.SerializeToString())
    assert decoded == request


def test_plaintext_health_port_answers_undecodable_probes_with_invalid_argument() -> None:
    ports = PlaintextHealthPorts(Health(["test.T"]))
    port = ports.add("127.0.0.1:0")
    ports.start()
    try:
        error = _raw_call(port, "/grpc.health.v1.Health/Check", UNDECODABLE)
    finally:
        for server in ports.servers:
            server.stop(None).wait(5)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
