from __future__ import annotations

import argparse

import pytest

from constellation.attestation.service.flags import listen_address, tcp_port


@pytest.mark.parametrize(("text", "port"), [("0", 0), ("9000", 9000), ("65535", 65535)])
def test_ports(text: str, port: int) -> None:
    assert tcp_port(text) == port


@pytest.mark.parametrize("text", ["65536", "-1", "", "90a", "9000 ", "0x10"])
def test_not_a_port_is_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="not a TCP port"):
        tcp_port(text)


def test_ipv6_literals_are_bracketed() -> None:
    assert listen_address("127.0.0.1", 9000) == "127.0.0.1:9000"
    assert listen_address("::1", 9000) == "[::1]:9000"
