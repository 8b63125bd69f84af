"""Init, the one call that makes a node the first control plane, attacked from both ends.

The node is real and uninitialized (``constellation.bootstrapper.testing.make_node``: its own
swtpm, certified by the test platform, a LUKS2 state disk on a file, its init server on
loopback aTLS). Two attackers:

- **a caller without the init secret** who reaches the node's init port before the admin
  does. It can send any ``InitRequest``: guessed secrets, the secret's bcrypt hash (which the
  instance metadata publishes), components whose sources point at files the node must never
  read (``/etc/shadow``, ``..`` paths, links out of the source directories, other schemes)
  and components whose content does not match their pinned hash. A refusal must tell it
  nothing: no progress messages, no file's hash, no node log; and leave the node untouched
  (lock free, PCR 15 zero, disk on its initial key, nothing installed). The sources checks
  sit behind the secret check, so those attacks use the right secret: they are what a
  compromised or careless admin tool could send, and the node still reads nothing outside
  its sources (a FIFO there proves it: opening it for reading would release its writer).
- **a machine posing as the node** the admin is about to initialize: ``apply``'s
  ``init_validator`` must refuse it before the master secret leaves the CLI - a certified
  worker, a software key with copied PCRs (with or without the node's stolen AK
  certificate), a machine of another platform, a tampered boot, no event log, a node
  already marked for a cluster. The rogue's servicer records that no Init reached it.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from constellation.attestation import atls
from constellation.attestation.errors import ValidationError
from constellation.attestation.evidence import VERIFY_USER_DATA_LABEL, Issuer, Validator
from constellation.attestation.identity import Role
from constellation.attestation.identity.ca import PlatformCA
from constellation.attestation.measurements import Measurement, Measurements
from constellation.attestation.swtpm import Swtpm
from constellation.attestation.testing.platform import BOOT_CHAIN, platform_roots
from constellation.attestation.testing.softtpm import SoftwareTpmIssuer, public_facts
from constellation.attestation.vtpm import VtpmIssuer, open_tpm, read_pcrs
from constellation.bootstrapper.initserver import InitServer
from constellation.bootstrapper.testing import (
    INIT_SECRET,
    NodeParts,
    call_init,
    component_for,
    init_request,
    make_node,
)
from constellation.cli.commands.apply import init_validator
from constellation.proto import components_pb2, init_pb2, init_pb2_grpc

pytestmark = [pytest.mark.tamper, pytest.mark.e2e, pytest.mark.slow, pytest.mark.swtpm]

DENIED = grpc.StatusCode.PERMISSION_DENIED
INVALID = grpc.StatusCode.INVALID_ARGUMENT
VARIANT = "qemu-vtpm"
IMAGE_PCRS = range(15)
TAMPERED_BOOT = ((4, b"kernel"), (9, b"initrd with a backdoor"), (11, b"uki"))


# -- the node and its init server -----------------------------------------------------------


class Recorded(init_pb2_grpc.APIServicer):
    """The node's InitServer, recording every Init that reached it."""

    def __init__(self, inner: InitServer) -> None:
        self.inner = inner
        self.calls = 0

    def Init(
        self, request: init_pb2.InitRequest, context: grpc.ServicerContext
    ) -> Iterator[init_pb2.InitResponse]:
        self.calls += 1
        return self.inner.Init(request, context)


def _not_called(parameters: object) -> bytes:
    raise AssertionError("no attack may get as far as starting the control plane")


@contextmanager
def serving(node: NodeParts, issuer: Issuer | None = None) -> Iterator[tuple[str, Recorded]]:
    """The node's init server on loopback aTLS, attesting with ``issuer`` (default: the
    node's own certified vTPM, as the bootstrapper wires it)."""
    servicer = Recorded(
        InitServer(
            metadata=node.metadata,
            node_lock=node.lock,
            state_disk=node.disk,
            initial_disk_key=node.initial_key,
            installer=node.installer,
            control_plane=_not_called,
            node_state_path=node.node_state_path,
        )
    )
    server = atls.AttestedServer(issuer or node.issuer())
    init_pb2_grpc.add_APIServicer_to_server(servicer, server.grpc_server)
    port = server.add_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        server.stop(None).wait(5)


def _pcrs(tcti: str) -> dict[int, bytes]:
    with open_tpm(tcti) as esapi:
        _, values = read_pcrs(esapi, tuple(range(16)))
    return values


def assert_untouched(node: NodeParts) -> None:
    """The node is exactly as before: lock free, disk on its initial key, nothing installed."""
    assert _pcrs(node.tpm.tcti)[15] == bytes(32)
    assert not node.lock.is_initialized()
    node.disk.check_key(node.initial_key)
    assert not node.node_state_path.exists()
    root = node.installer.install_root
    assert not root.exists() or list(root.iterdir()) == []


@pytest.fixture
def sources(tmp_path: Path) -> Path:
    """The directory the node's installer reads local artifacts from (``make_node`` puts the
    node's own directory in it; the test's other files lie outside)."""
    return tmp_path / "sources"


def _node(sources: Path, swtpm: Swtpm, **kwargs: object) -> NodeParts:
    kwargs.setdefault("boot", BOOT_CHAIN)
    return make_node(sources / "node", swtpm, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def node(sources: Path, swtpm: Swtpm) -> NodeParts:
    return _node(sources, swtpm)


@pytest.fixture
def kubeadm(sources: Path) -> components_pb2.Component:
    tool = sources / "artifacts" / "kubeadm"
    tool.parent.mkdir(parents=True)
    tool.write_bytes(b"#!/bin/sh\nexit 0\n")
    return component_for("kubeadm", tool, "/usr/bin/kubeadm")


def admin_validator() -> Validator:
    """``apply``'s validator as the admin builds it: the genuine image's measurements (what
    the firmware measures for ``BOOT_CHAIN``) with PCR 15 zero, the platform's roots and a
    control-plane identity; whatever the machine at the other end holds."""
    expected = dict.fromkeys(IMAGE_PCRS, bytes(32))
    for pcr, part in BOOT_CHAIN:
        expected[pcr] = hashlib.sha256(expected[pcr] + hashlib.sha256(part).digest()).digest()
    image = Measurements({i: Measurement(value) for i, value in expected.items()})
    return init_validator(VARIANT, image, platform_roots())


def init_refusal(
    node: NodeParts, request: init_pb2.InitRequest
) -> tuple[grpc.StatusCode, str, list[init_pb2.InitResponse]]:
    """Send ``request`` to the genuine node as the CLI does; its status, details, messages."""
    with serving(node) as (target, _), pytest.raises(grpc.RpcError) as refused:
        call_init(target, request, validator=admin_validator())
    error = refused.value
    assert isinstance(error, grpc.Call)
    received: list[init_pb2.InitResponse] = error.received
    return error.code(), error.details() or "", received


# -- without the init secret ----------------------------------------------------------------


def _metadata_hash(node: NodeParts) -> bytes:
    """The secret's bcrypt hash, as anyone reading the instance metadata sees it."""
    text: str = json.loads((node.directory / "metadata.json").read_text())["initSecretHash"]
    assert text.startswith("$2b$")
    return text.encode()


SECRETS: dict[str, Callable[[NodeParts], bytes]] = {
    "a-guess": lambda n: b"wrong secret, wrong secret......",
    "empty": lambda n: b"",
    "the-right-one-truncated": lambda n: INIT_SECRET[:-1],
    "the-right-one-with-a-nul-and-a-suffix": lambda n: INIT_SECRET + b"\0suffix",
    "the-right-one-padded-past-bcrypts-72-bytes": lambda n: INIT_SECRET.ljust(80, b"x"),
    "its-published-bcrypt-hash": _metadata_hash,
}


@pytest.mark.parametrize("secret", sorted(SECRETS))
def test_init_without_the_secret_is_denied_and_says_nothing(
    node: NodeParts, kubeadm: components_pb2.Component, secret: str
) -> None:
    request = init_request([kubeadm], secret=SECRETS[secret](node))
    code, details, received = init_refusal(node, request)
    assert (code, details) == (DENIED, "the init secret does not match")
    assert received == []  # no progress, no node log: nothing at all
    assert_untouched(node)


# -- sources outside the documented ones ------------------------------------------------------


class Tripwire:
    """A FIFO outside the sources whose writer is released the moment anyone opens it for
    reading (even non-blocking, even to close it at once): proof that it was never opened."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(path)
        self.path = path
        self.opened = threading.Event()
        self._writer = threading.Thread(target=self._wait_for_a_reader, daemon=True)
        self._writer.start()

    def _wait_for_a_reader(self) -> None:
        fd = os.open(self.path, os.O_WRONLY)  # blocks until a reader opens the FIFO
        self.opened.set()
        os.close(fd)

    def close(self) -> None:
        """Release the writer (by reading ourselves) so no thread outlives the test."""
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        self._writer.join(5)
        os.close(fd)


def _component(url: str, name: str = "kubectl") -> components_pb2.Component:
    return components_pb2.Component(
        name=name, url=url, hash="sha256:" + "ab" * 32, install_path=f"/usr/bin/{name}"
    )


# Each: (the component's URL given the tripwire and the sources, the typed refusal's text).
SOURCES: dict[str, tuple[Callable[[Path, Path], str], str]] = {
    "file-url-of-etc-shadow": (
        lambda wire, src: "file:///etc/shadow",
        "local source /etc/shadow is outside the component source directories",
    ),
    "absolute-path-of-etc-shadow": (
        lambda wire, src: "/etc/shadow",
        "local source /etc/shadow is outside the component source directories",
    ),
    "file-url-outside-the-sources": (
        lambda wire, src: wire.as_uri(),
        "is outside the component source directories",
    ),
    "dot-dot-out-of-the-sources": (
        lambda wire, src: f"file://{src}/artifacts/../../outside/{wire.name}",
        "must be an absolute path without '.' or '..' inside the component source directories",
    ),
    "percent-encoded-dot-dot": (
        lambda wire, src: f"file://{src}/artifacts/%2e%2e/%2e%2e/outside/{wire.name}",
        "must be an absolute path without '.' or '..' inside the component source directories",
    ),
    "symbolic-link-out-of-the-sources": (
        lambda wire, src: _link(src / "artifacts" / "kubectl", wire).as_uri(),
        "leads through a symbolic link out of the component source directories",
    ),
    "file-url-naming-a-remote-host": (
        lambda wire, src: f"file://attacker.example{wire}",
        "file:// URL must not name a remote host",
    ),
    "file-url-with-a-query": (
        lambda wire, src: f"file://{src}/artifacts/kubeadm?{wire}",
        "file:// URL must not carry a query, fragment or parameters",
    ),
    "relative-path": (
        lambda wire, src: "../outside/" + wire.name,
        "source must be file://, http(s):// or an absolute path, got scheme ''",
    ),
    "ftp-url": (
        lambda wire, src: f"ftp://127.0.0.1{wire}",
        "source must be file://, http(s):// or an absolute path, got scheme 'ftp'",
    ),
    "data-url": (
        lambda wire, src: "data:application/octet-stream;base64,IyEvYmluL3NoCg==",
        "source must be file://, http(s):// or an absolute path, got scheme 'data'",
    ),
}


def _link(link: Path, target: Path) -> Path:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)
    return link


@pytest.mark.parametrize("attack", sorted(SOURCES))
def test_a_source_outside_the_documented_ones_is_refused_unread(
    node: NodeParts,
    kubeadm: components_pb2.Component,
    sources: Path,
    tmp_path: Path,
    attack: str,
) -> None:
    url, message = SOURCES[attack]
    wire = Tripwire(tmp_path / "outside" / "secret")
    try:
        # The refused source comes second: every source is checked before any is read.
        request = init_request([kubeadm, _component(url(wire.path, sources))])
        code, details, received = init_refusal(node, request)
        assert not wire.opened.is_set(), "the node opened a file outside its sources"
    finally:
        wire.close()
    assert code == INVALID
    assert details.startswith("component 'kubectl': ")
    assert message in details
    # Refused while staging, before anything was read: the lock was never in reach.
    assert [r.progress.phase for r in received] == ["validate", "derive", "components.verify"]
    assert_untouched(node)


def test_a_fifo_inside_the_sources_cannot_stall_init(
    node: NodeParts, kubeadm: components_pb2.Component, sources: Path
) -> None:
    fifo = sources / "artifacts" / "kubectl"
    os.mkfifo(fifo)
    code, details, _ = init_refusal(node, init_request([kubeadm, _component(fifo.as_uri())]))
    assert code == grpc.StatusCode.UNAVAILABLE
    assert details == f"component 'kubectl': {fifo} is not a regular file"
    assert_untouched(node)


def test_a_component_whose_hash_does_not_match_reveals_no_hash(
    node: NodeParts, kubeadm: components_pb2.Component, sources: Path
) -> None:
    """The caller guesses a file's content by its hash: the refusal names only the pinned
    value, never what the node read."""
    secret_file = sources / "artifacts" / "kubectl"
    secret_file.write_bytes(b"content the caller wants to learn\n")
    actual = hashlib.sha256(secret_file.read_bytes()).hexdigest()
    guess = _component(secret_file.as_uri())
    code, details, received = init_refusal(node, init_request([kubeadm, guess]))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert details == (
        f"component 'kubectl': content does not match the pinned SHA-256 {guess.hash}; "
        "refusing to install anything (check the components list the CLI sent and the "
        "artifact's source)"
    )
    everything = details + "".join(str(r) for r in received)
    assert actual not in everything
    assert "node-lock" not in [r.progress.phase for r in received]
    assert_untouched(node)


# -- a machine posing as the node the admin initializes -------------------------------------


def _public(node: NodeParts) -> tuple[dict[int, bytes], bytes, bytes]:
    """The node's public evidence (what its VerificationService gives anyone)."""
    pcrs, log, certificate = public_facts(node.issuer().issue(VERIFY_USER_DATA_LABEL, bytes(32)))
    assert log is not None
    assert certificate is not None
    return pcrs, log, certificate


Poser = tuple[NodeParts, Issuer | None]


def _certified_worker(sources: Path, tpm: Swtpm) -> Poser:
    return _node(sources, tpm, role=Role.WORKER), None


def _software_key(sources: Path, tpm: Swtpm) -> Poser:
    node = _node(sources, tpm)
    pcrs, log, _ = _public(node)
    return node, SoftwareTpmIssuer(pcrs, log)


def _software_key_with_stolen_certificate(sources: Path, tpm: Swtpm) -> Poser:
    node = _node(sources, tpm)
    return node, SoftwareTpmIssuer(*_public(node))


def _another_platform(sources: Path, tpm: Swtpm) -> Poser:
    # The look-alike copies the test platform's name: names prove nothing.
    return _node(sources, tpm, ca=PlatformCA.generate("constellation test platform CA")), None


def _tampered_boot(sources: Path, tpm: Swtpm) -> Poser:
    return _node(sources, tpm, boot=TAMPERED_BOOT), None


def _without_event_log(sources: Path, tpm: Swtpm) -> Poser:
    node = _node(sources, tpm)
    return node, VtpmIssuer(tpm.tcti, event_log=None, ak_certificate=node.ak_certificate)


def _already_marked(sources: Path, tpm: Swtpm) -> Poser:
    node = _node(sources, tpm)
    assert node.lock.try_lock(b"another cluster".ljust(32, b"\0"))
    return node, None


# Each poser: (the machine and the issuer its init server attests with, exactly the checks
# ``init_validator`` names). ``None``: the machine's own certified vTPM.
POSERS: dict[str, tuple[Callable[[Path, Swtpm], Poser], set[str]]] = {
    "certified-worker": (_certified_worker, {"identity.role"}),
    "software-key-with-copied-pcrs-and-log": (_software_key, {"ak.certificate"}),
    "software-key-with-the-nodes-stolen-certificate": (
        _software_key_with_stolen_certificate,
        {"ak.certificate.key"},
    ),
    "certified-by-another-platform": (_another_platform, {"ak.certificate.chain"}),
    "tampered-boot": (_tampered_boot, {"pcr[9]"}),
    "genuine-node-without-its-event-log": (_without_event_log, {"eventlog.present"}),
    "node-already-marked-for-a-cluster": (_already_marked, {"pcr[15]"}),
}


@pytest.mark.parametrize("poser", sorted(POSERS))
def test_init_validator_refuses_a_poser_before_init_is_sent(
    sources: Path, swtpm: Swtpm, kubeadm: components_pb2.Component, poser: str
) -> None:
    make, checks = POSERS[poser]
    machine, issuer = make(sources, swtpm)
    with serving(machine, issuer) as (target, servicer):
        with pytest.raises(ValidationError) as refused:
            call_init(target, init_request([kubeadm]), validator=admin_validator())
        assert servicer.calls == 0, "Init (and the master secret) reached the poser"
    assert {failure.check for failure in refused.value.failures} == checks


def test_control_the_genuine_node_passes_init_validator(node: NodeParts) -> None:
    """The same validator accepts the genuine control-plane node: the checks refuse posers."""
    with serving(node) as (target, servicer):
        with atls.connect(target, [admin_validator()], timeout=30) as channel:
            assert channel.server.identity is not None
        assert servicer.calls == 0
    assert_untouched(node)
