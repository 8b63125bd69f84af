"""Bounded JSON/YAML parsing: hostile documents end in one typed error, never a traceback."""

from __future__ import annotations

import json
import sys

import pytest

from constellation.attestation.boundedparse import (
    DocumentParseError,
    json_depth_exceeds,
    load_yaml,
    loads_json,
)
from constellation.attestation.errors import AttestationError, MalformedEvidenceError


class CallerError(Exception):
    """A component's own error class, handed in as ``error``."""


# -- JSON ------------------------------------------------------------------------------------


def test_plain_json_round_trips():
    document = {"a": [1, 2.5, "x", None, True], "b": {"c": ']}[{\\"'}}
    assert loads_json(json.dumps(document)) == document
    assert loads_json(json.dumps(document).encode()) == document


@pytest.mark.parametrize(
    "hostile",
    ["[" * 100_000 + "]" * 100_000, '{"a":' * 100_000 + "1" + "}" * 100_000, "[" * 100_000],
)
def test_100k_deep_json_is_a_typed_error_not_a_recursion_error(hostile):
    assert sys.getrecursionlimit() < 100_000
    with pytest.raises(DocumentParseError, match="deeper than 32 levels"):
        loads_json(hostile)


def test_depth_bound_is_exact():
    assert loads_json("[" * 32 + "]" * 32) is not None
    with pytest.raises(DocumentParseError, match="offset 32"):
        loads_json("[" * 33 + "]" * 33)
    assert loads_json("[" * 5 + "]" * 5, max_depth=5) is not None


@pytest.mark.parametrize(
    "text",
    [
        '["' + "[" * 100 + '"]',  # brackets inside a string do not count
        '["\\"' + "{" * 100 + '"]',  # nor after an escaped quote
        '["\\\\", ' + '"' + "[" * 100 + '"]',  # an escaped backslash ends before the quote
    ],
)
def test_scan_steps_over_strings(text):
    assert json_depth_exceeds(text, 2) is None
    assert isinstance(loads_json(text), list)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\xff\xfe[]", "not UTF-8"),
        ('{"a": NaN}', "NaN is not a JSON value"),
        ("[Infinity]", "Infinity is not a JSON value"),
        ("9" * 5000, "not valid JSON"),  # beyond int's digit limit: ValueError inside json
        ('{"a": 1', "not valid JSON"),
        # After an unterminated string the scan counts brackets: refused either way.
        ('"unterminated ' + "[" * 100, r"^JSON document: "),
        ("", "not valid JSON"),
    ],
)
def test_malformed_json_is_a_typed_error(data, match):
    with pytest.raises(DocumentParseError, match=match):
        loads_json(data)


def test_size_bound_refuses_unread():
    with pytest.raises(DocumentParseError, match="exceed the limit of 8"):
        loads_json(b"[" * 9, max_size=8)


def test_caller_chooses_the_error_class_and_the_name():
    with pytest.raises(MalformedEvidenceError, match=r"^vTPM document: nesting"):
        loads_json("[" * 40, error=MalformedEvidenceError, what="vTPM document")
    with pytest.raises(CallerError):
        loads_json("{", error=CallerError)


def test_library_error_belongs_to_the_hierarchy():
    assert issubclass(DocumentParseError, AttestationError)


# -- YAML ------------------------------------------------------------------------------------


def test_plain_yaml_loads():
    text = "a: 1\nb: [x, {c: d}]\nc: {e: null}\n"
    assert load_yaml(text) == {"a": 1, "b": ["x", {"c": "d"}], "c": {"e": None}}
    assert load_yaml(text.encode()) == load_yaml(text)


@pytest.mark.parametrize(
    "hostile",
    [
        "[" * 100_000,
        "{a: " * 100_000,
        "".join("  " * i + "- \n" for i in range(2000)),
        "".join("  " * i + f"k{i}:\n" for i in range(2000)),
    ],
)
def test_deep_yaml_is_a_typed_error(hostile):
    with pytest.raises(DocumentParseError, match="deeper than 32 levels"):
        load_yaml(hostile)


@pytest.mark.parametrize(
    "text", ["? ?\n", "? [a]\n: b\n", "? {a: 1}\n: b\n", "{? [a, b]: c}\n", "x:\n  ? ? ?\n"]
)
def test_complex_mapping_keys_are_a_typed_error(text):
    with pytest.raises(DocumentParseError, match="keys must be scalars"):
        load_yaml(text)


def test_duplicate_keys_refused_unless_allowed():
    with pytest.raises(DocumentParseError, match="duplicate key 'a' at line 2"):
        load_yaml("a: 1\na: 2\n")
    assert load_yaml("a: 1\na: 2\n", unique_keys=False) == {"a": 2}


def test_alias_bound():
    laughs = "a: &a [x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(20)
    )
    with pytest.raises(DocumentParseError, match="more than 8 aliases"):
        load_yaml(laughs, max_aliases=8)
    assert load_yaml("a: &a 1\nb: *a\n") == {"a": 1, "b": 1}


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("a: [1, 2\n", "not valid YAML"),
        ("!!python/object:os.system {}\n", "not valid YAML"),  # safe loader: no objects
        ("a: 1\n---\nb: 2\n", "not valid YAML"),  # one document only
        ("a: !!timestamp 2001-99-99\n", "cannot be read"),
    ],
)
def test_malformed_yaml_is_a_typed_error(text, match):
    with pytest.raises(DocumentParseError, match=match):
        load_yaml(text)


def test_yaml_size_bound_and_caller_error():
    with pytest.raises(CallerError, match="exceed the limit"):
        load_yaml("a: 1\n" * 10, max_size=8, error=CallerError)


# -- the call sites that parse untrusted documents -------------------------------------------

DEEP_JSON = "[" * 100_000 + "]" * 100_000


def test_vtpm_document_recursion_bomb_is_malformed_evidence():
    from constellation.attestation.measurements import Measurements
    from constellation.attestation.vtpm import VtpmValidator

    with pytest.raises(MalformedEvidenceError, match="vTPM document: nesting deeper"):
        VtpmValidator(Measurements()).verify(DEEP_JSON.encode(), bytes(32))


def test_hcl_runtime_data_recursion_bomb_is_malformed_evidence():
    from constellation.attestation.snp.bindings import parse_hcl_runtime_data

    with pytest.raises(MalformedEvidenceError, match="HCL runtime data: nesting deeper"):
        parse_hcl_runtime_data(('{"keys": ' + DEEP_JSON + "}").encode())


@pytest.mark.parametrize(
    ("parse", "document"),
    [
        ("json", DEEP_JSON),
        ("yaml", "[" * 100_000),
        ("yaml", "? ?\n"),
        ("yaml", "4: {expected: '00'}\n4: {expected: '11'}\n"),
        ("image", '{"list": ' + DEEP_JSON + "}"),
    ],
)
def test_measurements_parsers_raise_measurements_error(parse, document):
    from constellation.attestation.measurements import (
        ImageMeasurements,
        Measurements,
        MeasurementsError,
    )

    parser = {
        "json": Measurements.from_json,
        "yaml": Measurements.from_yaml,
        "image": ImageMeasurements.from_json,
    }[parse]
    with pytest.raises(MeasurementsError):
        parser(document)
