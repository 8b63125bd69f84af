"""Attesters for the aTLS tests: the real qemu-vtpm pair over swtpm, and an ECDSA test double.

Every test of aTLS runs with each pair through the ``attester`` fixture. The double
(``SignedJsonIssuer`` / ``SignedJsonValidator``) does real cryptography: an ECDSA P-256
signature by a pinned key over a JSON document carrying PCR values and
``extra_data = SHA-256(user_data || nonce)``. It exists because it runs in milliseconds and lets
the tests forge evidence precisely (another key, other measurements); the qemu-vtpm pair is what
proves aTLS with real TPM quotes.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from constellation.attestation import atls
from constellation.attestation.errors import Failure, MalformedEvidenceError, ValidationError
from constellation.attestation.evidence import Issuer, Validator, VerifiedEvidence, extra_data
from constellation.attestation.measurements import Measurement, Measurements

DOUBLE_VARIANT = "test-ecdsa-double"
DOUBLE_PCRS = {4: b"\x04" * 32, 9: b"\x09" * 32, 11: b"\x0b" * 32, 15: b"\x00" * 32}


class SignedJsonIssuer:
    """Test double of an Issuer: signs (pcrs, extra_data) with a pinned ECDSA key."""

    variant = DOUBLE_VARIANT

    def __init__(self, key: ec.EllipticCurvePrivateKey, pcrs: Mapping[int, bytes]) -> None:
        self._key = key
        self._pcrs = dict(pcrs)

    def issue(self, user_data: bytes, nonce: bytes) -> bytes:
        body = json.dumps(
            {
                "user_data": user_data.hex(),
                "extra_data": extra_data(user_data, nonce).hex(),
                "pcrs": {str(i): v.hex() for i, v in self._pcrs.items()},
            },
            sort_keys=True,
        ).encode()
        signature = self._key.sign(body, ec.ECDSA(hashes.SHA256()))
        return json.dumps(
            {"body": base64.b64encode(body).decode(), "sig": base64.b64encode(signature).decode()}
        ).encode()


class SignedJsonValidator:
    """Test double of a Validator: pinned key, nonce binding, PCRs against measurements."""

    variant = DOUBLE_VARIANT

    def __init__(self, public_key: ec.EllipticCurvePublicKey, measurements: Measurements) -> None:
        self._public_key = public_key
        self._measurements = measurements

    def verify(self, document: bytes, nonce: bytes) -> VerifiedEvidence:
        try:
            outer = json.loads(document)
            body = base64.b64decode(outer["body"], validate=True)
            signature = base64.b64decode(outer["sig"], validate=True)
            inner = json.loads(body)
            user_data = bytes.fromhex(inner["user_data"])
            bound = bytes.fromhex(inner["extra_data"])
            pcrs = {int(i): bytes.fromhex(v) for i, v in inner["pcrs"].items()}
        except (ValueError, KeyError, TypeError) as exc:
            raise MalformedEvidenceError(f"test evidence unparsable: {exc}") from exc
        failures: list[Failure] = []
        try:
            self._public_key.verify(signature, body, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            failures.append(Failure("double.signature", "valid", "invalid"))
        expected_bound = extra_data(user_data, nonce)
        if bound != expected_bound:
            failures.append(Failure("double.extra_data", expected_bound.hex(), bound.hex()))
        enforced, warnings = self._measurements.compare(pcrs)
        failures.extend(enforced)
        if failures:
            raise ValidationError(failures, warnings)
        return VerifiedEvidence(self.variant, user_data, pcrs, tuple(warnings))

    def validate(self, document: bytes, nonce: bytes) -> bytes:
        return self.verify(document, nonce).user_data


def _measurements_of(pcrs: Mapping[int, bytes]) -> Measurements:
    return Measurements({i: Measurement(expected=v, warn_only=False) for i, v in pcrs.items()})


@dataclass
class Attester:
    """One attestation variant as the tests need it."""

    name: str
    issuer: Callable[[], Issuer]
    validator: Callable[[], Validator]
    wrong_validator: Callable[[], Validator]  # expects other measurements


def _double() -> Attester:
    key = ec.generate_private_key(ec.SECP256R1())
    wrong = dict(DOUBLE_PCRS)
    wrong[4] = hashlib.sha256(b"another image").digest()
    return Attester(
        name="ecdsa-double",
        issuer=lambda: SignedJsonIssuer(key, DOUBLE_PCRS),
        validator=lambda: SignedJsonValidator(key.public_key(), _measurements_of(DOUBLE_PCRS)),
        wrong_validator=lambda: SignedJsonValidator(key.public_key(), _measurements_of(wrong)),
    )


HAVE_VTPM = importlib.util.find_spec("constellation.attestation.vtpm") is not None


@pytest.fixture(params=["ecdsa-double", pytest.param("qemu-vtpm", marks=pytest.mark.swtpm)])
def attester(request: pytest.FixtureRequest) -> Attester:
    if request.param == "ecdsa-double":
        return _double()
    if not HAVE_VTPM:
        pytest.skip("constellation.attestation.vtpm is not available yet")
    factory = request.getfixturevalue("vtpm_attester_factory")
    result: Attester = factory()
    return result


@pytest.fixture
def double() -> Attester:
    return _double()


def current_pcrs(issuer: Issuer) -> dict[int, bytes]:
    """The PCR values a vTPM quotes right now (read from one issued document)."""
    document = json.loads(issuer.issue(b"probe", b"\x00" * 32))
    return {int(i): base64.b64decode(v) for i, v in document["pcrs"].items()}


@pytest.fixture
def vtpm_attester_factory(swtpm: Any) -> Callable[[], Attester]:
    """The real qemu-vtpm pair over a fresh swtpm; measurements are the TPM's current PCRs.

    The swtpm's AK is certified by the test platform CA, which the validators trust.
    """
    from constellation.attestation.eventlog import encode_event_log
    from constellation.attestation.identity import Role
    from constellation.attestation.testing.platform import node_issuer, node_validator

    def make() -> Attester:
        node = node_issuer(swtpm.tcti, "node-0", Role.WORKER, event_log=encode_event_log([]))
        pcrs = current_pcrs(node)
        wrong = dict(pcrs)
        wrong[4] = hashlib.sha256(b"another image").digest()
        return Attester(
            name="qemu-vtpm",
            issuer=lambda: node,
            validator=lambda: node_validator(_measurements_of(pcrs)),
            wrong_validator=lambda: node_validator(_measurements_of(wrong)),
        )

    return make


class Echo:
    """A protected application method: echoes, and reports the verified peer's user data."""

    METHOD = "/test.Echo/Echo"

    def __init__(self) -> None:
        self.calls = 0

    def handler(self) -> grpc.GenericRpcHandler:
        def echo(request: bytes, context: grpc.ServicerContext) -> bytes:
            self.calls += 1
            try:
                return atls.verified_peer().user_data
            except atls.ATLSError:
                return b"unattested:" + request

        return grpc.method_handlers_generic_handler(
            "test.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
        )


class MethodRecorder(grpc.ServerInterceptor):
    """Records every method a server was asked to run (to prove P1: only the handshake)."""

    def __init__(self) -> None:
        self.methods: list[str] = []

    def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        self.methods.append(handler_call_details.method)
        return continuation(handler_call_details)


@dataclass
class RunningServer:
    server: atls.AttestedServer
    target: str
    echo: Echo
    recorder: MethodRecorder


@pytest.fixture
def start_server() -> Iterator[Callable[..., RunningServer]]:
    """Starts aTLS servers with the Echo method on loopback; stops them all afterwards."""
    started: list[atls.AttestedServer] = []

    def start(issuer: Issuer, **kwargs: Any) -> RunningServer:
        recorder = MethodRecorder()
        server = atls.AttestedServer(issuer, interceptors=[recorder], **kwargs)
        echo = Echo()
        server.grpc_server.add_generic_rpc_handlers((echo.handler(),))
        port = server.add_port("127.0.0.1:0")
        server.start()
        started.append(server)
        return RunningServer(server, f"127.0.0.1:{port}", echo, recorder)

    yield start
    for server in started:
        server.stop(None).wait(5)


def call_echo(channel: grpc.Channel, payload: bytes = b"hi", timeout: float = 10) -> bytes:
    result: bytes = channel.unary_unary(Echo.METHOD)(payload, timeout=timeout)
    return result


@dataclass(frozen=True)
class Kit:
    """Test-side classes handed to test modules (which cannot import this conftest)."""

    SignedJsonIssuer: type[SignedJsonIssuer]
    SignedJsonValidator: type[SignedJsonValidator]
    measurements_of: Callable[[Mapping[int, bytes]], Measurements]
    call_echo: Callable[..., bytes]
    echo_method: str


@pytest.fixture
def kit() -> Kit:
    return Kit(SignedJsonIssuer, SignedJsonValidator, _measurements_of, call_echo, Echo.METHOD)
