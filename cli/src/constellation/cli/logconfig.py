"""Where library log lines go while the CLI runs: stderr, readable, never into stdout.

Libraries the CLI calls (attestation, bootstrapper pieces) log with structlog or stdlib
logging. structlog's default prints to *stdout*, which would corrupt ``-o json`` data, so the
root command routes both to stderr before any command runs: warnings and errors normally,
everything with ``--debug``. Services use JSON lines (``constellation.attestation.service``);
the CLI renders for people, and stays free of the services' gRPC/metrics imports.
"""

from __future__ import annotations

import logging
from typing import TextIO

import structlog


def configure_cli_logging(*, debug: bool, stream: TextIO) -> None:
    level = logging.DEBUG if debug else logging.WARNING
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="%H:%M:%S", utc=False),
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
