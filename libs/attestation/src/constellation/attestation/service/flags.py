"""Command-line pieces every service command parses the same way."""

from __future__ import annotations

import argparse

MAX_PORT = 65535


def tcp_port(text: str) -> int:
    """argparse type for a TCP port; 0 lets the kernel pick one (tests, mini mode)."""
    if not text.isdigit() or int(text) > MAX_PORT:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text!r}")
    return int(text)


def listen_address(host: str, port: int) -> str:
    """``host:port`` for a gRPC listener, with IPv6 literals bracketed."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
