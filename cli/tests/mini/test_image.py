"""The node image and its measurements: deterministic, and every change shows in a PCR."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from constellation.attestation.eventlog import (
    DATA_BOUND_EVENT_TYPES,
    EV_EVENT_TAG,
    TPM_ALG_SHA256,
    Event,
    TaggedEvent,
    check_replay,
    encode_event_log,
    parse_event_log,
)
from constellation.attestation.measurements import (
    MeasurementsSignatureError,
    verify_signed_measurements,
)
from constellation.cli.config import Provider, default_config
from constellation.cli.mini import image
from constellation.cli.mini.errors import ImageError
from constellation.cli.signedmeasurements import verify_and_merge

HASHES = {"kubeadm": "ab" * 32, "etcd": "cd" * 32}


@pytest.fixture
def built(tmp_path: Path) -> Path:
    destination = tmp_path / "image"
    image.build_image(
        destination, kubernetes_version="v1.36.3", components=HASHES, version="mini-test"
    )
    return destination


def _edit(path: Path, suffix: bytes = b"\n# changed\n") -> None:
    path.write_bytes(path.read_bytes() + suffix)


def test_image_holds_the_node_packages_and_its_config(built: Path) -> None:
    for package in image.IMAGE_PACKAGES:
        assert (built / "constellation" / package / "__init__.py").is_file()
    assert (built / "constellation" / "proto" / "init_pb2.py").is_file()  # generated modules
    assert not list(built.rglob("__pycache__"))
    config = image.image_config(built)
    assert config.version == "mini-test"
    assert config.components == HASHES


def test_measurements_are_deterministic_across_copies(built: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    image.copy_image(built, copy)
    assert image.expected_pcrs(built) == image.expected_pcrs(copy)


def test_expected_pcrs_replay_the_boot_events_from_zero(built: Path) -> None:
    contents = image.read_image(built)
    events = image.boot_events(contents)
    values = image.expected_pcrs(built)
    assert sorted(values) == list(range(16))
    for event in events:
        assert values[event.pcr] == hashlib.sha256(bytes(32) + event.digest).digest()
    untouched = set(range(16)) - {e.pcr for e in events}
    assert all(values[i] == bytes(32) for i in untouched)
    assert events[0].measured == hashlib.sha256(image.manifest(contents.files)).digest()
    assert events[2].measured == hashlib.sha256(contents.config).digest()


def test_boot_events_are_tagged_events_hashed_from_their_data(built: Path) -> None:
    events = image.boot_events(image.read_image(built))
    assert [e.pcr for e in events] == [image.PCR_MANIFEST, image.PCR_CODE, image.PCR_CONFIG]
    for event in events:
        assert event.event_type == EV_EVENT_TAG in DATA_BOUND_EVENT_TYPES
        assert event.digest == hashlib.sha256(event.data).digest()
        tagged = TaggedEvent.parse(event.data)
        assert tagged.event_id == event.tag
        assert tagged.data == event.measured + event.description.encode()
    assert len({e.tag for e in events}) == len(events)


def _logged(event: image.BootEvent, data: bytes | None = None) -> Event:
    """``event`` as the firmware logs it, optionally with its data rewritten."""
    return Event(event.pcr, event.event_type, {TPM_ALG_SHA256: event.digest}, data or event.data)


def test_the_boot_log_passes_the_full_event_log_check(built: Path) -> None:
    events = image.boot_events(image.read_image(built))
    log = parse_event_log(encode_event_log(_logged(e) for e in events))
    quoted = {index: bytes(32) for index in range(24)} | image.expected_pcrs(built)
    assert check_replay(log, quoted) == []
    # The description rewritten in the log with every digest kept: refused.
    forged_data = events[0].data.replace(b"image manifest", b"image manifesT")
    assert forged_data != events[0].data
    forged = [_logged(events[0], forged_data), *(_logged(e) for e in events[1:])]
    failures = check_replay(parse_event_log(encode_event_log(forged)), quoted)
    assert [f.check for f in failures] == ["eventlog.event[0].data"]


def test_a_boot_event_measures_a_sha256_digest() -> None:
    with pytest.raises(ImageError, match="SHA-256"):
        image.BootEvent(4, image.TAG_IMAGE_MANIFEST, b"short", "x")


@pytest.mark.parametrize(
    ("relative", "changed"),
    [
        ("constellation/bootstrapper/node.py", {4, 9}),
        ("constellation/attestation/vtpm.py", {4}),
        ("constellation/proto/init_pb2.py", {4}),
        ("image.json", {4, 11}),
    ],
)
def test_every_change_shows_in_the_pcrs(built: Path, relative: str, changed: set[int]) -> None:
    before = image.expected_pcrs(built)
    _edit(built / relative, b" " if relative.endswith(".json") else b"\n# changed\n")
    after = image.expected_pcrs(built)
    assert {i for i in before if before[i] != after[i]} == changed


def test_an_added_file_changes_the_manifest(built: Path) -> None:
    before = image.expected_pcrs(built)
    (built / "constellation" / "attestation" / "extra.py").write_text("x = 1\n")
    after = image.expected_pcrs(built)
    assert before[4] != after[4]
    assert before[9] == after[9]


def test_a_symlink_is_refused(built: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.py"
    outside.write_text("evil = True\n")
    os.symlink(outside, built / "constellation" / "bootstrapper" / "linked.py")
    with pytest.raises(ImageError, match="not a regular file"):
        image.read_image(built)


def test_a_directory_without_image_json_is_refused(built: Path) -> None:
    (built / image.IMAGE_CONFIG).unlink()
    with pytest.raises(ImageError, match="not a node image"):
        image.read_image(built)


def test_an_image_without_bootstrapper_is_refused(tmp_path: Path, built: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / image.IMAGE_CONFIG).write_bytes((built / image.IMAGE_CONFIG).read_bytes())
    with pytest.raises(ImageError, match="bootstrapper"):
        image.expected_pcrs(bare)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(schema=2), "schema"),
        (lambda d: d.update(version="../x"), "version"),
        (lambda d: d.update(kubernetesVersion="1.2"), "kubernetesVersion"),
        (lambda d: d.update(components={"etcd": "nothex"}), "components"),
        (lambda d: d.update(commandLine=["sh", "-c", "evil"]), "commandLine"),
        (lambda d: d.update(extra=1), "exactly the keys"),
    ],
)
def test_image_config_is_parsed_strictly(built: Path, edit, message: str) -> None:
    document = json.loads((built / image.IMAGE_CONFIG).read_bytes())
    edit(document)
    with pytest.raises(ImageError, match=message):
        image.parse_image_config(json.dumps(document).encode())


def test_build_refuses_an_existing_directory(built: Path) -> None:
    with pytest.raises(ImageError, match="already exists"):
        image.build_image(built, kubernetes_version="v1.36.3", components=HASHES)


def test_published_measurements_verify_through_the_fetch_path(built: Path, tmp_path: Path) -> None:
    public = image.generate_publisher_key(tmp_path / "publisher.key")
    assert (tmp_path / "publisher.key").stat().st_mode & 0o077 == 0
    key = image.load_publisher_key(tmp_path / "publisher.key")
    published = image.publish_image(built, key)
    config = default_config(Provider.MINI).model_copy(update={"image": "mini-test"})
    merged = verify_and_merge(config, published.data, published.signature, public)
    measurements = merged.measurements
    assert measurements[15].expected == bytes(32)
    expected = image.expected_pcrs(built)
    assert {i: m.expected for i, m in measurements.items()} == expected
    document = json.loads(published.data)
    assert document["list"][0]["csp"] == "mini"
    assert document["list"][0]["attestationVariant"] == "qemu-vtpm"


def test_a_signature_by_another_key_is_refused(built: Path) -> None:
    published = image.publish_image(built, ec.generate_private_key(ec.SECP256R1()))
    other = image.public_pem(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(MeasurementsSignatureError):
        verify_signed_measurements(published.data, published.signature, other)


def test_a_modified_file_after_signing_is_refused(built: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    published = image.publish_image(built, key)
    forged = published.data.replace(b"mini-test", b"mini-evil")
    with pytest.raises(MeasurementsSignatureError):
        verify_signed_measurements(forged, published.signature, image.public_pem(key))


def test_a_key_that_is_not_p256_is_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    key = ec.generate_private_key(ec.SECP384R1())
    path = tmp_path / "p384.key"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ImageError, match="P-256"):
        image.load_publisher_key(path)
