"""The restart policy: backoff doubling, bounded, reset after a healthy run; tests' override."""

from __future__ import annotations

import pytest

from constellation.cli.mini.supervision.policy import POLICY_ENV, RestartPolicy, policy_from_env


def test_the_backoff_doubles_is_bounded_and_resets_after_a_healthy_run() -> None:
    policy = RestartPolicy(initial_delay_s=0.5, max_delay_s=4.0, healthy_after_s=30.0)
    assert policy.delay(None, 0.1) == 0.5
    assert policy.delay(0.5, 0.1) == 1.0
    assert policy.delay(4.0, 0.1) == 4.0
    assert policy.delay(4.0, 31.0) == 0.5


def test_a_policy_from_the_environment_falls_back_to_the_default_when_unreadable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(POLICY_ENV, '{"max_quick_failures": 2}')
    assert policy_from_env() == RestartPolicy(max_quick_failures=2)
    for bad in ("not json", '{"no_such_field": 1}', '{"max_quick_failures": "x"}', "[1]"):
        monkeypatch.setenv(POLICY_ENV, bad)
        assert policy_from_env() == RestartPolicy()
