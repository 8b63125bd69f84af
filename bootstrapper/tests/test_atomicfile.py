from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from constellation.bootstrapper import atomicfile
from constellation.bootstrapper.atomicfile import SECRET_MODE, write_atomic
from constellation.bootstrapper.errors import AtomicWriteError, BootstrapperError


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_writes_new_file_with_mode(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    write_atomic(target, b"{}", mode=SECRET_MODE)
    assert target.read_bytes() == b"{}"
    assert _mode(target) == 0o600


def test_replaces_existing_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "conf.yaml"
    target.write_bytes(b"old")
    write_atomic(target, b"new")
    assert target.read_bytes() == b"new"
    assert _mode(target) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conf.yaml"]


def test_secret_mode_is_set_before_the_file_gets_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rename must only ever see a file that already carries the final mode."""
    seen: list[int] = []
    real_replace = os.replace

    def observing_replace(src: os.PathLike[str], dst: os.PathLike[str]) -> None:
        seen.append(stat.S_IMODE(os.stat(src).st_mode))
        real_replace(src, dst)

    monkeypatch.setattr(atomicfile.os, "replace", observing_replace)
    target = tmp_path / "constellation-mastersecret.json"
    target.write_bytes(b"old")
    target.chmod(0o644)
    write_atomic(target, b"secret", mode=SECRET_MODE)
    assert seen == [0o600]
    assert _mode(target) == 0o600


def test_missing_directory_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(AtomicWriteError, match="cannot create a temporary file"):
        write_atomic(tmp_path / "missing" / "file", b"x")


def test_failed_replace_keeps_old_content_and_cleans_up(tmp_path: Path) -> None:
    # A directory with the target's name cannot be replaced by a file.
    target = tmp_path / "occupied"
    target.mkdir()
    (target / "keep").write_bytes(b"keep")
    with pytest.raises(BootstrapperError, match="previous file is unchanged"):
        write_atomic(target, b"x")
    assert (target / "keep").read_bytes() == b"keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["occupied"]


def test_relative_path_in_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write_atomic("plain.txt", b"here")
    assert (tmp_path / "plain.txt").read_bytes() == b"here"
