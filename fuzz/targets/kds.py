"""What the AMD Key Distribution Service answers: chain PEM, VCEK DER, status and Retry-After.

``KdsClient`` runs unchanged over an in-memory ``HttpTransport`` that answers with the fuzzed
bytes (no network, no cache directory, no sleeping). Mode 0: the rest is the body of a
``cert_chain`` answer; 1: of a ``vcek`` answer; 2: a status (u16) and a Retry-After value,
answered twice before the genuine chain.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from constellation.attestation.snp.kds import HttpResponse, KdsClient
from constellation.attestation.testing.fakeamd import NOW, FakeAmd

FAKE = FakeAmd("Milan")
GENUINE_CHAIN = FAKE.chain_pem()


@dataclass
class Answers:
    """An ``HttpTransport`` replaying scripted answers, then the last one forever."""

    answers: list[HttpResponse] = field(default_factory=list)

    def get(self, url: str, timeout: float) -> HttpResponse:
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def _client(*answers: HttpResponse) -> KdsClient:
    return KdsClient(
        transport=Answers(list(answers)),
        max_attempts=3,
        sleep=lambda _seconds: None,
        now=lambda: NOW,
    )


def _ok(body: bytes) -> HttpResponse:
    return HttpResponse(200, {}, body)


def seeds() -> Iterator[bytes]:
    yield b"\x00" + GENUINE_CHAIN
    yield b"\x01" + FAKE.vcek
    yield b"\x02" + struct.pack(">H", 429) + b"2"
    yield b"\x02" + struct.pack(">H", 503) + b"Thu, 01 Jan 2026 00:00:05 GMT"


def target(data: bytes) -> None:
    if not data:
        return
    mode, rest = data[0] % 3, data[1:]
    if mode == 0:
        _client(_ok(rest)).cert_chain("Milan")
    elif mode == 1:
        _client(_ok(rest)).vcek("Milan", FAKE.chip_id, FAKE.tcb)
    elif len(rest) >= 2:
        (status,) = struct.unpack(">H", rest[:2])
        headers: Mapping[str, str] = {"Retry-After": rest[2:].decode("latin-1")}
        answer = HttpResponse(status, headers, b"")
        _client(answer, answer, _ok(GENUINE_CHAIN)).cert_chain("Milan")
