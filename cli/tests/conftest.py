"""Running the real CLI entry point in-process, with its exit code and both streams; and the
configuration ``mini up`` writes, for tests that build their nodes themselves."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from constellation.attestation.identity.ca import PlatformCA
from constellation.attestation.measurements import Measurements
from constellation.attestation.testing.platform import cached_platform_ca
from constellation.cli.config import Config, Provider, default_config
from constellation.cli.root import run


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str


Invoke = Callable[..., Result]
MiniConfig = Callable[..., Config]


@pytest.fixture
def invoke(capsys: pytest.CaptureFixture[str]) -> Invoke:
    """``invoke(workspace, *args)``: run ``constellation -C workspace *args``."""

    def call(workspace: Path, *args: str) -> Result:
        capsys.readouterr()
        code = run(["-C", str(workspace), *args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return call


def rooted_config(measurements: Measurements, ca: PlatformCA | None = None) -> Config:
    """A mini configuration with ``measurements`` whose ``attestation.platformRoots`` is
    ``ca`` (default: the test platform CA that ``attestation.testing.platform`` certifies
    nodes with), as ``mini up`` writes it with the workspace's platform CA."""
    config = default_config(Provider.MINI).with_measurements(measurements)
    roots = (ca or cached_platform_ca()).cert_pem.decode()
    attestation = config.attestation.model_copy(update={"platformRoots": roots})
    return Config.model_validate(
        config.model_copy(update={"attestation": attestation}).model_dump()
    )


@pytest.fixture
def mini_config() -> MiniConfig:
    """``mini_config(measurements, ca=None)``: see :func:`rooted_config`."""
    return rooted_config


@pytest.fixture
def http_answering() -> Callable[
    [Callable[[str], bytes | tuple[int, bytes]]], AbstractContextManager[int]
]:
    """``http_answering(answer)``: a loopback HTTP server (a context manager yielding its port)
    answering every ``GET`` with ``answer(path)``: a body (status 200), or (status, body)."""
    return _http_answering


@contextmanager
def _http_answering(answer: Callable[[str], bytes | tuple[int, bytes]]) -> Iterator[int]:
    """A loopback HTTP server answering every ``GET`` with ``answer(path)`` (a body, or a
    status and a body); yields its port."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            answered = answer(self.path)
            status, body = answered if isinstance(answered, tuple) else (200, answered)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
