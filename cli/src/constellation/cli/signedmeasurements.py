"""Fetching published measurements and trusting them only after their signature verified.

``config fetch-measurements`` follows these steps, in this order:

1. Load and validate the current configuration (a broken config is never "repaired" by a
   fetch).
2. Resolve the trusted public key: ``--public-key FILE``, else the configuration's inline PEM or
   key file. No key, no fetch.
3. Fetch the measurements file and its detached signature (``file://``, ``http(s)://`` with a
   bounded timeout and size, or a plain path). One attempt each, no retries.
4. ``verify_signed_measurements`` (attestation library): nothing from the file is interpreted
   before the signature has verified.
5. Check that the file was published for the configured image version (refuses an older,
   validly signed file replayed for a newer image) and pick the entry for the configured
   attestation variant.
6. Return the updated configuration; the caller writes it atomically. Any failure before that
   leaves the configuration file byte-identical.
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from constellation.attestation.measurements import (
    ImageMeasurements,
    Measurements,
    MeasurementsError,
    verify_signed_measurements,
)
from constellation.cli.config import Config
from constellation.cli.errors import ConfigError, FetchError

FETCH_TIMEOUT_SECONDS = 10.0
MAX_MEASUREMENTS_SIZE = 1024 * 1024
MAX_SIGNATURE_SIZE = 16 * 1024
MAX_PUBLIC_KEY_SIZE = 16 * 1024
SIGNATURE_SUFFIX = ".sig"


def fetch_bytes(
    location: str, *, max_size: int, timeout: float = FETCH_TIMEOUT_SECONDS, base: Path
) -> bytes:
    """Read ``location`` (``file://``, ``http(s)://`` or a path relative to ``base``).

    Bounded in time (``timeout`` per request) and size (``max_size``); one attempt.
    """
    parsed = urllib.parse.urlsplit(location)
    if parsed.scheme in ("http", "https"):
        return _fetch_http(location, max_size=max_size, timeout=timeout)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise FetchError(f"{location}: file URLs must not name a host")
        path = Path(urllib.parse.unquote(parsed.path))
    elif parsed.scheme == "":
        path = Path(location)
        if not path.is_absolute():
            path = base / path
    else:
        raise FetchError(
            f"{location}: unsupported scheme {parsed.scheme!r}",
            hint="use https://, http://, file:// or a file path",
        )
    try:
        with path.open("rb") as handle:
            data = handle.read(max_size + 1)
    except OSError as err:
        raise FetchError(
            f"cannot read {path}: {err.strerror or err}", hint="check the path"
        ) from None
    return _bounded(data, location, max_size)


def _fetch_http(url: str, *, max_size: int, timeout: float) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "constellation-cli"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            data: bytes = response.read(max_size + 1)
    except urllib.error.HTTPError as err:
        raise FetchError(
            f"{url}: server answered HTTP {err.code} {err.reason}",
            hint="check the URL; the image version may not be published",
        ) from None
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise FetchError(
            f"{url}: request failed within {timeout:.0f}s: {reason}",
            hint="check the network connection and the URL",
        ) from None
    return _bounded(data, url, max_size)


def _bounded(data: bytes, location: str, max_size: int) -> bytes:
    if len(data) > max_size:
        raise FetchError(f"{location}: larger than {max_size} bytes; refusing to use it")
    return data


def default_signature_location(location: str) -> str:
    """Where the detached signature lives by convention: the same location plus ``.sig``."""
    parsed = urllib.parse.urlsplit(location)
    if parsed.scheme in ("http", "https", "file"):
        return urllib.parse.urlunsplit(parsed._replace(path=parsed.path + SIGNATURE_SUFFIX))
    return location + SIGNATURE_SUFFIX


def resolve_public_key(config: Config, *, override: Path | None, base: Path) -> bytes:
    """The PEM of the key trusted to sign measurements (flag > inline > configured file)."""
    attestation = config.attestation
    if override is not None:
        path = override
    elif attestation.measurementServicePublicKey is not None:
        return attestation.measurementServicePublicKey.encode()
    elif attestation.measurementServicePublicKeyPath is not None:
        path = Path(attestation.measurementServicePublicKeyPath)
        if not path.is_absolute():
            path = base / path
    else:
        raise ConfigError(
            "no measurement-service public key is configured",
            hint="pass --public-key FILE or set attestation.measurementServicePublicKeyPath",
        )
    try:
        with path.open("rb") as handle:
            pem = handle.read(MAX_PUBLIC_KEY_SIZE + 1)
    except OSError as err:
        raise ConfigError(
            f"cannot read the measurement-service public key {path}: {err.strerror or err}",
            hint="check the key path",
        ) from None
    if len(pem) > MAX_PUBLIC_KEY_SIZE:
        raise ConfigError(f"{path} is too large to be a public key")
    return pem


@dataclass(frozen=True)
class FetchResult:
    """What was verified and merged."""

    image: ImageMeasurements
    measurements: Measurements
    config: Config


def verify_and_merge(
    config: Config, data: bytes, signature: bytes, public_key_pem: bytes
) -> FetchResult:
    """Verify the signed file, check it belongs to the configured image, merge the variant.

    Pure: no I/O. Raises a ``MeasurementsSignatureError`` for a bad signature, a
    ``MeasurementsError`` for a file that is signed but unusable, ``ConfigError`` when the
    merged configuration would be invalid.
    """
    published = verify_signed_measurements(data, signature, public_key_pem)
    if published.version != config.image:
        raise MeasurementsError(
            f"the signed measurements are for image {published.version!r}, but the "
            f"configuration uses image {config.image!r}; refusing to mix them"
        )
    measurements = published.for_variant(config.attestation.variant)
    if not measurements:
        raise MeasurementsError(
            f"the signed measurements for variant {config.attestation.variant!r} are empty"
        )
    return FetchResult(published, measurements, config.with_measurements(measurements))
