"""Bootstrapper configuration: validated once, unknown keys and bad values refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from constellation.bootstrapper.config import (
    ConfigError,
    RetryPolicy,
    config_from_mapping,
    load_config,
)


def _base(tmp_path: Path) -> dict[str, Any]:
    return {
        "metadata_path": str(tmp_path / "metadata.json"),
        "state_disk_path": str(tmp_path / "disk.img"),
        "state_dir": str(tmp_path / "state"),
        "install_root": str(tmp_path / "root"),
        "tpm_tcti": "swtpm:path=/run/node-1/tpm/sock",
    }


def test_load_valid_config(tmp_path: Path) -> None:
    data = _base(tmp_path) | {"join_retry": {"max_attempts": 3, "total_timeout_s": 5}}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    config = load_config(path)
    assert config.init_port == 9000
    assert config.join_retry.max_attempts == 3
    assert config.node_state_path == tmp_path / "state" / "node-state.json"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("init_host", "localhost", "init_host"),
        ("component_http_timeout_s", 0, "component_http_timeout_s"),
        ("init_port", 70000, "init_port"),
        ("tpm_tcti", "", "tpm_tcti"),
        ("typo_key", 1, "unknown"),
        ("join_retry", {"max_attempts": 0}, "retry"),
        ("join_retry", {"initial_delay_s": 5, "max_delay_s": 1}, "retry"),
        ("join_retry", {"bogus": 1}, "join_retry"),
    ],
)
def test_bad_values_are_refused(tmp_path: Path, key: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_mapping(_base(tmp_path) | {key: value})


def test_missing_required_key_is_refused(tmp_path: Path) -> None:
    data = _base(tmp_path)
    del data["tpm_tcti"]
    with pytest.raises(ConfigError, match="tpm_tcti"):
        config_from_mapping(data)


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(bad)


def test_backoff_cap_grows_exponentially_and_is_bounded() -> None:
    policy = RetryPolicy(initial_delay_s=0.5, max_delay_s=4)
    assert [policy.delay_cap(n) for n in range(6)] == [0.5, 1, 2, 4, 4, 4]
    assert policy.delay_cap(10_000) == 4


def test_boot_id_path_defaults_to_the_kernels_and_can_be_set(tmp_path: Path) -> None:
    assert config_from_mapping(_base(tmp_path)).boot_id_path == Path(
        "/proc/sys/kernel/random/boot_id"
    )
    config = config_from_mapping(_base(tmp_path) | {"boot_id_path": str(tmp_path / "boot_id")})
    assert config.boot_id_path == tmp_path / "boot_id"


@pytest.mark.parametrize("key", ["boot_id_path", "state_dir", "event_log_path"])
@pytest.mark.parametrize("value", [5, "", ["a"], {"a": 1}, None])
def test_a_path_that_is_not_a_string_is_refused(tmp_path: Path, key: str, value: Any) -> None:
    """Found by review: ``Path(5)`` raised a bare ``TypeError`` out of the config loader."""
    if value is None and key == "event_log_path":
        assert config_from_mapping(_base(tmp_path) | {key: None}).event_log_path is None
        return
    with pytest.raises(ConfigError, match=f"{key} must be a non-empty path string"):
        config_from_mapping(_base(tmp_path) | {key: value})
