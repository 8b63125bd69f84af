"""A rogue JoinService: what a joining (or rejoining) node demands before it sends anything.

The attacker runs its own mutual-aTLS server where a node looks for its JoinService (it can
redirect the node's traffic, or answer on an address the node was given) and hopes the node
hands it its attestation and disk UUID and takes back a disk key and a cluster mark of the
attacker's choosing. It controls: software keys with PCRs, event logs and AK certificates
copied from the cluster's public evidence; its own CA; and platform-certified machines
(``Attacker.insider``) that booted the genuine or a tampered image, whose vTPM it drives, so
it can mark their PCR 15 for this cluster or another.

The validator under attack is built exactly as a real node builds it: the worker's own
``bootstrapper.json``, ``_join_validator(config)`` (its join measurements, its platform roots,
a required event log), wrapped in ``JoinServiceValidator`` with no cluster ID (a first join)
or the cluster's ID (a rejoin). Every refusal is a ``ValidationError`` naming exactly the
checks the rogue fails, raised during the handshake: the rogue's servicer records that no
ticket request ever reached it (P1). The positive control is the real JoinService.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from constellation.attestation import atls
from constellation.attestation.errors import ValidationError
from constellation.attestation.evidence import Issuer
from constellation.attestation.identity import Role
from constellation.attestation.identity.ca import PlatformCA
from constellation.attestation.nodelock import NodeLock
from constellation.attestation.testing.softtpm import SoftwareTpmIssuer
from constellation.attestation.vtpm import VtpmIssuer
from constellation.bootstrapper.__main__ import _join_validator
from constellation.bootstrapper.config import load_config
from constellation.bootstrapper.joinservicetrust import JoinServiceValidator
from constellation.proto import join_pb2, join_pb2_grpc

from .conftest import (
    LOOPBACK,
    RPC_TIMEOUT_S,
    AcceptAnyServer,
    Attacker,
    Insider,
    RelayedJoinService,
    self_signed_ca,
)

pytestmark = [
    pytest.mark.tamper,
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.swtpm,
    pytest.mark.kube,
]

#: The node whose configuration the validator is built from.
NODE = "mini-worker-0"
#: The mini platform CA's own name, which an attacker's CA may copy: names prove nothing.
LOOKALIKE_CA_NAME = "constellation-mini platform CA"
ANOTHER_CLUSTER_ID = b"\x42" * 32


def node_validator(attacker: Attacker, *, rejoin: bool) -> JoinServiceValidator:
    """What the worker checks its JoinService with: its own config, as its ``__main__`` does."""
    config = load_config(attacker.workspace / "mini" / "nodes" / NODE / "bootstrapper.json")
    cluster_id = attacker.cluster_id() if rejoin else None
    return JoinServiceValidator(_join_validator(config), cluster_id=cluster_id)


@dataclass
class Tickets(join_pb2_grpc.APIServicer):
    """The rogue's ticket desk: records every request that got past the node's checks."""

    calls: list[str] = field(default_factory=list)

    def IssueJoinTicket(
        self, request: join_pb2.IssueJoinTicketRequest, context: grpc.ServicerContext
    ) -> join_pb2.IssueJoinTicketResponse:
        self.calls.append("IssueJoinTicket")
        return join_pb2.IssueJoinTicketResponse()

    def IssueRejoinTicket(
        self, request: join_pb2.IssueRejoinTicketRequest, context: grpc.ServicerContext
    ) -> join_pb2.IssueRejoinTicketResponse:
        self.calls.append("IssueRejoinTicket")
        return join_pb2.IssueRejoinTicketResponse()


@contextmanager
def rogue_joinservice(issuer: Issuer) -> Iterator[tuple[str, Tickets]]:
    """A mutual-aTLS JoinService attesting with ``issuer`` that accepts any client."""
    tickets = Tickets()
    server = atls.AttestedServer(issuer, client_validators=[AcceptAnyServer()])
    join_pb2_grpc.add_APIServicer_to_server(tickets, server.grpc_server)
    port = server.add_port(f"{LOOPBACK}:0")
    server.start()
    try:
        yield f"{LOOPBACK}:{port}", tickets
    finally:
        server.stop(None).wait(5)


def _node_issuer(attacker: Attacker) -> Issuer:
    """The joining node's own attestation: a platform-certified worker (not the real worker's
    vTPM, which this suite never opens)."""
    return attacker.insider(Role.WORKER).issuer()


def refused_checks(attacker: Attacker, issuer: Issuer, *, rejoin: bool = False) -> set[str]:
    """Connect to a rogue attesting with ``issuer`` as the node does; the failed checks."""
    validator = node_validator(attacker, rejoin=rejoin)
    with rogue_joinservice(issuer) as (target, tickets):
        with pytest.raises(ValidationError) as refused:
            atls.connect(
                target, [validator], issuer=_node_issuer(attacker), timeout=RPC_TIMEOUT_S
            ).close()
        assert tickets.calls == [], "the node sent a request to a JoinService it refused"
    return {failure.check for failure in refused.value.failures}


def _marked(insider: Insider, cluster_id: bytes) -> Insider:
    """The insider's PCR 15 carries the node-lock mark of ``cluster_id``."""
    assert NodeLock(insider.tpm.tcti).try_lock(cluster_id)
    return insider


def _control_plane(attacker: Attacker, *, mark: bytes | None = None, **insider: Any) -> Insider:
    """A certified control-plane machine (genuine image unless told), marked for ``mark``."""
    machine = attacker.insider(Role.CONTROL_PLANE, **insider)
    return machine if mark is None else _marked(machine, mark)


def _without_log(insider: Insider) -> VtpmIssuer:
    return VtpmIssuer(insider.tpm.tcti, event_log=None, ak_certificate=insider.ak_certificate)


def _lookalike_certified(forger: SoftwareTpmIssuer) -> SoftwareTpmIssuer:
    """The forger's software key, certified as the control plane by the attacker's own CA."""
    key, certificate = self_signed_ca(LOOKALIKE_CA_NAME)
    rogue_platform = PlatformCA(certificate, key)
    forger.ak_certificate = rogue_platform.issue_ak_certificate(
        forger.ak_spki_der, "mini-cp-0", Role.CONTROL_PLANE
    )
    return forger


class _Replaying:
    """Genuine evidence, quoted over a nonce of the rogue's choosing instead of the node's."""

    def __init__(self, inner: Issuer) -> None:
        self._inner = inner
        self.variant = inner.variant

    def issue(self, user_data: bytes, nonce: bytes) -> bytes:
        return self._inner.issue(user_data, bytes(len(nonce)))


# Each attack: (the rogue's issuer, a rejoin?, exactly the checks the node names).
ATTACKS: dict[str, tuple[Callable[[Attacker], Issuer], bool, set[str]]] = {
    # -- a genuine image that never joined a cluster, or joined another ---------------------
    "genuine-control-plane-pcr15-zero": (
        lambda a: _control_plane(a).issuer(),
        False,
        {"pcr[15]"},
    ),
    "genuine-control-plane-pcr15-zero-on-rejoin": (
        lambda a: _control_plane(a).issuer(),
        True,
        {"pcr[15]"},
    ),
    "rejoin-against-a-node-of-another-cluster": (
        lambda a: _control_plane(a, mark=ANOTHER_CLUSTER_ID).issuer(),
        True,
        {"pcr[15]"},
    ),
    # -- a machine of the wrong kind --------------------------------------------------------
    "certified-worker-marked-for-the-cluster": (
        lambda a: _marked(a.insider(Role.WORKER), a.cluster_id()).issuer(),
        False,
        {"identity.role"},
    ),
    "certified-worker-marked-for-the-cluster-on-rejoin": (
        lambda a: _marked(a.insider(Role.WORKER), a.cluster_id()).issuer(),
        True,
        {"identity.role"},
    ),
    "tampered-image-marked-for-the-cluster": (
        lambda a: _control_plane(a, mark=a.cluster_id(), image=a.tampered_image()).issuer(),
        False,
        {"pcr[4]", "pcr[9]"},
    ),
    # -- the evidence itself ----------------------------------------------------------------
    "marked-control-plane-without-an-event-log": (
        lambda a: _without_log(_control_plane(a, mark=a.cluster_id())),
        False,
        {"eventlog.present"},
    ),
    "marked-control-plane-quoting-another-nonce": (
        lambda a: _Replaying(_control_plane(a, mark=a.cluster_id()).issuer()),
        True,
        {"quote.qualifying_data"},
    ),
    "real-joinservice-evidence-relayed": (
        lambda a: RelayedJoinService(a),
        True,
        {"atls.user_data"},
    ),
    # -- no root for the AK -----------------------------------------------------------------
    "software-key-with-the-control-planes-copied-pcrs": (
        lambda a: SoftwareTpmIssuer(*a.copied("mini-cp-0")[:2]),
        True,
        {"ak.certificate"},
    ),
    "software-key-with-the-control-planes-stolen-certificate": (
        lambda a: SoftwareTpmIssuer(*a.copied("mini-cp-0")),
        True,
        {"ak.certificate.key"},
    ),
    "software-key-certified-by-a-lookalike-ca": (
        lambda a: _lookalike_certified(SoftwareTpmIssuer(*a.copied("mini-cp-0")[:2])),
        True,
        {"ak.certificate.chain"},
    ),
    "marked-control-plane-certified-by-another-platform": (
        lambda a: _control_plane(
            a, mark=a.cluster_id(), ca=PlatformCA.generate(LOOKALIKE_CA_NAME)
        ).issuer(),
        False,
        {"ak.certificate.chain"},
    ),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_a_rogue_joinservice_is_refused(attacker: Attacker, attack: str) -> None:
    make, rejoin, checks = ATTACKS[attack]
    assert refused_checks(attacker, make(attacker), rejoin=rejoin) == checks


@pytest.mark.parametrize("rejoin", [False, True], ids=["join", "rejoin"])
def test_control_the_real_joinservice_passes_the_nodes_validator(
    attacker: Attacker, rejoin: bool
) -> None:
    """The same validator accepts the cluster's own JoinService: the checks refuse rogues, not
    the genuine service (on a rejoin, with the cluster's ID)."""
    validator = node_validator(attacker, rejoin=rejoin)
    with atls.connect(
        attacker.joinservice, [validator], issuer=_node_issuer(attacker), timeout=RPC_TIMEOUT_S
    ) as channel:
        assert channel.server.pcrs[15] != bytes(32)


def test_control_an_honest_rogue_server_is_reachable(attacker: Attacker) -> None:
    """The rogue server itself works: a client that accepts anything gets through to it."""
    with rogue_joinservice(_control_plane(attacker).issuer()) as (target, tickets):
        with atls.connect(
            target, [AcceptAnyServer()], issuer=_node_issuer(attacker), timeout=RPC_TIMEOUT_S
        ) as channel:
            join_pb2_grpc.APIStub(channel.channel).IssueRejoinTicket(
                join_pb2.IssueRejoinTicketRequest(disk_uuid=str(os.getpid())),
                timeout=RPC_TIMEOUT_S,
            )
        assert tickets.calls == ["IssueRejoinTicket"]
