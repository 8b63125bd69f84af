from __future__ import annotations

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from constellation.attestation.identity import Role
from constellation.attestation.identity.ca import PlatformCA
from constellation.attestation.measurements import Measurement, Measurements
from constellation.cli.config import (
    Provider,
    default_config,
    parse_config,
    render_config,
)
from constellation.cli.errors import ConfigError

PCR4 = "aa" * 32


def _text(**attestation_changes: object) -> str:
    document = yaml.safe_load(render_config(default_config(Provider.MINI)))
    document["attestation"].update(attestation_changes)
    return yaml.safe_dump(document)


@pytest.mark.parametrize("provider", list(Provider))
def test_generated_config_parses_back(provider: Provider) -> None:
    config = default_config(provider)
    assert parse_config(render_config(config)) == config
    assert (config.mini is not None) == (provider is Provider.MINI)


def test_render_is_commented_and_round_trips_measurements_and_inline_key() -> None:
    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    measurements = Measurements(
        {4: Measurement(bytes.fromhex(PCR4)), 9: Measurement(bytes(32), warn_only=True)}
    )
    config = default_config(Provider.MINI).with_measurements(measurements)
    config = parse_config(
        render_config(config).replace(
            "  # measurementServicePublicKeyPath: measurements.pub\n",
            "  measurementServicePublicKey: |\n"
            + "".join(f"    {line}\n" for line in pem.strip().splitlines()),
        )
    )
    text = render_config(config)
    assert text.count("#") > 10
    again = parse_config(text)
    assert again == config
    assert again.attestation.parsed_measurements() == measurements
    assert again.attestation.measurementServicePublicKey is not None


@pytest.mark.parametrize(
    ("text", "key_path"),
    [
        (_text(extra="x"), "attestation.extra: unknown key"),
        (_text(measurements={"4": {"expected": "zz"}}), "attestation.measurements"),
        (
            _text(measurements={"4": {"expected": PCR4, "warnonly": True}}),
            "measurements.4.warnonly",
        ),
        (_text(measurements={"4": {"expected": "aa" * 31}}), "31 bytes"),
        (_text(measurements={"24": {"expected": PCR4}}), "out of range"),
        (
            _text(measurements={"4": {"expected": PCR4, "warnOnly": "yes"}}),
            "measurements.4.warnOnly",
        ),
        (_text(variant="sgx"), "attestation.variant"),
        (
            _text(measurementServicePublicKey="not a pem"),
            "attestation.measurementServicePublicKey",
        ),
        (
            _text(
                measurementServicePublicKey="-----BEGIN PUBLIC KEY-----\n",
                measurementServicePublicKeyPath="k.pub",
            ),
            "not both",
        ),
    ],
)
def test_invalid_attestation_section_is_refused_with_key_path(text: str, key_path: str) -> None:
    with pytest.raises(ConfigError, match=key_path):
        parse_config(text)


def test_every_problem_is_listed_at_once() -> None:
    document = yaml.safe_load(render_config(default_config(Provider.MINI)))
    document["typo"] = 1
    document["kubernetesVersion"] = "1.31"
    document["mini"]["workerNodes"] = -1
    with pytest.raises(ConfigError) as info:
        parse_config(yaml.safe_dump(document))
    message = str(info.value)
    assert "3 problem(s)" in message
    assert "typo: unknown key" in message
    assert "kubernetesVersion" in message
    assert "mini.workerNodes" in message


def test_mini_section_must_match_provider() -> None:
    document = yaml.safe_load(render_config(default_config(Provider.MINI)))
    del document["mini"]
    with pytest.raises(ConfigError, match="needs a 'mini' section"):
        parse_config(yaml.safe_dump(document))
    document = yaml.safe_load(render_config(default_config(Provider.AZURE)))
    document["mini"] = {"controlPlaneNodes": 1, "workerNodes": 0}
    with pytest.raises(ConfigError, match="only valid with provider 'mini'"):
        parse_config(yaml.safe_dump(document))


def test_missing_key_is_named() -> None:
    document = yaml.safe_load(render_config(default_config(Provider.MINI)))
    del document["image"]
    with pytest.raises(ConfigError, match="image: required key is missing"):
        parse_config(yaml.safe_dump(document))


def test_duplicate_yaml_keys_are_refused() -> None:
    text = render_config(default_config(Provider.MINI)) + 'image: "other"\n'
    with pytest.raises(ConfigError, match="duplicate key 'image'"):
        parse_config(text)


@pytest.mark.parametrize("text", ["", "- a list", "a: [unclosed", "version: v1"])
def test_not_a_config_is_refused(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_config(text)


def test_empty_measurements_come_with_a_commented_example() -> None:
    text = render_config(default_config(Provider.MINI))
    assert "measurements: {}" in text
    assert "#     warnOnly: false" in text
    assert parse_config(text).attestation.measurements == {}


def test_platform_roots_round_trip_and_are_shown_parsed() -> None:
    ca = PlatformCA.generate()
    config = parse_config(_text(platformRoots=ca.cert_pem.decode()))
    assert config.attestation.parsed_platform_roots() == (ca.certificate,)
    assert parse_config(render_config(config)) == config
    assert "platformRoots: |" in render_config(config)
    assert default_config(Provider.MINI).attestation.parsed_platform_roots() == ()


def test_platform_roots_that_are_not_ca_certificates_are_refused() -> None:
    ca = PlatformCA.generate()
    leaf = x509.load_der_x509_certificate(
        ca.issue_ak_certificate(
            PlatformCA.generate()
            .certificate.public_key()
            .public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            "mini-cp-0",
            Role.CONTROL_PLANE,
        )
    ).public_bytes(serialization.Encoding.PEM)
    for bad in ("not a certificate", leaf.decode()):
        with pytest.raises(ConfigError, match=r"attestation\.platformRoots"):
            parse_config(_text(platformRoots=bad))
