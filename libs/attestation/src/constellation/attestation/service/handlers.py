"""Wrapping the behaviour of a gRPC method handler, whatever its streaming kind.

grpcio's server interceptors see only the method name, not the servicer context; anything
that needs the context (status codes, peer identity) has to wrap the handler's behaviour
instead. This module does that once for all four kinds of handler.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import grpc

Behaviour = Callable[..., Any]
Around = Callable[[Behaviour], Behaviour]


def wrap_rpc_handler(handler: grpc.RpcMethodHandler[Any, Any], around: Around) -> Any:
    """A copy of ``handler`` whose behaviour is ``around(behaviour)``.

    For streaming responses ``around`` wraps the call that *creates* the response iterator;
    errors raised while iterating later pass it by. All Constellation services are unary.
    """
    kinds = {
        "request_deserializer": handler.request_deserializer,
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
        return wrap_rpc_handler(handler, lambda behaviour: self.around(method, behaviour))

    @abc.abstractmethod
    def around(self, method: str, behaviour: Behaviour) -> Behaviour:
        """The behaviour to run instead of ``behaviour`` for calls of ``method``."""


def is_abort(exc: BaseException) -> bool:
    """True for the exception ``ServicerContext.abort`` raises to end a call.

    grpcio raises a bare ``Exception()`` after recording the status; it must propagate
    unchanged, or the recorded status would be overwritten.
    """
    return type(exc) is Exception and not exc.args
