"""Shutdown order: health NOT_SERVING, servers drained, closers run; signals request it."""

from __future__ import annotations

import os
import signal
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from constellation.attestation.service.health import Health
from constellation.attestation.service.lifecycle import Shutdown, run_until_shutdown


def test_health_then_drain_then_closers():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health = Health(["demo.API"])
    health.attach(server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest(service="demo.API")
    assert stub.Check(request, timeout=5).status == health_pb2.HealthCheckResponse.NOT_SERVING
    health.serving()
    assert stub.Check(request, timeout=5).status == health_pb2.HealthCheckResponse.SERVING

    closed: list[str] = []
    shutdown = Shutdown()
    result: list[int] = []
    runner = threading.Thread(
        target=lambda: result.append(
            run_until_shutdown(
                shutdown,
                servers=[server],
                health=health,
                closers=[lambda: closed.append("metrics")],
                grace=1,
            )
        )
    )
    runner.start()
    shutdown.request("test")
    runner.join(15)
    channel.close()
    assert result == [0]
    assert closed == ["metrics"]
    assert shutdown.reason == "test"


def test_sigterm_requests_shutdown():
    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    shutdown = Shutdown()
    try:
        shutdown.install_signal_handlers()
        os.kill(os.getpid(), signal.SIGTERM)
        assert shutdown.wait(5)
        assert shutdown.reason == "SIGTERM"
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
