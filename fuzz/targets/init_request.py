"""``init.API/Init`` request bytes: decoded as the server decodes them, then
``initserver.validate_request`` (every field, including ``installer.parse_components``) and the
classification of each component's source the installer does before it fetches anything.

Random protobuf bytes seldom decode into a request with components, so the first input byte
chooses: ``0`` (or anything not in ``FIELDS``) takes the rest as the serialized request; any
other value puts the rest (as UTF-8, invalid sequences replaced) into one field of a valid
request, so the fuzzer works on URLs, paths, hashes, names and CIDRs directly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from constellation.attestation.service.handlers import decode_request
from constellation.bootstrapper.initserver import validate_request
from constellation.bootstrapper.installer import parse_components, source_kind
from constellation.proto import components_pb2, init_pb2

METHOD = "/init.API/Init"


def _request() -> init_pb2.InitRequest:
    return init_pb2.InitRequest(
        master_secret=b"m" * 32,
        master_salt=b"s" * 32,
        measurement_salt=bytes(range(32)),
        init_secret=b"i" * 32,
        kubernetes_version="v1.31.1",
        kubernetes_components=[
            components_pb2.Component(
                name="kubelet",
                url="file:///opt/constellation/components/kubelet",
                hash="sha256:" + "ab" * 32,
                install_path="/usr/local/bin/kubelet",
            ),
            components_pb2.Component(
                name="cni",
                url="https://example.invalid/cni.tgz",
                hash="sha256:" + "cd" * 32,
                install_path="/opt/cni/bin",
                extract=True,
            ),
        ],
        cluster_name="test",
        apiserver_cert_sans=["10.0.0.1", "api.example.com", "*.example.com"],
        service_cidr="10.96.0.0/12",
    )


def _component(attribute: str) -> Callable[[init_pb2.InitRequest, str], None]:
    def put(request: init_pb2.InitRequest, text: str) -> None:
        setattr(request.kubernetes_components[1], attribute, text)

    return put


def _san(request: init_pb2.InitRequest, text: str) -> None:
    request.apiserver_cert_sans.append(text)


FIELDS: dict[int, Callable[[init_pb2.InitRequest, str], None]] = {
    1: _component("url"),
    2: _component("install_path"),
    3: _component("hash"),
    4: _component("name"),
    5: lambda request, text: setattr(request, "kubernetes_version", text),
    6: _san,
    7: lambda request, text: setattr(request, "service_cidr", text),
    8: lambda request, text: setattr(request, "cluster_name", text),
}


def seeds() -> Iterator[bytes]:
    yield b"\x00" + _request().SerializeToString()
    yield b"\x01https://example.invalid/cni.tgz"
    yield b"\x01file:///opt/constellation/components/cni.tgz"
    yield b"\x02/opt/cni/bin"
    yield b"\x03sha256:" + b"cd" * 32
    yield b"\x07fd00::/108"


def target(data: bytes) -> None:
    if not data:
        return
    put = FIELDS.get(data[0])
    if put is None:
        request = decode_request(init_pb2.InitRequest.FromString, data[1:], METHOD)
    else:
        request = _request()
        put(request, data[1:].decode("utf-8", "replace"))
    validate_request(request)
    for spec in parse_components(request.kubernetes_components):
        source_kind(spec, ())
