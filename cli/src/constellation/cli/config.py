"""The cluster configuration file (``constellation-conf.yaml``): schema, loading, rendering.

The configuration is the admin's statement of trust: which attestation variant the nodes use,
which measurements they must present, which key signs published measurements. It is therefore
validated strictly at the boundary (pydantic, ``extra="forbid"``): an unknown key, a wrong
type, a malformed measurement or a duplicate YAML key is refused with the full key path (e.g.
``attestation.measurements.4.expected``), and every problem is listed at once.

The file is always written from the model through :func:`render_config`, which puts an
explanatory comment above every key. Loading then saving a configuration is therefore
lossless for the data and restores the comments.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any, Literal

from cryptography import x509
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError

from constellation.attestation.boundedparse import load_yaml
from constellation.attestation.identity.errors import IdentityError
from constellation.attestation.identity.verify import load_platform_roots
from constellation.attestation.measurements import Measurements, MeasurementsError
from constellation.cli.errors import ConfigError

CONFIG_VERSION = "v1"
DEFAULT_KUBERNETES_VERSION = "v1.31.1"
DEFAULT_MINI_IMAGE = "mini-local"
MAX_MINI_NODES = 16


class Provider(StrEnum):
    MINI = "mini"
    AZURE = "azure"
    AWS = "aws"
    GCP = "gcp"


# The attestation variant each provider's nodes use (DESIGN.md §4.1).
DEFAULT_VARIANT: dict[Provider, str] = {
    Provider.MINI: "qemu-vtpm",
    Provider.AZURE: "azure-sev-snp",
    Provider.AWS: "aws-sev-snp",
    Provider.GCP: "gcp-sev-snp",
}
VARIANTS = ("qemu-vtpm", "azure-sev-snp", "aws-sev-snp", "gcp-sev-snp", "azure-tdx")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class MeasurementEntry(_Strict):
    expected: str
    warnOnly: bool = False


class AttestationConfig(_Strict):
    variant: Literal["qemu-vtpm", "azure-sev-snp", "aws-sev-snp", "gcp-sev-snp", "azure-tdx"]
    measurements: dict[str, MeasurementEntry] = Field(default_factory=dict)
    measurementServicePublicKey: str | None = None
    measurementServicePublicKeyPath: str | None = None
    platformRoots: str | None = None

    @field_validator("platformRoots")
    @classmethod
    def _platform_roots_parse(cls, value: str | None) -> str | None:
        # The attestation library owns the rules (PEM, CA certificates, at most 16).
        if value is not None:
            try:
                load_platform_roots(value.encode())
            except IdentityError as err:
                raise ValueError(str(err)) from None
        return value

    @field_validator("measurements")
    @classmethod
    def _measurements_parse(cls, value: dict[str, MeasurementEntry]) -> dict[str, MeasurementEntry]:
        # The attestation library owns the rules (indices, hex, lengths, one bank).
        try:
            Measurements.from_dict({k: v.model_dump() for k, v in value.items()})
        except MeasurementsError as err:
            raise ValueError(str(err)) from None
        return value

    @field_validator("measurementServicePublicKey")
    @classmethod
    def _inline_pem(cls, value: str | None) -> str | None:
        if value is not None and not value.lstrip().startswith("-----BEGIN PUBLIC KEY-----"):
            raise ValueError("must be a PEM public key (-----BEGIN PUBLIC KEY-----)")
        return value

    @model_validator(mode="after")
    def _one_key_source(self) -> AttestationConfig:
        if self.measurementServicePublicKey and self.measurementServicePublicKeyPath:
            raise ValueError(
                "set either measurementServicePublicKey or measurementServicePublicKeyPath, "
                "not both"
            )
        return self

    def parsed_measurements(self) -> Measurements:
        return Measurements.from_dict({k: v.model_dump() for k, v in self.measurements.items()})

    def parsed_platform_roots(self) -> tuple[x509.Certificate, ...]:
        """The platform CA roots that vouch for nodes' attestation keys (none configured: ())."""
        if self.platformRoots is None:
            return ()
        return load_platform_roots(self.platformRoots.encode())


class MiniConfig(_Strict):
    controlPlaneNodes: int = Field(default=1, ge=1, le=MAX_MINI_NODES)
    workerNodes: int = Field(default=1, ge=0, le=MAX_MINI_NODES)


class Config(_Strict):
    version: Literal["v1"]
    provider: Provider
    image: str = Field(min_length=1, max_length=128)
    kubernetesVersion: str = Field(pattern=r"^v\d+\.\d+\.\d+$")
    attestation: AttestationConfig
    mini: MiniConfig | None = None

    @field_validator("provider", mode="before")
    @classmethod
    def _provider_from_text(cls, value: Any) -> Any:
        # strict mode would refuse the plain string the YAML file holds.
        if isinstance(value, str) and value in {p.value for p in Provider}:
            return Provider(value)
        return value

    @model_validator(mode="after")
    def _mini_section(self) -> Config:
        if self.provider is Provider.MINI and self.mini is None:
            raise ValueError("provider 'mini' needs a 'mini' section with the node counts")
        if self.provider is not Provider.MINI and self.mini is not None:
            raise ValueError("the 'mini' section is only valid with provider 'mini'")
        return self

    def with_measurements(self, measurements: Measurements) -> Config:
        """A copy whose measurements are replaced (validated again)."""
        entries = {key: MeasurementEntry(**value) for key, value in measurements.to_dict().items()}
        attestation = self.attestation.model_copy(update={"measurements": entries})
        return _validated(self.model_copy(update={"attestation": attestation}).model_dump())


def default_config(provider: Provider) -> Config:
    """The configuration ``config generate`` writes for ``provider``."""
    return _validated(
        {
            "version": CONFIG_VERSION,
            "provider": provider.value,
            "image": DEFAULT_MINI_IMAGE if provider is Provider.MINI else "v2.19.0",
            "kubernetesVersion": DEFAULT_KUBERNETES_VERSION,
            "attestation": {"variant": DEFAULT_VARIANT[provider], "measurements": {}},
            "mini": MiniConfig().model_dump() if provider is Provider.MINI else None,
        }
    )


#: A configuration file is a few KiB; a MiB is refused unread.
MAX_CONFIG_SIZE = 1 << 20


def parse_config(text: bytes | str, *, source: str = "configuration") -> Config:
    """Parse and validate a configuration file; raise ``ConfigError`` listing every problem."""
    # Bounded: size, nesting, aliases; duplicate and complex (``? ?``) keys are refused.
    document = load_yaml(
        text,
        max_size=MAX_CONFIG_SIZE,
        what=source,
        error=lambda message: ConfigError(
            message, hint="fix the syntax (each key once, plain keys) or regenerate it"
        ),
    )
    if not isinstance(document, dict):
        raise ConfigError(
            f"{source} must be a YAML mapping", hint="run `constellation config generate`"
        )
    return _validated(document, source=source)


def _validated(document: dict[str, Any], *, source: str = "configuration") -> Config:
    # Keys in the file are strings; YAML turns `4:` into an int, so normalize measurement keys.
    attestation = document.get("attestation")
    if isinstance(attestation, dict) and isinstance(attestation.get("measurements"), dict):
        attestation["measurements"] = {str(k): v for k, v in attestation["measurements"].items()}
    try:
        return Config.model_validate(document)
    except PydanticValidationError as err:
        problems = [
            f"{'.'.join(str(part) for part in e['loc']) or '(top level)'}: "
            f"{_describe(e['type'], e['msg'])}"
            for e in err.errors()
        ]
        raise ConfigError(
            f"{source} is invalid ({len(problems)} problem(s)): " + "; ".join(problems),
            hint="fix the listed keys; `constellation config generate` shows a valid example",
        ) from None


def _describe(kind: str, message: str) -> str:
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    return message.removeprefix("Value error, ")


def _scalar(value: object) -> str:
    """A YAML scalar for ``value`` (JSON strings and numbers are valid YAML)."""
    return json.dumps(value)


def render_config(config: Config) -> str:
    """The commented YAML text of ``config`` (the only way the CLI writes a configuration)."""
    a = config.attestation
    lines = [
        "# Constellation cluster configuration. Written by `constellation config generate`;",
        "# `constellation config fetch-measurements` and `constellation mini up` update it.",
        "",
        "# Schema version of this file.",
        f"version: {_scalar(config.version)}",
        "# Where the nodes run: mini (local processes with software TPMs), azure, aws, gcp.",
        f"provider: {_scalar(config.provider.value)}",
        "# Node image version; fetched measurements must be published for exactly this image.",
        f"image: {_scalar(config.image)}",
        "# Kubernetes version the control plane runs (vMAJOR.MINOR.PATCH).",
        f"kubernetesVersion: {_scalar(config.kubernetesVersion)}",
        "",
        "# Remote attestation: what every node must prove before it gets a secret.",
        "attestation:",
        "  # Attestation variant: qemu-vtpm, azure-sev-snp, aws-sev-snp, gcp-sev-snp, azure-tdx.",
        f"  variant: {_scalar(a.variant)}",
        "  # Expected PCR values (hex). warnOnly: true reports a mismatch but still accepts the",
        "  # node. Fill with `constellation config fetch-measurements` (signed by the image",
        "  # publisher) or `constellation mini up`. PCR 15 is checked by the CLI itself.",
    ]
    if a.measurements:
        lines.append("  measurements:")
        for key in sorted(a.measurements, key=int):
            entry = a.measurements[key]
            lines.append(f"    {_scalar(key)}:")
            lines.append(f"      expected: {_scalar(entry.expected)}")
            lines.append(f"      warnOnly: {_scalar(entry.warnOnly)}")
    else:
        lines += [
            "  measurements: {}",
            "  # Shape of an entry (one per PCR, values of one bank: 32-byte SHA-256 hex):",
            "  # measurements:",
            '  #   "4":',
            '  #     expected: "<64 hex digits>"',
            "  #     warnOnly: false",
        ]
    lines.append("  # Public key (ECDSA P-256) that signs published measurements: a PEM inline")
    lines.append("  # (measurementServicePublicKey) or a file (measurementServicePublicKeyPath,")
    lines.append("  # relative to the workspace).")
    if a.measurementServicePublicKey is not None:
        lines.append("  measurementServicePublicKey: |")
        lines.extend(f"    {line}" for line in a.measurementServicePublicKey.strip().splitlines())
    elif a.measurementServicePublicKeyPath is not None:
        lines.append(
            f"  measurementServicePublicKeyPath: {_scalar(a.measurementServicePublicKeyPath)}"
        )
    else:
        lines.append("  # measurementServicePublicKeyPath: measurements.pub")
    lines += [
        "  # Platform root CA certificate(s), PEM: the platform (cloud, hypervisor host, or mini",
        "  # mode's own CA) certifies each node's TPM attestation key and names the instance and",
        "  # its role. qemu-vtpm nodes are refused unless their AK certificate chains to one of",
        "  # these; `constellation mini up` fills in its platform CA.",
    ]
    if a.platformRoots is not None:
        lines.append("  platformRoots: |")
        lines.extend(f"    {line}" for line in a.platformRoots.strip().splitlines())
    else:
        lines.append("  # platformRoots: |")
        lines.append("  #   -----BEGIN CERTIFICATE-----")
    if config.mini is not None:
        lines += [
            "",
            "# Mini mode: nodes are local processes, each with its own swtpm vTPM.",
            "mini:",
            "  # Number of control-plane nodes (1..16).",
            f"  controlPlaneNodes: {config.mini.controlPlaneNodes}",
            "  # Number of worker nodes (0..16).",
            f"  workerNodes: {config.mini.workerNodes}",
        ]
    return "\n".join(lines) + "\n"
