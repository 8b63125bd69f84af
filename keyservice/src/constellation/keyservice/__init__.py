"""KeyService: derives data keys from the cluster master secret (HKDF), stores nothing."""
