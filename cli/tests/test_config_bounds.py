"""The configuration file is parsed with bounds: hostile YAML is a ``ConfigError`` with a hint."""

from __future__ import annotations

import pytest

from constellation.cli.config import parse_config
from constellation.cli.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("? ?\n", "keys must be scalars"),  # was a TypeError (unhashable key)
        ("? [a, b]\n: c\n", "keys must be scalars"),
        ("[" * 100_000, "nesting deeper than 32 levels"),  # was a RecursionError
        ("a:\n" + "".join("  " * i + "- \n" for i in range(1, 200)), "nesting deeper"),
        ("image: a\nimage: b\n", "duplicate key 'image' at line 2"),
        ("a: [1, 2\n", "not valid YAML"),
        ("a: 1\n" * 300_000, "exceed the limit"),
    ],
)
def test_hostile_configuration_is_a_config_error(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as refused:
        parse_config(text, source="constellation-conf.yaml")
    assert str(refused.value).startswith("constellation-conf.yaml: ")
    assert refused.value.hint
