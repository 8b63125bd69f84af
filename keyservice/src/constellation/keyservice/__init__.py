"""KeyService: derives data keys from the cluster master secret (HKDF), stores nothing.

It serves ``kms.API/GetDataKey`` over mutual TLS to the JoinService only (:mod:`.tls`), and
``grpc.health.v1`` in plaintext on a separate port for kubelet probes (:mod:`.server`).
"""
