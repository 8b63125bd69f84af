"""Service logs are JSON lines, also for records of stdlib loggers (grpcio)."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog

from constellation.attestation.service.logging import configure_logging


@pytest.fixture(autouse=True)
def _restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def test_structlog_events_are_json_lines():
    out = io.StringIO()
    configure_logging("info", out)
    structlog.get_logger("t").info("join.refused", node="n1", failures=["pcr[4]"])
    structlog.get_logger("t").debug("hidden")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["event"] == "join.refused"
    assert record["node"] == "n1"
    assert record["level"] == "info"
    assert record["timestamp"].endswith("Z")


def test_stdlib_records_are_json_too():
    out = io.StringIO()
    configure_logging("warning", out)
    logging.getLogger("grpc._server").warning("something %s", "odd")
    logging.getLogger("grpc._server").info("dropped")
    (line,) = out.getvalue().splitlines()
    record = json.loads(line)
    assert record["event"] == "something odd"
    assert record["logger"] == "grpc._server"


def test_unknown_level_refused():
    with pytest.raises(ValueError, match="log level"):
        configure_logging("verbose", io.StringIO())
