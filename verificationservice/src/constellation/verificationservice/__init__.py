"""VerificationService: fresh attestation evidence of its node, for `constellation verify`."""
