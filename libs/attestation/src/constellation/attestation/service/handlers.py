"""Wrapping the behaviour of a gRPC method handler, whatever its streaming kind.

grpcio's server interceptors see only the method name, not the servicer context; anything
that needs the context (status codes, peer identity) has to wrap the handler's behaviour
instead. This module does that once for all four kinds of handler.

It also holds the one decoding path for request bytes. grpcio deserializes a request before any
interceptor's behaviour runs and answers a failure itself, with INTERNAL; a
:func:`tolerant_deserializer` instead hands an :class:`UndecodableRequest` on to the behaviour,
where ``status.ErrorStatusInterceptor`` refuses it as a typed
:class:`~constellation.attestation.service.errors.UndecodableRequestError` (INVALID_ARGUMENT).
:func:`decode_request` is the same path for callers outside a server (fuzz targets, tests).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from constellation.attestation.service.errors import UndecodableRequestError

Behaviour = Callable[..., Any]
Around = Callable[[Behaviour], Behaviour]
Deserializer = Callable[[bytes], Any]

#: The longest decoder message an ``UndecodableRequest`` keeps (it names a type, never bytes).
_MAX_REASON = 200


@dataclass(frozen=True)
class UndecodableRequest:
    """Stands in for a request whose bytes did not decode; ``reason`` is the decoder's error."""

    reason: str


def tolerant_deserializer(deserializer: Deserializer | None) -> Deserializer | None:
    """``deserializer`` that returns an :class:`UndecodableRequest` instead of raising.

    Any exception counts: whatever the decoder trips over, the bytes came from the caller.
    """
    if deserializer is None:
        return None

    def decode(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # the caller's bytes, whatever the decoder raised
            return UndecodableRequest(f"{type(exc).__name__}: {exc}"[:_MAX_REASON])

    return decode


def decode_request(deserializer: Deserializer, data: bytes, method: str = "") -> Any:
    """The request a handler would get for ``data``; raises ``UndecodableRequestError``."""
    decode = tolerant_deserializer(deserializer)
    assert decode is not None
    request = decode(data)
    if isinstance(request, UndecodableRequest):
        raise UndecodableRequestError(method, request.reason)
    return request


def wrap_rpc_handler(
    handler: grpc.RpcMethodHandler[Any, Any],
    around: Around,
    *,
    request_deserializer: Deserializer | None = None,
) -> Any:
    """A copy of ``handler`` whose behaviour is ``around(behaviour)``.

    For streaming responses ``around`` wraps the call that *creates* the response iterator;
    errors raised while iterating later pass it by. All Constellation services are unary.
    ``request_deserializer`` replaces the handler's own when given.
    """
    kinds = {
        "request_deserializer": request_deserializer or handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(around(handler.unary_unary), **kinds)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(around(handler.unary_stream), **kinds)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(around(handler.stream_unary), **kinds)
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(around(handler.stream_stream), **kinds)
    return handler


class BehaviourInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """A server interceptor that wraps every handler's behaviour with :meth:`around`."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        return wrap_rpc_handler(
            handler,
            lambda behaviour: self.around(method, behaviour),
            request_deserializer=self.request_deserializer(handler),
        )

    def request_deserializer(self, handler: grpc.RpcMethodHandler[Any, Any]) -> Deserializer | None:
        """A replacement for ``handler``'s request deserializer, or None to keep its own."""
        return None

    @abc.abstractmethod
    def around(self, method: str, behaviour: Behaviour) -> Behaviour:
        """The behaviour to run instead of ``behaviour`` for calls of ``method``."""


def is_abort(exc: BaseException) -> bool:
    """True for the exception ``ServicerContext.abort`` raises to end a call.

    grpcio raises a bare ``Exception()`` after recording the status; it must propagate
    unchanged, or the recorded status would be overwritten.
    """
    return type(exc) is Exception and not exc.args
