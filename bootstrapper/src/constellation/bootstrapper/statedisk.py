"""The node's state disk: a LUKS2 volume whose key the cluster hands out after attestation.

Life cycle (DESIGN.md §2, §3):

1. On first boot the disk is formatted with a *random* initial passphrase that only this
   process knows (:meth:`StateDisk.format`).
2. The node reads the LUKS UUID ``u`` (:meth:`StateDisk.uuid`) and obtains, after attestation,
   the disk key ``GetDataKey(lowercase(u), 32)`` from the cluster.
3. The node replaces the initial passphrase with that 32-byte key (:meth:`StateDisk.rekey`):
   the key is added in a new keyslot first and the old slot wiped after, so at every instant
   one of the two keys opens the disk (a crash in between is completed by
   :meth:`StateDisk.finish_rekey`); from then on only the cluster can unlock the disk. On
   reboot the key comes back in a rejoin ticket and :meth:`StateDisk.check_key` confirms it
   before use.

All operations drive the real ``cryptsetup`` binary. Keys are passed as raw bytes through
``--key-file -`` (stdin) or an anonymous pipe (``/dev/fd/N``) — never on the command line, in
the environment, in a temporary file or in a log line — and are wrapped in :class:`DiskKey`,
whose ``repr`` is redacted.

Mini mode, said plainly: the machines this project runs on in mini mode have no
device-mapper, so the volume is never opened. Mini mode keeps the *real* LUKS2 header for key
management (format, UUID, rekey, key check run exactly as on a real node), but the node's data
path is **not encrypted**: nothing is written through the LUKS volume. Real nodes open the
volume with ``cryptsetup open`` and mount it; that step is outside this module.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from constellation.attestation.secret import SecretBytes
from constellation.bootstrapper.errors import (
    CryptsetupMissingError,
    StateDiskError,
    StateDiskKeyError,
)

DISK_KEY_LENGTH = 32
#: A LUKS2 header has 32 keyslots.
LUKS2_KEYSLOTS = 32
INITIAL_PASSPHRASE_LENGTH = 32
# cryptsetup's documented exit code for "no key available with this passphrase".
_EXIT_NO_PERMISSION = 2
# ... and for "no usable keyslot" (e.g. ``--key-slot`` names an empty slot).
_EXIT_NO_SLOT = 1
_UUID_PATTERN = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# Upper bound for one cryptsetup call; argon2id with default cost takes a few seconds.
DEFAULT_TIMEOUT_SECONDS = 120.0


class DiskKey(SecretBytes):
    """A LUKS passphrase or disk key; its ``repr``/``str`` never show it, and it is never empty."""

    __slots__ = ()

    def __init__(self, value: bytes) -> None:
        if not value:
            raise StateDiskError("a disk key must not be empty")
        super().__init__(value)


@dataclass(frozen=True)
class PbkdfSettings:
    """Key-derivation settings for new keyslots.

    The default is cryptsetup's argon2id with its own benchmarked cost (what a real node
    uses). Tests pass :data:`FAST_PBKDF2` (pbkdf2, 1000 iterations), which is weak on purpose
    and must never be used for a real disk.
    """

    algorithm: str = "argon2id"
    force_iterations: int | None = None

    def arguments(self) -> list[str]:
        args = ["--pbkdf", self.algorithm]
        if self.force_iterations is not None:
            args += ["--pbkdf-force-iterations", str(self.force_iterations)]
        return args


ARGON2ID = PbkdfSettings()
FAST_PBKDF2 = PbkdfSettings(algorithm="pbkdf2", force_iterations=1000)


class StateDisk:
    """A LUKS2 state disk on a block device or (mini mode) a regular file."""

    def __init__(
        self,
        device: Path,
        *,
        pbkdf: PbkdfSettings = ARGON2ID,
        cryptsetup: str = "cryptsetup",
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self.device = Path(device)
        self.pbkdf = pbkdf
        self.timeout = timeout
        found = shutil.which(cryptsetup)
        if found is None:
            raise CryptsetupMissingError(
                f"cryptsetup ({cryptsetup}) was not found on PATH; install the Debian "
                "package 'cryptsetup-bin'"
            )
        self._cryptsetup = found

    def is_luks(self) -> bool:
        """True if the device carries a LUKS header (``cryptsetup isLuks``)."""
        return self._run(["isLuks", str(self.device)], check=False).returncode == 0

    def format(self, *, uuid: str | None = None, replace: bool = False) -> DiskKey:
        """Format the device as LUKS2 with a fresh random passphrase and return it.

        The passphrase is only needed once, for the later :meth:`rekey` to the disk key.
        ``uuid`` fixes the LUKS UUID (the node journals it before formatting). Refuses to
        format a device that already carries a LUKS header unless ``replace`` is set: only the
        node supervisor sets it, for a disk its journal proves never held cluster data.
        """
        if uuid is not None and not _UUID_PATTERN.fullmatch(uuid):
            raise StateDiskError(f"a LUKS UUID must be a lower-case UUID, got {uuid!r}")
        if not replace and self.is_luks():
            raise StateDiskError(
                f"{self.device} already carries a LUKS header; refusing to reformat it "
                "(a rebooting node must rejoin instead)"
            )
        initial = DiskKey(secrets.token_bytes(INITIAL_PASSPHRASE_LENGTH))
        self._run(
            [
                "luksFormat",
                "--type",
                "luks2",
                "--batch-mode",
                *self.pbkdf.arguments(),
                *(["--uuid", uuid] if uuid is not None else []),
                "--key-file",
                "-",
                str(self.device),
            ],
            stdin=initial.reveal(),
            what="format the state disk",
        )
        return initial

    def uuid(self) -> str:
        """The LUKS UUID in lower case (the disk key is derived from exactly this string)."""
        result = self._run(["luksUUID", str(self.device)], what="read the LUKS UUID")
        value = result.stdout.decode("ascii", "replace").strip().lower()
        if not _UUID_PATTERN.fullmatch(value):
            raise StateDiskError(
                f"cryptsetup returned a malformed LUKS UUID for {self.device}: {value!r}"
            )
        return value

    def dump(self) -> str:
        """The human-readable header dump (``luksDump``): public, contains no key material."""
        return self._run(["luksDump", str(self.device)], what="dump the LUKS header").stdout.decode(
            "utf-8", "replace"
        )

    def check_key(self, key: DiskKey) -> None:
        """Return if ``key`` opens a keyslot; raise ``StateDiskKeyError`` otherwise."""
        result = self._run(
            ["open", "--test-passphrase", "--key-file", "-", str(self.device)],
            stdin=key.reveal(),
            check=False,
        )
        if result.returncode == _EXIT_NO_PERMISSION:
            raise StateDiskKeyError(
                f"the key does not open any keyslot of {self.device}; the node must obtain "
                "the disk key for this disk's UUID from the cluster"
            )
        if result.returncode != 0:
            raise self._failure("test a key", result)

    def key_matches(self, key: DiskKey) -> bool:
        """Like :meth:`check_key`, as a boolean for callers that decide between two paths."""
        try:
            self.check_key(key)
        except StateDiskKeyError:
            return False
        return True

    def keyslots(self) -> list[int]:
        """The numbers of the header's active keyslots (from the public JSON metadata)."""
        text = self._run(
            ["luksDump", "--dump-json-metadata", str(self.device)], what="read the keyslots"
        ).stdout
        try:
            document = json.loads(text)
            return sorted(int(slot) for slot in document["keyslots"])
        except (ValueError, KeyError, TypeError) as err:
            raise StateDiskError(
                f"cryptsetup returned unreadable keyslot metadata for {self.device}: {err}"
            ) from None

    def slot_of(self, key: DiskKey) -> int | None:
        """The keyslot ``key`` opens, or ``None``."""
        for slot in self.keyslots():
            result = self._run(
                [
                    "open",
                    "--test-passphrase",
                    "--key-slot",
                    str(slot),
                    "--key-file",
                    "-",
                    str(self.device),
                ],
                stdin=key.reveal(),
                check=False,
            )
            if result.returncode == 0:
                return slot
            if result.returncode not in (_EXIT_NO_PERMISSION, _EXIT_NO_SLOT):
                raise self._failure("test a keyslot", result)
        return None

    def rekey(
        self, old: DiskKey, new: DiskKey, *, on_step: Callable[[str], None] | None = None
    ) -> None:
        """Replace the keyslot(s) opened by ``old`` with one for ``new``, crash-safely.

        LUKS2 keyslots make each instant safe: first ``luksAddKey`` puts ``new`` into a free
        slot chosen here (authorized by ``old``; both keys open the disk now), then
        ``luksKillSlot`` wipes every *other* slot. A crash between the two leaves a disk both
        keys open; :meth:`finish_rekey` completes it with ``new`` alone. ``on_step`` is called
        with ``"rekey.add"`` and ``"rekey.kill"`` after each half (the journal's crash points).
        If ``old`` is wrong, nothing changes and ``StateDiskKeyError`` is raised.

        Cost: one key derivation to open ``old`` and one to protect ``new`` (with argon2id,
        seconds each); the slot numbers come from the header's public metadata and the wipe
        needs no key, because the slot kept is the one this call just wrote.
        """
        self._check_length(new)
        kept = self._free_slot()
        self._add_key(old, new, slot=kept)
        if on_step is not None:
            on_step("rekey.add")
        self._wipe_slots_except(kept)
        if on_step is not None:
            on_step("rekey.kill")

    def finish_rekey(self, new: DiskKey) -> None:
        """Wipe every keyslot but the one ``new`` opens (the second half of :meth:`rekey`, after
        a crash: which slot holds ``new`` is then learned by trying it)."""
        kept = self.slot_of(new)
        if kept is None:
            raise StateDiskKeyError(
                f"the key does not open any keyslot of {self.device}; the rekey cannot be "
                "completed with it"
            )
        self._wipe_slots_except(kept)

    def _free_slot(self) -> int:
        used = set(self.keyslots())
        for slot in range(LUKS2_KEYSLOTS):
            if slot not in used:
                return slot
        raise StateDiskError(f"{self.device} has no free LUKS2 keyslot for the new key")

    def _wipe_slots_except(self, kept: int) -> None:
        """``luksKillSlot`` in batch mode (no passphrase) for every active slot but ``kept``.

        Only ever called with the slot that holds the new key, so the disk always keeps a key.
        """
        for slot in self.keyslots():
            if slot == kept:
                continue
            result = self._run(
                ["luksKillSlot", "--batch-mode", str(self.device), str(slot)],
                check=False,
            )
            if result.returncode != 0:
                raise self._failure(f"wipe keyslot {slot}", result)

    def _check_length(self, new: DiskKey) -> None:
        if len(new) != DISK_KEY_LENGTH:
            raise StateDiskError(
                f"a state disk key must be {DISK_KEY_LENGTH} bytes, got {len(new)}"
            )

    def _add_key(self, old: DiskKey, new: DiskKey, *, slot: int) -> None:
        """``luksAddKey``: ``old`` through stdin, ``new`` through an anonymous pipe."""
        read_fd, write_fd = os.pipe()
        try:
            # 32 bytes fit into any pipe buffer: write and close before cryptsetup reads.
            os.write(write_fd, new.reveal())
            os.close(write_fd)
            write_fd = -1
            result = self._run(
                [
                    "luksAddKey",
                    "--batch-mode",
                    "--new-key-slot",
                    str(slot),
                    *self.pbkdf.arguments(),
                    "--key-file",
                    "-",
                    str(self.device),
                    f"/dev/fd/{read_fd}",
                ],
                stdin=old.reveal(),
                pass_fds=(read_fd,),
                check=False,
            )
        finally:
            os.close(read_fd)
            if write_fd != -1:
                os.close(write_fd)
        if result.returncode == _EXIT_NO_PERMISSION:
            raise StateDiskKeyError(
                f"rekeying {self.device} failed: the old key does not open any keyslot; "
                "the header was left unchanged"
            )
        if result.returncode != 0:
            raise self._failure("rekey the state disk", result)

    def _run(
        self,
        args: list[str],
        *,
        stdin: bytes = b"",
        pass_fds: tuple[int, ...] = (),
        check: bool = True,
        what: str = "run cryptsetup",
    ) -> subprocess.CompletedProcess[bytes]:
        try:
            result = subprocess.run(
                [self._cryptsetup, *args],
                input=stdin,
                capture_output=True,
                pass_fds=pass_fds,
                timeout=self.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as err:
            raise StateDiskError(
                f"cryptsetup did not finish within {self.timeout:.0f}s while trying to {what} "
                f"on {self.device}"
            ) from err
        except OSError as err:
            raise StateDiskError(f"cannot start cryptsetup to {what}: {err}") from err
        if check and result.returncode != 0:
            raise self._failure(what, result)
        return result

    def _failure(self, what: str, result: subprocess.CompletedProcess[bytes]) -> StateDiskError:
        # cryptsetup's stderr names devices and reasons; keys never reach it (they go via fds).
        reason = result.stderr.decode("utf-8", "replace").strip() or "no message"
        return StateDiskError(
            f"cannot {what} on {self.device}: cryptsetup exited {result.returncode}: {reason}"
        )
