"""When a supervisor starts a dead child again, and when it gives up (package docstring).

The policy is data (:class:`RestartPolicy`); tests shorten it through ``$CONSTELLATION_MINI_
RESTART_POLICY`` (:func:`policy_from_env`) because a supervisor runs as its own process.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

POLICY_ENV = "CONSTELLATION_MINI_RESTART_POLICY"


@dataclass(frozen=True)
class RestartPolicy:
    """Exponential backoff with a reset after a healthy run, and a bound on quick failures."""

    initial_delay_s: float = 0.5
    max_delay_s: float = 30.0
    healthy_after_s: float = 30.0
    max_quick_failures: int = 5

    def delay(self, previous: float | None, ran_s: float) -> float:
        """The wait before the next start: reset after a healthy run, else doubled (bounded)."""
        if previous is None or ran_s >= self.healthy_after_s:
            return self.initial_delay_s
        return min(previous * 2, self.max_delay_s)


def policy_from_env() -> RestartPolicy:
    """The default policy, or one from ``$CONSTELLATION_MINI_RESTART_POLICY`` (JSON; tests)."""
    raw = os.environ.get(POLICY_ENV)
    if not raw:
        return RestartPolicy()
    try:
        fields = json.loads(raw)
        return RestartPolicy(**{k: type(getattr(RestartPolicy(), k))(v) for k, v in fields.items()})
    except (ValueError, TypeError, AttributeError):
        return RestartPolicy()
