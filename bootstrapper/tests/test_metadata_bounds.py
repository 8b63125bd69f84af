"""Instance metadata comes from outside the node: a hostile document is a ``MetadataError``."""

from __future__ import annotations

import pytest

from constellation.bootstrapper.errors import MetadataError
from constellation.bootstrapper.metadata import parse_metadata


@pytest.mark.parametrize(
    "document",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"self": ' * 100_000,
        b'{"version": NaN}',
        b"x" * (1024 * 1024 + 1),
    ],
)
def test_hostile_metadata_is_a_typed_error(document):
    with pytest.raises(MetadataError, match=r"^node metadata: "):
        parse_metadata(document, source="node metadata")
