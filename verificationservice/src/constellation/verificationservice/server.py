"""The VerificationService's endpoints: gRPC ``verify.API/GetAttestation`` and HTTP ``GET /``.

Both are plain (no TLS): the evidence protects itself (signed quote bound to the caller's
nonce) and reveals only public facts. HTTP: ``GET /?nonce=<base64url>`` answers
``{"data": "<base64 document>"}``; a bad nonce gets 400, the rate bound 429 (with
``Retry-After`` in whole seconds, the message in milliseconds), an issuing failure 503, all
with ``{"error": "..."}``. gRPC: INVALID_ARGUMENT (a bad nonce, or bytes that are not a
``GetAttestationRequest``), RESOURCE_EXHAUSTED and UNAVAILABLE.
"""

from __future__ import annotations

import base64
import json
import math
import threading
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import grpc
import structlog

from constellation.attestation.service.grpcserver import PlainGrpcServer
from constellation.attestation.service.metrics import ServiceMetrics
from constellation.proto import verify_pb2, verify_pb2_grpc
from constellation.verificationservice.errors import InvalidNonceError, IssueError, RateLimitError
from constellation.verificationservice.evidence import EvidenceSource, nonce_from_query

_log = structlog.get_logger("constellation.verificationservice")

SERVICE_NAME = "verify.API"
HTTP_METHOD_LABEL = "GET /"
STATUS_CODES: Mapping[type[BaseException], grpc.StatusCode] = {
    InvalidNonceError: grpc.StatusCode.INVALID_ARGUMENT,
    RateLimitError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    IssueError: grpc.StatusCode.UNAVAILABLE,
}


class VerifyServicer(verify_pb2_grpc.APIServicer):
    def __init__(self, source: EvidenceSource) -> None:
        self._source = source

    def GetAttestation(
        self, request: verify_pb2.GetAttestationRequest, context: grpc.ServicerContext
    ) -> verify_pb2.GetAttestationResponse:
        document = self._source.attest(request.nonce)
        _log.info("verify.attestation_issued", transport="grpc", size=len(document))
        return verify_pb2.GetAttestationResponse(attestation=document)


class VerificationGrpcServer(PlainGrpcServer):
    """``verify.API`` with health and metrics wired in; ``add_port`` then ``start``."""

    def __init__(
        self, source: EvidenceSource, metrics: ServiceMetrics, *, max_workers: int = 4
    ) -> None:
        super().__init__(SERVICE_NAME, metrics, STATUS_CODES, max_workers=max_workers)
        verify_pb2_grpc.add_APIServicer_to_server(VerifyServicer(source), self.grpc_server)


class _Handler(BaseHTTPRequestHandler):
    source: EvidenceSource
    metrics: ServiceMetrics
    server_version = "constellation-verificationservice"
    sys_version = ""

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path != "/":
            self._answer(HTTPStatus.NOT_FOUND, {"error": "not found; use GET /?nonce=<base64url>"})
            return
        try:
            nonce = nonce_from_query(url.query)
            document = self.source.attest(nonce)
        except InvalidNonceError as exc:
            self._answer(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            return
        except RateLimitError as exc:
            _log.warning("verify.rate_limited", transport="http", error=str(exc))
            self._answer(
                HTTPStatus.TOO_MANY_REQUESTS,
                {"error": str(exc)},
                retry_after=max(1, math.ceil(exc.retry_after)),
            )
            return
        except IssueError as exc:
            _log.error("verify.issue_failed", transport="http", error=str(exc))
            self._answer(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "evidence could not be issued"})
            return
        except Exception:  # a bug: log it here, never hand a traceback to the caller
            _log.exception("verify.http_failed")
            self._answer(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error"})
            return
        _log.info("verify.attestation_issued", transport="http", size=len(document))
        self._answer(HTTPStatus.OK, {"data": base64.b64encode(document).decode()})

    def _refuse_method(self) -> None:
        self._answer(HTTPStatus.METHOD_NOT_ALLOWED, {"error": "only GET is supported"})

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse_method

    def _answer(
        self, status: HTTPStatus, body: Mapping[str, str], *, retry_after: int | None = None
    ) -> None:
        payload = json.dumps(body).encode()
        self.metrics.count(HTTP_METHOD_LABEL, str(int(status)))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if status == HTTPStatus.METHOD_NOT_ALLOWED:
            self.send_header("Allow", "GET")
        if retry_after is not None:
            self.send_header("Retry-After", str(retry_after))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        _log.debug("verify.http_request", line=format % args)


class VerificationHttpServer:
    """``ThreadingHTTPServer`` in a daemon thread; ``close`` stops it within bounded time."""

    def __init__(
        self, source: EvidenceSource, metrics: ServiceMetrics, address: str, port: int
    ) -> None:
        handler = type("Handler", (_Handler,), {"source": source, "metrics": metrics})
        self.httpd = ThreadingHTTPServer((address, port), handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)
