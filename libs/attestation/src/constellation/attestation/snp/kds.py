"""Fetching AMD certificates from the Key Distribution Service (KDS), with a disk cache.

KDS serves (``https://kdsintf.amd.com``):

* ``/vcek/v1/<product>/cert_chain`` and ``/vlek/v1/<product>/cert_chain``: PEM, ASK (or ASVK)
  then ARK;
* ``/vcek/v1/<product>/<hwid hex>?blSPL=..&teeSPL=..&snpSPL=..&ucodeSPL=..``: the DER VCEK for
  one chip at one TCB (Turin: ``fmcSPL`` first and the hwID is the first 8 bytes of CHIP_ID).

Nothing fetched is trusted: the verifier checks it against the pins like any other input.
The cache is therefore only an availability and rate-limit measure. KDS throttles hard (HTTP
429 with ``Retry-After``); ``KdsClient`` honours it within a bounded number of attempts and a
bounded total wait, and ``offline=True`` serves from the cache only. Cache files are written
atomically (temporary file + rename) so a crash never leaves a half-written certificate.

``load_trust_directory`` reads operator-provided certificates (for air-gapped verifiers) into
``Roots``, refusing any that is not one of the pinned AMD certificates.
"""

from __future__ import annotations

import email.utils
import hashlib
import os
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

from constellation.attestation.snp.certs import (
    TURIN_HWID_SIZE,
    Roots,
    load_certificate,
    load_certificates,
)
from constellation.attestation.snp.errors import (
    KdsError,
    KdsNotFoundError,
    KdsOfflineError,
    KdsRateLimitedError,
    MalformedCertificateError,
    TrustStoreError,
)
from constellation.attestation.snp.products import TURIN, normalize_product
from constellation.attestation.snp.tcb import TcbVersion

KDS_BASE_URL = "https://kdsintf.amd.com"
SIGNER_KINDS = ("vcek", "vlek")
HTTP_OK = 200
HTTP_NOT_FOUND = 404
HTTP_TOO_MANY_REQUESTS = 429
HTTP_SERVER_ERROR = 500


@runtime_checkable
class KdsFetcher(Protocol):
    """Source of AMD certificates (KDS, a cache, a test fake)."""

    def cert_chain(self, product: str, signer: str = "vcek") -> bytes:
        """PEM: the ASK (``signer="vcek"``) or ASVK (``"vlek"``) then the ARK of ``product``."""
        ...

    def vcek(self, product: str, chip_id: bytes, tcb: TcbVersion) -> bytes:
        """The DER VCEK of chip ``chip_id`` at ``tcb`` (the report's REPORTED_TCB)."""
        ...


def chain_path(product: str, signer: str = "vcek") -> str:
    if signer not in SIGNER_KINDS:
        raise ValueError(f"signer is one of {SIGNER_KINDS}, got {signer!r}")
    return f"/{signer}/v1/{normalize_product(product)}/cert_chain"


def vcek_path(product: str, chip_id: bytes, tcb: TcbVersion) -> str:
    """The KDS path of a VCEK; the SPLs come from ``tcb`` in the product's layout."""
    product = normalize_product(product) or product
    if product == TURIN:
        tcb = TcbVersion(int(tcb), turin=True)
        hwid = chip_id[:TURIN_HWID_SIZE]
        query = f"fmcSPL={tcb.fmc}&"
    else:
        tcb = TcbVersion(int(tcb), turin=False)
        hwid = chip_id
        query = ""
    query += f"blSPL={tcb.bootloader}&teeSPL={tcb.tee}&snpSPL={tcb.snp}&ucodeSPL={tcb.microcode}"
    return f"/vcek/v1/{product}/{hwid.hex()}?{query}"


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes


class HttpTransport(Protocol):
    """One HTTP GET; raises ``OSError`` for transport failures."""

    def get(self, url: str, timeout: float) -> HttpResponse: ...


class UrllibTransport:
    """``HttpTransport`` over the standard library (no extra dependency)."""

    def get(self, url: str, timeout: float) -> HttpResponse:
        if not url.startswith(("https://", "http://")):
            raise OSError(f"refusing non-HTTP URL {url!r}")
        request = urllib.request.Request(url, headers={"Accept": "*/*"})  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                return HttpResponse(response.status, dict(response.headers), response.read())
        except urllib.error.HTTPError as err:
            return HttpResponse(err.code, dict(err.headers or {}), err.read() or b"")


def _retry_after(headers: Mapping[str, str], now: datetime) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date), if any."""
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        return None
    value = value.strip()
    # isdigit() alone admits "¹" and other digits float() refuses: ASCII decimals only.
    if value.isascii() and value.isdecimal():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):  # a server's date is input like any other
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


@dataclass
class KdsClient:
    """``KdsFetcher`` for the real KDS: cached, rate-limit aware, optionally offline.

    Bounds: at most ``max_attempts`` requests per certificate, no single wait longer than
    ``max_retry_after`` seconds and no more than ``deadline`` seconds per lookup; beyond them
    ``KdsRateLimitedError``. ``sleep``/``monotonic``/``now`` are injectable for tests.
    """

    cache_dir: Path | None = None
    base_url: str = KDS_BASE_URL
    offline: bool = False
    transport: HttpTransport = field(default_factory=UrllibTransport)
    timeout: float = 10.0
    max_attempts: int = 4
    max_retry_after: float = 30.0
    deadline: float = 60.0
    backoff: float = 1.0
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def cert_chain(self, product: str, signer: str = "vcek") -> bytes:
        return self._get(chain_path(product, signer), expect_chain=True)

    def vcek(self, product: str, chip_id: bytes, tcb: TcbVersion) -> bytes:
        return self._get(vcek_path(product, chip_id, tcb), expect_chain=False)

    def _cache_file(self, path: str) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / hashlib.sha256(path.encode()).hexdigest()

    def _get(self, path: str, *, expect_chain: bool) -> bytes:
        cached = self._cache_file(path)
        if cached is not None and cached.is_file():
            return cached.read_bytes()
        if self.offline:
            raise KdsOfflineError(f"offline and {path} is not cached")
        body = self._fetch(path)
        try:
            if expect_chain:
                load_certificates(body)
            else:
                load_certificate(body)
        except MalformedCertificateError as err:
            raise KdsError(
                f"KDS answered {path} with something that is not a certificate: {err}"
            ) from None
        if cached is not None:
            _write_atomically(cached, body)
        return body

    def _fetch(self, path: str) -> bytes:
        url = self.base_url.rstrip("/") + path
        started = self.monotonic()
        last = "no attempt made"
        for attempt in range(1, self.max_attempts + 1):
            try:
                response = self.transport.get(url, self.timeout)
            except OSError as err:
                last = f"transport error: {err}"
                wait = self.backoff * attempt
            else:
                if response.status == HTTP_OK:
                    return response.body
                if response.status == HTTP_NOT_FOUND:
                    raise KdsNotFoundError(f"KDS has no {path} (404)")
                if (
                    response.status != HTTP_TOO_MANY_REQUESTS
                    and response.status < HTTP_SERVER_ERROR
                ):
                    raise KdsError(f"KDS answered {path} with HTTP {response.status}")
                last = f"HTTP {response.status}"
                hinted = _retry_after(response.headers, self.now())
                wait = self.backoff * attempt if hinted is None else hinted
            if attempt == self.max_attempts:
                break
            if wait > self.max_retry_after or self.monotonic() - started + wait > self.deadline:
                raise KdsRateLimitedError(
                    f"KDS asks to wait {wait:.0f}s for {path}, beyond the retry budget ({last})"
                )
            self.sleep(wait)
        raise KdsRateLimitedError(
            f"KDS did not serve {path} in {self.max_attempts} attempts ({last})"
        )


def _write_atomically(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_trust_directory(directory: Path, roots: Roots | None = None) -> Roots:
    """``roots`` plus the pinned certificates in ``directory`` (``*.pem|der|cer|crt``).

    A certificate there that matches no pin raises ``TrustStoreError``: the directory is
    operator-managed trust material and a stray certificate means it is not what they think.
    """
    roots = roots or Roots.amd()
    found: list[bytes] = []
    for path in sorted(directory.iterdir()):
        if path.suffix.lower() not in (".pem", ".der", ".cer", ".crt") or not path.is_file():
            continue
        for cert in load_certificates(path.read_bytes()):
            if roots.identify(cert.fingerprint) is None:
                raise TrustStoreError(
                    f"{path.name}: {cert.describe()} is not a pinned AMD certificate"
                )
            found.append(cert.der)
    return roots.with_certificates(found)
