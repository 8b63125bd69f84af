"""JSON and YAML parsing with bounds, for documents an attacker or an operator may have written.

Invariant: parsing untrusted text either returns plain data (dicts, lists, strings, numbers,
booleans, ``None``) or raises ONE typed error - by default :class:`DocumentParseError`, or the
error class the caller names so that a component keeps its own error hierarchy. Nothing else
escapes: not ``RecursionError`` (Python's parsers recurse once per nesting level, so a 100k-deep
``[[[[...`` would otherwise unwind the stack and surface as INTERNAL with a traceback), not
``TypeError`` (a YAML complex key such as ``? ?`` constructs an unhashable mapping key), not
``UnicodeDecodeError``.

The bounds, checked *before* the real parser runs or as it runs:

- size: ``max_size`` bytes (characters for ``str`` input) - refused unread beyond that;
- nesting: ``max_depth`` levels of arrays/objects (JSON) or sequences/mappings (YAML). JSON is
  scanned once, linearly, by a regular expression that steps over string literals (so
  brackets inside strings and escaped quotes do not count) before ``json.loads`` sees it;
  YAML depth is tracked by the composer itself (:class:`BoundedSafeLoader`);
- YAML aliases: at most ``max_aliases`` (an alias re-uses a node, so a few lines of anchors
  can describe exponentially many values to whoever walks the result);
- JSON constants: ``NaN``/``Infinity`` are not JSON (RFC 8259) and are refused;
- YAML mapping keys: must be hashable scalars, and (by default) unique.

Pure: no I/O; bytes or text in, data or a typed error out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Hashable
from typing import Any

import yaml

from constellation.attestation.errors import AttestationError

#: Default nesting bound. Every document this project reads is at most ~6 levels deep.
DEFAULT_MAX_DEPTH = 32
#: Default size bound (16 MiB: the largest evidence document, a vTPM quote with event log).
DEFAULT_MAX_SIZE = 16 << 20
#: Default bound on YAML aliases (``*name``); configuration files need none.
DEFAULT_MAX_ALIASES = 64

ErrorFactory = Callable[[str], BaseException]


class DocumentParseError(AttestationError):
    """A JSON or YAML document is malformed or exceeds the parser's bounds.

    The message says which bound or rule was violated and by how much, never the content.
    """


# A JSON string literal (with escapes) or one structural bracket. Strings are matched whole,
# so brackets and quotes inside them never count; the unrolled form cannot backtrack.
_JSON_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)
_OPENERS = frozenset("[{")
_CLOSERS = frozenset("]}")


def json_depth_exceeds(text: str, max_depth: int) -> int | None:
    """The offset at which ``text`` nests deeper than ``max_depth``, or ``None``.

    One linear pass. An unterminated string stops being skipped as a string, but then the
    document is not JSON and ``json.loads`` refuses it before reaching any later bracket.
    """
    depth = 0
    for match in _JSON_TOKENS.finditer(text):
        token = match.group()
        if token in _OPENERS:
            depth += 1
            if depth > max_depth:
                return match.start()
        elif token in _CLOSERS:
            depth = max(depth - 1, 0)
    return None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def loads_json(
    data: bytes | str,
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_size: int = DEFAULT_MAX_SIZE,
    error: ErrorFactory = DocumentParseError,
    what: str = "JSON document",
) -> Any:
    """Parse UTF-8 JSON within the bounds; raise ``error(message)`` for anything else.

    ``what`` names the document in messages (e.g. ``"vTPM document"``).
    """
    if len(data) > max_size:
        raise error(f"{what}: {len(data)} bytes exceed the limit of {max_size}; refused unread")
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise error(
                f"{what}: not valid JSON: not UTF-8 (invalid byte at offset {exc.start})"
            ) from None
    else:
        text = data
    offset = json_depth_exceeds(text, max_depth)
    if offset is not None:
        raise error(
            f"{what}: nesting deeper than {max_depth} levels (at offset {offset}); "
            "refused before parsing"
        )
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:  # unreachable after the scan; kept so no traceback can escape
        raise error(f"{what}: nesting too deep") from None
    except ValueError as exc:  # JSONDecodeError, NaN/Infinity, oversized integers
        raise error(f"{what}: not valid JSON: {exc}") from None


class _YamlRefused(yaml.YAMLError):
    """Internal: a bound or rule of :class:`BoundedSafeLoader` was violated."""


class BoundedSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that bounds nesting and aliases and refuses bad mapping keys.

    ``compose_node`` is where PyYAML recurses once per nesting level, so counting there
    stops a deep document before Python's recursion limit. Subclass to change the bounds
    (class attributes), or use :func:`load_yaml`.
    """

    max_depth: int = DEFAULT_MAX_DEPTH
    max_aliases: int = DEFAULT_MAX_ALIASES
    unique_keys: bool = True

    def __init__(self, stream: str | bytes) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > self.max_aliases:
                raise _YamlRefused(
                    f"more than {self.max_aliases} aliases (line {self._line()}); "
                    "write the values out instead of using anchors"
                )
        self._depth += 1
        try:
            if self._depth > self.max_depth:
                raise _YamlRefused(
                    f"nesting deeper than {self.max_depth} levels (line {self._line()})"
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def _line(self) -> int:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
        mark = event.start_mark
        return mark.line + 1 if mark is not None else 0

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        """Build a mapping, refusing unhashable (complex) keys and, by default, duplicates."""
        if not isinstance(node, yaml.MappingNode):
            raise _YamlRefused(f"expected a mapping (line {node.start_mark.line + 1})")
        self.flatten_mapping(node)
        mapping: dict[Hashable, Any] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                raise _YamlRefused(
                    f"mapping key at line {line} is a {key_node.id}; keys must be scalars"
                )
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                raise _YamlRefused(f"mapping key at line {line} is not hashable")
            if self.unique_keys and key in mapping:
                raise _YamlRefused(f"duplicate key {str(key)[:64]!r} at line {line}")
            mapping[key] = self.construct_object(value_node, deep=deep)
        return mapping


def load_yaml(
    data: bytes | str,
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_size: int = DEFAULT_MAX_SIZE,
    max_aliases: int = DEFAULT_MAX_ALIASES,
    unique_keys: bool = True,
    error: ErrorFactory = DocumentParseError,
    what: str = "YAML document",
) -> Any:
    """Parse one YAML document with the safe loader within the bounds; see the module doc.

    Returns plain data; raises ``error(message)`` for malformed YAML, a violated bound, a
    complex or unhashable key, or (with ``unique_keys``) a duplicate key.
    """
    if len(data) > max_size:
        raise error(f"{what}: {len(data)} bytes exceed the limit of {max_size}; refused unread")
    loader_class = type(
        "_Loader",
        (BoundedSafeLoader,),
        {"max_depth": max_depth, "max_aliases": max_aliases, "unique_keys": unique_keys},
    )
    try:
        loader = loader_class(data)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except _YamlRefused as exc:
        raise error(f"{what}: {exc}") from None
    except yaml.YAMLError as exc:
        raise error(f"{what}: not valid YAML: {_one_line(exc)}") from None
    except RecursionError:  # unreachable with the depth bound; no traceback may escape
        raise error(f"{what}: nesting too deep") from None
    except (TypeError, ValueError, UnicodeDecodeError) as exc:
        # PyYAML's constructors can raise these on hostile scalars (e.g. oversized timestamps).
        raise error(f"{what}: cannot be read: {type(exc).__name__}") from None


def _one_line(exc: yaml.YAMLError) -> str:
    return " ".join(str(exc).split())
