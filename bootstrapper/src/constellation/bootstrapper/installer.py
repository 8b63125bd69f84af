"""Installs the Kubernetes components named in an init request or join ticket.

The CLI is the root of trust for what runs on a node: every component arrives as
(source, ``sha256:<hex>``, install path), and the node installs nothing whose bytes do not hash
to exactly that value. Installation is therefore two-phase:

1. ``stage()`` fetches EVERY component into a private staging directory next to the install
   root and hashes it while streaming. The first mismatch (or fetch error) aborts the whole
   batch with an error naming the component, and the staging directory is removed. Nothing has
   been installed at that point, so the caller may refuse the init before taking the node lock.
2. ``StagedComponents.install()`` moves the verified files into place with ``os.replace`` (a
   file) or a directory swap (an unpacked ``tar.gz``). Readers see either the old or the new
   artifact, never a half-written one. Files get mode 0755: they are executables.

Install paths are absolute paths on the node (``/usr/local/bin/kubeadm``); they are confined
to the configured install root (the file-system root on a real node, a scratch directory in
mini mode and tests) and may not contain ``..``.

Sources (the ``components.Component.url`` contract: "file://, http(s)://, or a path in the node
image") are accepted in exactly these forms:

- ``http://`` and ``https://`` URLs, fetched with a bounded timeout, a bounded total time and a
  bounded size. The content is trusted only through its pinned SHA-256.
- ``file://`` URLs (no host, or ``localhost``; no query or fragment) and absolute paths, that
  name a regular file inside one of the installer's *source directories*: by default the node
  image's artifact directory ``NODE_IMAGE_COMPONENTS_DIR`` and the local Kubernetes component
  cache (where ``hack/setup`` builds, and ``constellation mini up`` takes, the pinned binaries:
  ``$CONSTELLATION_K8S_CACHE`` or ``${XDG_CACHE_HOME:-~/.cache}/constellation/kubernetes``);
  ``BootstrapperConfig.component_source_dirs`` replaces the list. A path with ``.`` or ``..``
  segments is refused as written, and the path with every symbolic link resolved must still
  lie inside a source directory (a link pointing out of it is refused); the final file is
  opened without following links and must be a regular file (not a FIFO or device).
- Nothing else (``ftp:``, ``data:``, relative paths, remote ``file://`` hosts).

Every source of a request is checked *before* any of them is read, so a refused location is
never opened - the node does not become an oracle for files outside its source directories.
A hash mismatch says only that the content does not match the pinned SHA-256; it never shows
the hash of what was read. The source directories are trusted like the node image itself:
whoever can write there could replace an artifact between check and open anyway.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import shutil
import stat
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import IO, Protocol

from constellation.bootstrapper.errors import BootstrapperError
from constellation.bootstrapper.kubernetes.components import default_cache_dir

HASH_PREFIX = "sha256:"
SHA256_HEX_LENGTH = 64
EXECUTABLE_MODE = 0o755
READ_CHUNK = 1 << 20
DEFAULT_HTTP_TIMEOUT_S = 30.0
DEFAULT_TOTAL_TIMEOUT_S = 600.0
DEFAULT_MAX_SIZE = 1 << 30  # 1 GiB: larger than any Kubernetes binary or archive we ship
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
#: Where a node image ships the component artifacts it carries itself (read-only, measured).
NODE_IMAGE_COMPONENTS_DIR = Path("/usr/share/constellation/components")


def default_source_dirs(env: Mapping[str, str] | None = None) -> tuple[Path, ...]:
    """The node image's artifact directory and the local Kubernetes component cache.

    The cache root is the parent of every per-version cache directory (``default_cache_dir``
    with an empty version), or ``$CONSTELLATION_K8S_CACHE`` itself when that is set.
    """
    return (NODE_IMAGE_COMPONENTS_DIR, default_cache_dir("", env))


class ComponentError(BootstrapperError):
    """A Kubernetes component could not be fetched, verified or installed."""

    def __init__(self, component: str, message: str) -> None:
        self.component = component
        super().__init__(f"component {component!r}: {message}")


class InvalidComponentError(ComponentError):
    """The request describes a component the node refuses to consider (bad hash, path, URL)."""


class ComponentFetchError(ComponentError):
    """The component's source could not be read within the time and size bounds."""


class ComponentHashMismatchError(ComponentError):
    """The fetched bytes do not hash to the value in the request: nothing is installed.

    Deliberately carries no hash of what was read: the error travels back to whoever sent the
    request, and must not tell them anything about the content at the source.
    """

    def __init__(self, component: str, expected: str) -> None:
        self.expected = expected
        super().__init__(
            component,
            f"content does not match the pinned SHA-256 {expected}; refusing to install "
            "anything (check the components list the CLI sent and the artifact's source)",
        )


class ComponentMessage(Protocol):
    """What the installer reads from ``components.Component`` (the proto message)."""

    @property
    def url(self) -> str: ...
    @property
    def hash(self) -> str: ...
    @property
    def install_path(self) -> str: ...
    @property
    def extract(self) -> bool: ...
    @property
    def name(self) -> str: ...


@dataclass(frozen=True)
class ComponentSpec:
    """A validated component: where it comes from, what it must hash to, where it goes."""

    name: str
    source: str
    sha256: bytes
    install_path: PurePosixPath
    extract: bool

    @property
    def hash_text(self) -> str:
        return HASH_PREFIX + self.sha256.hex()


def parse_hash(component: str, text: str) -> bytes:
    """Parse ``sha256:<64 hex>`` into 32 bytes, refusing anything else."""
    if not text.startswith(HASH_PREFIX):
        raise InvalidComponentError(
            component, f"hash must look like 'sha256:<64 hex digits>', got {text[:80]!r}"
        )
    hex_part = text[len(HASH_PREFIX) :]
    if len(hex_part) != SHA256_HEX_LENGTH or not re.fullmatch(r"[0-9a-fA-F]+", hex_part):
        raise InvalidComponentError(
            component,
            f"hash must have exactly {SHA256_HEX_LENGTH} hex digits, got {hex_part[:80]!r}",
        )
    return bytes.fromhex(hex_part)


def parse_install_path(component: str, text: str) -> PurePosixPath:
    """An absolute, normalized POSIX path without ``..`` (it is re-rooted under the root)."""
    path = PurePosixPath(text)
    if not path.is_absolute() or len(path.parts) < 2:
        raise InvalidComponentError(
            component, f"install path must be an absolute file path, got {text!r}"
        )
    if any(part in ("..", ".") for part in path.parts) or "//" in text or "\x00" in text:
        raise InvalidComponentError(
            component, f"install path must be normalized (no '.', '..' or '//'), got {text!r}"
        )
    return path


def parse_components(components: Sequence[ComponentMessage]) -> list[ComponentSpec]:
    """Validate every component of a request; the first invalid one raises."""
    specs: list[ComponentSpec] = []
    seen_paths: set[PurePosixPath] = set()
    for index, message in enumerate(components):
        name = message.name or f"#{index}"
        if not _NAME_PATTERN.match(name) and not name.startswith("#"):
            raise InvalidComponentError(name[:80], "name must be 1-128 of [A-Za-z0-9._-]")
        if not message.url:
            raise InvalidComponentError(name, "has no source URL")
        parse_source_url(name, message.url)
        install_path = parse_install_path(name, message.install_path)
        if install_path in seen_paths:
            raise InvalidComponentError(name, f"install path {install_path} is used twice")
        seen_paths.add(install_path)
        specs.append(
            ComponentSpec(
                name=name,
                source=message.url,
                sha256=parse_hash(name, message.hash),
                install_path=install_path,
                extract=message.extract,
            )
        )
    return specs


def parse_source_url(name: str, source: str) -> urllib.parse.ParseResult:
    """``urlparse(source)``, refusing as :class:`InvalidComponentError` what the parser refuses
    (an unclosed IPv6 bracket, a host that changes under NFKC normalization) and, for http(s),
    what ``http.client`` would refuse only when fetching (spaces and control characters, text
    that is not ASCII, no host, a port that is not a number in 0..65535)."""
    try:
        parsed = urllib.parse.urlparse(source)
        if parsed.scheme in ("http", "https"):
            if not source.isascii() or any(c <= " " or c == "\x7f" for c in source):
                raise ValueError("an http(s) URL must be printable ASCII (percent-encode the rest)")
            if not parsed.hostname:
                raise ValueError("an http(s) URL must name a host")
            _ = parsed.port  # raises ValueError unless the port is a number in 0..65535
    except ValueError as err:
        raise InvalidComponentError(name, f"source URL does not parse: {err}") from None
    return parsed


def source_kind(spec: ComponentSpec, source_dirs: Sequence[Path]) -> tuple[str, str]:
    """Classify a source as ("file", resolved path) or ("http", url); refuse everything else.

    Reads no file: a local path is checked (segments, then its fully resolved form) against
    ``source_dirs`` using only the file system's names and links.
    """
    parsed = parse_source_url(spec.name, spec.source)
    if parsed.scheme in ("http", "https"):
        return "http", spec.source
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise InvalidComponentError(spec.name, "file:// URL must not name a remote host")
        if parsed.query or parsed.fragment or parsed.params:
            raise InvalidComponentError(
                spec.name, "file:// URL must not carry a query, fragment or parameters"
            )
        return "file", _confined_source(spec, urllib.parse.unquote(parsed.path), source_dirs)
    if parsed.scheme == "" and spec.source.startswith("/"):
        return "file", _confined_source(spec, spec.source, source_dirs)
    raise InvalidComponentError(
        spec.name,
        f"source must be file://, http(s):// or an absolute path, got scheme {parsed.scheme!r}",
    )


def _confined_source(spec: ComponentSpec, text: str, source_dirs: Sequence[Path]) -> str:
    """``text`` with every link resolved, if it lies inside a source directory; else refuse."""
    allowed = ", ".join(str(d) for d in source_dirs) or "none configured"
    path = PurePosixPath(text)
    # Split the text itself: ``PurePosixPath`` would silently drop "." segments.
    if "\x00" in text or not path.is_absolute() or {".", ".."} & set(text.split("/")):
        raise InvalidComponentError(
            spec.name,
            f"local source {text[:200]!r} must be an absolute path without '.' or '..' "
            f"inside the component source directories ({allowed})",
        )
    resolved = Path(os.path.realpath(text))
    for directory in source_dirs:
        root = Path(os.path.realpath(directory))
        if resolved != root and resolved.is_relative_to(root):
            return str(resolved)
    lexically_inside = any(path.is_relative_to(d) for d in source_dirs)
    reason = "leads through a symbolic link out of" if lexically_inside else "is outside"
    raise InvalidComponentError(
        spec.name,
        f"local source {text[:200]} {reason} the component source directories ({allowed}); "
        "the node reads local artifacts only from there (or fetch it over http(s))",
    )


class _Deadline:
    """A bound on the total time one fetch may take (a slow drip cannot stall init)."""

    def __init__(self, component: str, seconds: float) -> None:
        self._component = component
        self._seconds = seconds
        self._end = time.monotonic() + seconds

    def check(self) -> None:
        if time.monotonic() > self._end:
            raise ComponentFetchError(
                self._component, f"fetch took longer than {self._seconds:.0f} s"
            )


class StagedComponents:
    """Verified artifacts waiting in a staging directory; ``install()`` moves them into place.

    Used as a context manager so the staging directory disappears whatever happens.
    """

    def __init__(self, installer: ComponentInstaller, staging: Path) -> None:
        self._installer = installer
        self._staging = staging
        self._items: list[tuple[ComponentSpec, Path]] = []
        self._installed = False

    def _add(self, spec: ComponentSpec, staged: Path) -> None:
        self._items.append((spec, staged))

    @property
    def components(self) -> list[ComponentSpec]:
        return [spec for spec, _ in self._items]

    def install(self) -> list[Path]:
        """Move every verified artifact into place; return the installed paths."""
        if self._installed:
            raise BootstrapperError("staged components were already installed")
        installed: list[Path] = []
        for spec, staged in self._items:
            installed.append(self._installer._place(spec, staged))
        self._installed = True
        return installed

    def close(self) -> None:
        shutil.rmtree(self._staging, ignore_errors=True)

    def __enter__(self) -> StagedComponents:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class ComponentInstaller:
    """Fetches, verifies and installs components below ``install_root``."""

    def __init__(
        self,
        install_root: Path,
        *,
        source_dirs: Sequence[Path] | None = None,
        http_timeout_s: float = DEFAULT_HTTP_TIMEOUT_S,
        total_timeout_s: float = DEFAULT_TOTAL_TIMEOUT_S,
        max_size: int = DEFAULT_MAX_SIZE,
    ) -> None:
        self.install_root = install_root
        #: Local sources must lie in one of these (``None``: ``default_source_dirs()``).
        self.source_dirs = tuple(source_dirs) if source_dirs is not None else default_source_dirs()
        self.http_timeout_s = http_timeout_s
        self.total_timeout_s = total_timeout_s
        self.max_size = max_size

    def target(self, spec: ComponentSpec, *, create_parents: bool = False) -> Path:
        """The install path re-rooted under the install root, refusing symlink escapes.

        Without ``create_parents`` nothing is created: the deepest existing ancestor must
        resolve inside the root (a symlinked directory cannot redirect the install).
        """
        root = self.install_root.resolve()
        target = root.joinpath(*spec.install_path.parts[1:])
        parent = target.parent
        if create_parents:
            parent.mkdir(parents=True, exist_ok=True)
        existing = parent
        while not existing.exists() and existing != root:
            existing = existing.parent
        if not existing.resolve().is_relative_to(root):
            raise InvalidComponentError(
                spec.name, f"install path {spec.install_path} leaves the install root"
            )
        if target.is_symlink():
            raise InvalidComponentError(
                spec.name, f"install path {spec.install_path} is a symbolic link"
            )
        return target

    def stage(self, components: Sequence[ComponentMessage]) -> StagedComponents:
        """Fetch and verify every component; raise (with nothing installed) on the first error."""
        specs = parse_components(components)
        for spec in specs:
            source_kind(spec, self.source_dirs)  # refuse every bad source before reading any
            self.target(spec)
        self.install_root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".components-", dir=self.install_root))
        staged = StagedComponents(self, staging)
        try:
            for index, spec in enumerate(specs):
                destination = staging / f"{index}.artifact"
                self._fetch_verified(spec, destination)
                staged._add(spec, destination)
        except BaseException:
            staged.close()
            raise
        return staged

    def install(self, components: Sequence[ComponentMessage]) -> list[Path]:
        """Stage, verify and install in one go (for callers with no point of no return)."""
        with self.stage(components) as staged:
            return staged.install()

    # -- fetching --------------------------------------------------------------------------

    def _fetch_verified(self, spec: ComponentSpec, destination: Path) -> None:
        kind, location = source_kind(spec, self.source_dirs)
        deadline = _Deadline(spec.name, self.total_timeout_s)
        digest = hashlib.sha256()
        with destination.open("xb") as out:
            if kind == "file":
                try:
                    with _open_regular_file(spec, location) as source:
                        self._copy(spec, source, out, digest, deadline)
                except OSError as exc:
                    raise ComponentFetchError(
                        spec.name, f"cannot read {location}: {exc.strerror or exc}"
                    ) from None
            else:
                self._fetch_http(spec, location, out, digest, deadline)
            out.flush()
            os.fsync(out.fileno())
        if not hmac.compare_digest(digest.digest(), spec.sha256):
            raise ComponentHashMismatchError(spec.name, spec.hash_text)

    def _fetch_http(
        self,
        spec: ComponentSpec,
        url: str,
        out: IO[bytes],
        digest: hashlib._Hash,
        deadline: _Deadline,
    ) -> None:
        request = urllib.request.Request(url, method="GET")  # noqa: S310 (scheme checked)
        try:
            with urllib.request.urlopen(request, timeout=self.http_timeout_s) as response:  # noqa: S310
                self._copy(spec, response, out, digest, deadline)
        except urllib.error.HTTPError as exc:
            raise ComponentFetchError(spec.name, f"HTTP {exc.code} from {url}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ComponentFetchError(spec.name, f"cannot fetch {url}: {reason}") from None
        except ValueError as exc:  # http.client.InvalidURL; parse_source_url refuses these first
            raise InvalidComponentError(spec.name, f"source URL is not fetchable: {exc}") from None

    def _copy(
        self,
        spec: ComponentSpec,
        source: IO[bytes],
        out: IO[bytes],
        digest: hashlib._Hash,
        deadline: _Deadline,
    ) -> None:
        size = 0
        while True:
            deadline.check()
            chunk = source.read(READ_CHUNK)
            if not chunk:
                return
            size += len(chunk)
            if size > self.max_size:
                raise ComponentFetchError(
                    spec.name, f"artifact is larger than the limit of {self.max_size} bytes"
                )
            digest.update(chunk)
            out.write(chunk)

    # -- placing ---------------------------------------------------------------------------

    def _place(self, spec: ComponentSpec, staged: Path) -> Path:
        target = self.target(spec, create_parents=True)
        if spec.extract:
            self._place_archive(spec, staged, target)
        else:
            self._place_file(staged, target)
        return target

    @staticmethod
    def _place_file(staged: Path, target: Path) -> None:
        """Copy into a temporary sibling of the target, then rename over it (atomic)."""
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out, staged.open("rb") as source:
                shutil.copyfileobj(source, out, READ_CHUNK)
                out.flush()
                os.fchmod(out.fileno(), EXECUTABLE_MODE)
                os.fsync(out.fileno())
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(target.parent)

    @staticmethod
    def _place_archive(spec: ComponentSpec, staged: Path, target: Path) -> None:
        """Unpack into a temporary sibling directory, then swap it in for the target."""
        fresh = Path(tempfile.mkdtemp(prefix=f".{target.name}.new-", dir=target.parent))
        try:
            try:
                with tarfile.open(staged, mode="r:gz") as archive:
                    archive.extractall(fresh, filter="data")
            except (tarfile.TarError, OSError, EOFError) as exc:
                raise ComponentError(spec.name, f"cannot unpack archive: {exc}") from None
            fresh.chmod(EXECUTABLE_MODE)
            old: Path | None = None
            if target.exists():
                if not target.is_dir():
                    raise ComponentError(
                        spec.name, f"{spec.install_path} exists and is not a directory"
                    )
                old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
                os.replace(target, old)
            os.replace(fresh, target)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(fresh, ignore_errors=True)
            raise
        _fsync_dir(target.parent)


def _open_regular_file(spec: ComponentSpec, path: str) -> IO[bytes]:
    """Open a resolved local source: no link followed, no blocking on a FIFO, regular only."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ComponentFetchError(spec.name, f"{path} is not a regular file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
