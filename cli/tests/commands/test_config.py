"""``config fetch-measurements`` end to end: real signatures, real files, a loopback HTTP server."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from constellation.attestation.measurements import (
    ImageMeasurements,
    Measurement,
    Measurements,
    VariantMeasurements,
    sign_measurements,
)
from constellation.cli.config import DEFAULT_MINI_IMAGE

PCR4 = bytes.fromhex("11" * 32)
PCR9 = bytes.fromhex("22" * 32)


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _published(version: str = DEFAULT_MINI_IMAGE, variant: str = "qemu-vtpm") -> bytes:
    return ImageMeasurements(
        version=version,
        ref="main",
        stream="stable",
        entries=(
            VariantMeasurements(
                "QEMU",
                variant,
                Measurements({4: Measurement(PCR4), 9: Measurement(PCR9, warn_only=True)}),
            ),
        ),
    ).to_json()


class Published:
    """A workspace with a generated config, a signing key and a signed measurements file."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.public_key = root / "measurements.pub"
        self.public_key.write_bytes(_pem(self.key))
        self.data = root / "measurements.json"
        self.signature = root / "measurements.json.sig"
        self.publish(_published())

    def publish(self, data: bytes, *, key: ec.EllipticCurvePrivateKey | None = None) -> None:
        self.data.write_bytes(data)
        self.signature.write_bytes(sign_measurements(data, key or self.key))

    @property
    def config(self) -> Path:
        return self.root / "constellation-conf.yaml"


@pytest.fixture
def published(tmp_path: Path, invoke: Any) -> Published:
    assert invoke(tmp_path, "config", "generate").code == 0
    return Published(tmp_path)


def _fetch(invoke: Any, published: Published, *extra: str) -> Any:
    return invoke(
        published.root,
        "config",
        "fetch-measurements",
        "--path",
        str(published.data),
        "--public-key",
        str(published.public_key),
        *extra,
    )


def test_verified_measurements_are_merged(invoke: Any, published: Published) -> None:
    result = _fetch(invoke, published, "-o", "json")
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["image"] == DEFAULT_MINI_IMAGE
    assert summary["measurements"]["4"] == {"expected": PCR4.hex(), "warnOnly": False}
    text = published.config.read_text()
    assert PCR4.hex() in text
    assert "# Remote attestation" in text  # comments survive the merge
    assert "fetching measurements" in result.stderr


def test_text_output_lists_pcrs(invoke: Any, published: Published) -> None:
    result = _fetch(invoke, published)
    assert result.code == 0
    assert f"PCR  4: {PCR4.hex()}" in result.stdout
    assert "(warn only)" in result.stdout


def test_public_key_from_config_file_path(invoke: Any, published: Published) -> None:
    text = published.config.read_text().replace(
        "  # measurementServicePublicKeyPath: measurements.pub",
        '  measurementServicePublicKeyPath: "measurements.pub"',
    )
    published.config.write_text(text)
    result = invoke(
        published.root, "config", "fetch-measurements", "--url", published.data.as_uri()
    )
    assert result.code == 0, result.stderr


def _assert_refused(result: Any, published: Published, before: bytes, reason: str) -> None:
    assert result.code == 1
    assert reason in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert published.config.read_bytes() == before


def test_bad_signature_leaves_config_byte_identical(invoke: Any, published: Published) -> None:
    before = published.config.read_bytes()
    tampered = published.data.read_bytes().replace(b"1111", b"1112", 1)
    published.data.write_bytes(tampered)  # the signature is over the original bytes
    _assert_refused(_fetch(invoke, published), published, before, "does not verify")


def test_signature_by_other_key_leaves_config_byte_identical(
    invoke: Any, published: Published
) -> None:
    before = published.config.read_bytes()
    published.publish(_published(), key=ec.generate_private_key(ec.SECP256R1()))
    _assert_refused(_fetch(invoke, published), published, before, "does not verify")


def test_garbage_signature_leaves_config_byte_identical(invoke: Any, published: Published) -> None:
    before = published.config.read_bytes()
    published.signature.write_bytes(b"%%% not base64 %%%")
    _assert_refused(_fetch(invoke, published), published, before, "not base64")


def test_wrong_variant_leaves_config_byte_identical(invoke: Any, published: Published) -> None:
    before = published.config.read_bytes()
    published.publish(_published(variant="azure-sev-snp"))
    _assert_refused(
        _fetch(invoke, published), published, before, "no measurements for variant 'qemu-vtpm'"
    )


def test_measurements_of_other_image_leave_config_byte_identical(
    invoke: Any, published: Published
) -> None:
    before = published.config.read_bytes()
    published.publish(_published(version="v2.0.0-old"))
    _assert_refused(_fetch(invoke, published), published, before, "refusing to mix")


def test_missing_signature_file_is_refused(invoke: Any, published: Published) -> None:
    before = published.config.read_bytes()
    published.signature.unlink()
    _assert_refused(_fetch(invoke, published), published, before, "cannot read")


def test_no_public_key_anywhere_is_refused(invoke: Any, published: Published) -> None:
    before = published.config.read_bytes()
    result = invoke(published.root, "config", "fetch-measurements", "--path", str(published.data))
    _assert_refused(result, published, before, "no measurement-service public key")


def test_oversized_file_is_refused(invoke: Any, published: Published) -> None:
    before = published.config.read_bytes()
    published.data.write_bytes(b" " * (1024 * 1024 + 1))
    _assert_refused(_fetch(invoke, published), published, before, "larger than")


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("--url", "file:///x", "--path", "x"),
        ("--path", "x", "--signature", "y", "--signature-url", "file:///y"),
    ],
)
def test_conflicting_sources_are_usage_errors(
    invoke: Any, published: Published, args: tuple[str, ...]
) -> None:
    assert invoke(published.root, "config", "fetch-measurements", *args).code == 2


class _Handler(http.server.BaseHTTPRequestHandler):
    files: ClassVar[dict[str, bytes]] = {}

    def do_GET(self) -> None:
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server(published: Published) -> Iterator[str]:
    _Handler.files = {
        "/m.json": published.data.read_bytes(),
        "/m.json.sig": published.signature.read_bytes(),
        "/other.sig": sign_measurements(
            published.data.read_bytes(), ec.generate_private_key(ec.SECP256R1())
        ),
    }
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_fetch_over_http(invoke: Any, published: Published, http_server: str) -> None:
    result = invoke(
        published.root,
        "config",
        "fetch-measurements",
        "--url",
        f"{http_server}/m.json",
        "--public-key",
        str(published.public_key),
    )
    assert result.code == 0, result.stderr
    assert PCR4.hex() in published.config.read_text()


def test_http_signature_by_other_key_is_refused(
    invoke: Any, published: Published, http_server: str
) -> None:
    before = published.config.read_bytes()
    result = invoke(
        published.root,
        "config",
        "fetch-measurements",
        "--url",
        f"{http_server}/m.json",
        "--signature-url",
        f"{http_server}/other.sig",
        "--public-key",
        str(published.public_key),
    )
    _assert_refused(result, published, before, "does not verify")


def test_http_404_is_refused(invoke: Any, published: Published, http_server: str) -> None:
    before = published.config.read_bytes()
    result = invoke(
        published.root,
        "config",
        "fetch-measurements",
        "--url",
        f"{http_server}/absent.json",
        "--public-key",
        str(published.public_key),
    )
    _assert_refused(result, published, before, "HTTP 404")


def test_http_request_is_bounded_in_time(invoke: Any, published: Published) -> None:
    # A listening socket that never answers: the request must give up after --timeout.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        before = published.config.read_bytes()
        result = invoke(
            published.root,
            "config",
            "fetch-measurements",
            "--url",
            f"http://127.0.0.1:{silent.getsockname()[1]}/m.json",
            "--public-key",
            str(published.public_key),
            "--timeout",
            "0.5",
        )
    _assert_refused(result, published, before, "request failed within")
