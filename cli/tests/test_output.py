from __future__ import annotations

import io
import json
import os
import pty
import select

import pytest

from constellation.cli.output import Reporter


def test_non_tty_progress_prints_plain_lines_to_stderr() -> None:
    out, err = io.StringIO(), io.StringIO()
    reporter = Reporter(stdout=out, stderr=err)
    assert not reporter.interactive
    with reporter.step("fetching things"):
        pass
    assert "... fetching things" in err.getvalue()
    assert "done: fetching things" in err.getvalue()
    assert out.getvalue() == ""


def test_failed_step_is_not_reported_done() -> None:
    err = io.StringIO()
    reporter = Reporter(stdout=io.StringIO(), stderr=err)
    with pytest.raises(RuntimeError), reporter.step("doomed"):
        raise RuntimeError("boom")
    assert "done: doomed" not in err.getvalue()


def test_tty_progress_uses_a_spinner() -> None:
    leader, follower = pty.openpty()
    try:
        with os.fdopen(follower, "w", closefd=False) as terminal:
            reporter = Reporter(stdout=io.StringIO(), stderr=terminal)
            assert reporter.interactive
            with reporter.step("waiting"):
                pass
            terminal.flush()
        chunks = []
        for _ in range(50):  # bounded: read what the terminal received, then stop
            ready, _, _ = select.select([leader], [], [], 0.1)
            if not ready:
                break
            chunks.append(os.read(leader, 65536))
        written = b"".join(chunks).decode("utf-8", "replace")
    finally:
        os.close(leader)
        os.close(follower)
    assert "✓ waiting" in written
    assert "... waiting" not in written


def test_json_goes_to_stdout_only() -> None:
    out, err = io.StringIO(), io.StringIO()
    Reporter(stdout=out, stderr=err).emit_json({"b": 1, "a": [1, 2]})
    assert json.loads(out.getvalue()) == {"a": [1, 2], "b": 1}
    assert err.getvalue() == ""


def test_debug_lines_only_with_debug() -> None:
    err = io.StringIO()
    Reporter(stdout=io.StringIO(), stderr=err).debug("hidden")
    Reporter(stdout=io.StringIO(), stderr=err, debug=True).debug("shown")
    assert "hidden" not in err.getvalue()
    assert "debug: shown" in err.getvalue()


def test_long_data_lines_are_not_folded_in_pipes() -> None:
    out = io.StringIO()
    Reporter(stdout=out, stderr=io.StringIO()).emit_text("x" * 150)
    assert "x" * 150 in out.getvalue()
