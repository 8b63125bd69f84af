"""The one place where exceptions become gRPC status codes.

Handlers raise typed errors; ``ErrorStatusInterceptor`` maps them by class (most specific
first, via the MRO) to a status code with the error's message, which by project rule names
what was expected and found but never a secret. Anything else is a bug: it is logged with
its traceback on the server and the caller gets INTERNAL with a fixed text.

Request bytes that do not decode as the method's request message are the caller's error, not
the server's: the interceptor installs a tolerant deserializer on every unary-request method
(``handlers.tolerant_deserializer``) and refuses the undecodable request with
``UndecodableRequestError`` (INVALID_ARGUMENT) before any inner layer or handler runs. Such a
refusal comes before authorization (the aTLS client gate, the KeyService's caller check): it
reveals nothing about the service and costs less than checking the caller.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grpc
import structlog

from constellation.attestation.errors import (
    ConstellationError,
    MalformedEvidenceError,
    ValidationError,
)
from constellation.attestation.service.errors import UndecodableRequestError
from constellation.attestation.service.handlers import (
    Behaviour,
    BehaviourInterceptor,
    Deserializer,
    UndecodableRequest,
    is_abort,
    tolerant_deserializer,
)

_log = structlog.get_logger("constellation.service")

DEFAULT_STATUS_CODES: Mapping[type[BaseException], grpc.StatusCode] = {
    ValidationError: grpc.StatusCode.PERMISSION_DENIED,
    MalformedEvidenceError: grpc.StatusCode.INVALID_ARGUMENT,
    UndecodableRequestError: grpc.StatusCode.INVALID_ARGUMENT,
    ConstellationError: grpc.StatusCode.INTERNAL,
}

INTERNAL_ERROR_TEXT = "internal error; the service log has the details"


def status_for(
    exc: BaseException, codes: Mapping[type[BaseException], grpc.StatusCode]
) -> grpc.StatusCode | None:
    """The code of the most specific mapped class ``exc`` is an instance of, if any."""
    for cls in type(exc).__mro__:
        if cls in codes:
            return codes[cls]
    return None


class ErrorStatusInterceptor(BehaviourInterceptor):
    """Turns exceptions escaping a handler into the mapped status code (see module docs)."""

    def __init__(self, codes: Mapping[type[BaseException], grpc.StatusCode] | None = None) -> None:
        self._codes = {**DEFAULT_STATUS_CODES, **(codes or {})}

    def request_deserializer(self, handler: grpc.RpcMethodHandler[Any, Any]) -> Deserializer | None:
        # Streaming requests decode message by message inside the servicer's iterator; only
        # unary requests (every Constellation method) are decoded before the behaviour runs.
        if handler.unary_unary is None and handler.unary_stream is None:
            return None
        return tolerant_deserializer(handler.request_deserializer)

    def around(self, method: str, behaviour: Behaviour) -> Behaviour:
        def run(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                if isinstance(request, UndecodableRequest):
                    raise UndecodableRequestError(method, request.reason)
                return behaviour(request, context)
            except Exception as exc:
                if is_abort(exc):
                    raise
                code = status_for(exc, self._codes)
                if code is None or not isinstance(exc, ConstellationError):
                    _log.exception("rpc.failed", method=method)
                    context.abort(grpc.StatusCode.INTERNAL, INTERNAL_ERROR_TEXT)
                _log.info("rpc.refused", method=method, code=code.name, error=str(exc))
                context.abort(code, str(exc))

        return run
