"""The one place that talks to the KeyService.

The KeyService derives every key from the cluster's master secret (DESIGN.md §3):
``GetDataKey(id, L) = HKDF-SHA256(master_key, master_salt, "key-" + id, L)``. The JoinService
asks it for exactly two kinds of key:

- a node's state-disk key, ``GetDataKey(lowercase(disk_uuid), 32)``;
- the cluster's measurement secret, ``GetDataKey("measurementSecret", 32)``.

Keys come back wrapped in ``SecretBytes`` (:mod:`constellation.attestation.secret`) so that no
log line, exception message or debugger repr ever shows them. Every call has a deadline and a
bounded number of attempts.

The channel is mutual TLS (:func:`keyservice_channel`), because the KeyService serves nobody
else: the JoinService presents its client certificate (CN ``constellation-joinservice``, EKU
clientAuth) and accepts only a server certificate that chains to the same cluster-internal
service CA and carries :data:`DEFAULT_SERVER_NAME` (checked through
``grpc.ssl_target_name_override``, whatever address is dialled). ``constellation apply``
creates that CA, both certificates, and discards the CA key; the files come from the
``constellation-keyservice-client`` Secret. :meth:`KeyServiceTLS.load` checks them at
start-up and reports every problem at once (a ``ConfigError``), so a mix-up of Secrets from
two different ``apply`` runs is named there rather than as a failing handshake at the first
join.
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import grpc
from cryptography.x509.oid import ExtendedKeyUsageOID

from constellation.attestation.errors import Failure, render_failures
from constellation.attestation.secret import SecretBytes
from constellation.attestation.service.tlsbundle import BundleNames, check_tls_bundle
from constellation.joinservice.errors import ConfigError, UpstreamError
from constellation.proto import kms_pb2, kms_pb2_grpc

STATE_DISK_KEY_LENGTH: Final = 32
MEASUREMENT_SECRET_LENGTH: Final = 32
MEASUREMENT_SECRET_ID: Final = "measurementSecret"  # noqa: S105 - a key id, not a key

#: The DNS name in the KeyService's server certificate (``constellation.cli.servicepki``).
DEFAULT_SERVER_NAME: Final = "constellation-keyservice"
#: PEM files are small; anything larger is not what the Secret holds.
MAX_PEM_FILE_SIZE: Final = 65536

# Codes worth a second attempt: the KeyService pod may be restarting or briefly overloaded.
_RETRYABLE: Final = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def check_client_tls(
    ca_pem: bytes, cert_pem: bytes, key_pem: bytes, server_name: str, *, now: datetime.datetime
) -> list[Failure]:
    """Every reason these files cannot authenticate the JoinService to the KeyService."""
    failures = check_tls_bundle(
        cert_pem,
        key_pem,
        ca_pem,
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        names=BundleNames(
            "keyservice.cert",
            "keyservice.key",
            "keyservice.ca",
            cert_role="the client certificate",
            ca_role="the CA in the CA file",
        ),
        now=now,
    )
    if not server_name or any(c.isspace() for c in server_name):
        failures.append(Failure("keyservice.server_name", "a DNS name", repr(server_name)))
    return failures


@dataclass(frozen=True, repr=False)
class KeyServiceTLS:
    """The JoinService's side of the KeyService's mutual TLS. ``repr`` is redacted."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes
    server_name: str = DEFAULT_SERVER_NAME

    @classmethod
    def load(
        cls,
        ca_pem: bytes,
        cert_pem: bytes,
        key_pem: bytes,
        server_name: str = DEFAULT_SERVER_NAME,
        *,
        now: datetime.datetime | None = None,
    ) -> KeyServiceTLS:
        """Checked material, or ``ConfigError`` naming every failed check."""
        failures = check_client_tls(
            ca_pem, cert_pem, key_pem, server_name, now=now or datetime.datetime.now(datetime.UTC)
        )
        if failures:
            raise ConfigError(
                f"the KeyService client certificate files are unusable: "
                f"{render_failures(failures)}; mount the constellation-keyservice-client Secret "
                "written by the same `constellation apply` as the KeyService's"
            )
        return cls(ca_pem, cert_pem, key_pem, server_name)

    @classmethod
    def from_files(
        cls, ca_file: Path, cert_file: Path, key_file: Path, server_name: str = DEFAULT_SERVER_NAME
    ) -> KeyServiceTLS:
        """Read and check the three mounted files (``ca.crt``, ``tls.crt``, ``tls.key``)."""
        contents: list[bytes] = []
        for what, path in (("CA", ca_file), ("certificate", cert_file), ("key", key_file)):
            try:
                size = path.stat().st_size
                if size > MAX_PEM_FILE_SIZE:
                    raise ConfigError(
                        f"KeyService client {what} file {path} has {size} bytes; expected PEM"
                    )
                contents.append(path.read_bytes())
            except OSError as err:
                raise ConfigError(
                    f"cannot read the KeyService client {what} file {path}: {err.strerror}"
                ) from None
        ca_pem, cert_pem, key_pem = contents
        return cls.load(ca_pem, cert_pem, key_pem, server_name)

    def __repr__(self) -> str:
        return f"KeyServiceTLS(server_name={self.server_name!r}, key=<redacted>)"


def keyservice_channel(endpoint: str, tls: KeyServiceTLS) -> grpc.Channel:
    """A mutual-TLS channel to the KeyService at ``endpoint`` (``host:port``).

    The server must present a certificate from ``tls.ca_pem`` naming ``tls.server_name``; the
    dialled host does not matter (an IP in mini mode, a Service name in a cluster).
    """
    credentials = grpc.ssl_channel_credentials(
        root_certificates=tls.ca_pem, private_key=tls.key_pem, certificate_chain=tls.cert_pem
    )
    return grpc.secure_channel(
        endpoint, credentials, options=[("grpc.ssl_target_name_override", tls.server_name)]
    )


class KeyServiceClient:
    """Client of ``kms.API`` over a mutual-TLS channel (:func:`keyservice_channel`).

    ``channel`` is passed in so tests and the service decide where it points; the client owns
    neither its lifetime nor its address.
    """

    def __init__(
        self,
        channel: grpc.Channel,
        *,
        timeout: float = 5.0,
        attempts: int = 3,
        backoff: float = 0.2,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self._stub = kms_pb2_grpc.APIStub(channel)
        self._timeout = timeout
        self._attempts = attempts
        self._backoff = backoff

    def get_data_key(self, data_key_id: str, length: int) -> SecretBytes:
        """Fetch one derived key; raise ``UpstreamError`` after the bounded attempts fail."""
        request = kms_pb2.GetDataKeyRequest(data_key_id=data_key_id, length=length)
        last: grpc.RpcError | None = None
        for attempt in range(self._attempts):
            try:
                response = self._stub.GetDataKey(request, timeout=self._timeout)
            except grpc.RpcError as err:
                last = err
                if err.code() not in _RETRYABLE or attempt == self._attempts - 1:
                    break
                time.sleep(self._backoff * (2**attempt))
                continue
            if len(response.data_key) != length:
                raise UpstreamError(
                    f"KeyService returned {len(response.data_key)} bytes for a {length}-byte "
                    "key; check that the KeyService and JoinService versions match"
                )
            return SecretBytes(response.data_key)
        code = last.code().name if last is not None else "UNKNOWN"
        # The id is not secret (a disk UUID or a fixed name); the details string is the
        # KeyService's own (or gRPC's, for a failed handshake), which never contains key material.
        details = last.details() if last is not None else ""
        hint = {
            "UNAVAILABLE": "; check that the KeyService runs and that its TLS Secret and the "
            "JoinService's client Secret come from the same `constellation apply`",
            "PERMISSION_DENIED": "; the KeyService accepts only the JoinService's client "
            "certificate (constellation-keyservice-client)",
        }.get(code, "")
        raise UpstreamError(
            f"KeyService GetDataKey({data_key_id!r}) failed: {code} {details}{hint}"
        )

    def state_disk_key(self, disk_uuid: str) -> SecretBytes:
        """The state-disk key of the disk with LUKS UUID ``disk_uuid`` (case-insensitive)."""
        return self.get_data_key(disk_uuid.lower(), STATE_DISK_KEY_LENGTH)

    def measurement_secret(self) -> SecretBytes:
        """The cluster's measurement secret, from which the cluster ID is derived."""
        return self.get_data_key(MEASUREMENT_SECRET_ID, MEASUREMENT_SECRET_LENGTH)
