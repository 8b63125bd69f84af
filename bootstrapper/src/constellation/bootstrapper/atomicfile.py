"""Write a file so that readers see either the old or the new content, never a mix.

Every state file of the project (the node state, mini-mode metadata, the CLI's workspace files
including the master secret) is written through :func:`write_atomic`. The steps, and why:

1. Create a temporary file in the *same directory* (``os.replace`` is atomic only within one
   file system) with mode 0600, so nobody else can open it while it is being filled.
2. Write all bytes, ``fsync`` the file: the data is on disk before the name points at it.
3. ``fchmod`` to the final mode *before* the rename: a 0600 secret is never briefly visible
   under its final name with a wider mode, and a public file never appears with a narrower one.
4. ``os.replace`` onto the target name (atomic on POSIX).
5. ``fsync`` the directory so that the rename itself survives a crash.

On any failure the temporary file is removed and the previous file stays as it was.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from constellation.bootstrapper.errors import AtomicWriteError

SECRET_MODE = 0o600
PUBLIC_MODE = 0o644


def write_atomic(path: Path | str, data: bytes, *, mode: int = PUBLIC_MODE) -> None:
    """Replace ``path`` with ``data`` atomically and durably, with permission bits ``mode``.

    Raises ``AtomicWriteError`` (naming the path and the OS reason) if any step fails; the
    existing file, if any, is then unchanged.
    """
    target = Path(path)
    directory = target.parent
    try:
        fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as err:
        raise AtomicWriteError(
            f"cannot create a temporary file next to {target}: {err.strerror or err}; "
            "check that the directory exists and is writable"
        ) from err
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
            os.fchmod(handle.fileno(), mode)
        os.replace(tmp, target)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise AtomicWriteError(
            f"cannot write {target}: {err.strerror or err}; the previous file is unchanged"
        ) from err
    _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    """Persist the rename; file systems that cannot fsync a directory are tolerated."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as err:
        raise AtomicWriteError(f"cannot open directory {directory} to sync it: {err}") from err
    try:
        with contextlib.suppress(OSError):
            os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
