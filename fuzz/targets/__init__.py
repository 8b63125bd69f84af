"""Fuzz targets: one module per parser of untrusted bytes.

Each module defines

- ``target(data: bytes) -> None``: feeds ``data`` to one parser (and whatever a caller runs on
  what it returns). It may return or raise a ``ConstellationError`` (a typed refusal); any other
  exception is a finding.
- ``seeds() -> Iterable[bytes]``: well-formed inputs to start from: real evidence read from
  ``../shared/vectors`` when it is there (never copied into the project), plus inputs the
  project's own issuers and encoders produce.

Targets keep their module-level work cheap and deterministic: the harness imports them once and
then calls ``target`` millions of times.
"""
