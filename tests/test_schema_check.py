"""The quick schema check says yes exactly when jsonschema finds nothing wrong.

A yes skips jsonschema, so a wrong one would let a bad spec through; a no where jsonschema
finds nothing wrong costs only time, but would mean the quick path is never taken.
"""

from __future__ import annotations

import re

import pytest

from reconcile import spec as specs
from reconcile.spec.quick_check import compile_schema

from .conftest import REPO

FILES = sorted(p for p in [*(REPO / "tests" / "corpus").rglob("*.y*ml"), *(REPO / "specs").rglob("*.y*ml")])


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(REPO)) for p in FILES])
def test_agrees_with_jsonschema(path):
    parsed = specs.read_file(str(path), [])
    if parsed is None:
        pytest.skip("not YAML that reaches the schema")
    assert specs._quick_check()(parsed.data) == specs._validator().is_valid(parsed.data)


def test_a_keyword_it_does_not_know_leaves_the_verdict_to_jsonschema():
    schema = {"type": "object", "properties": {"a": {"type": "string", "maxLength": 3}}}
    check = compile_schema(schema, {}, re.compile)
    assert check({"b": 1})
    assert not check({"a": "ab"})  # "maxLength" is not known here: no yes


def test_references_and_recursion():
    schema = {"$defs": {"node": {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/node"}},
                                                                   "n": {"type": "integer", "minimum": 0}},
                                 "additionalProperties": False}},
              "$ref": "#/$defs/node"}
    check = compile_schema(schema, {}, re.compile)
    assert check({"kids": [{"n": 1, "kids": [{"n": 2}]}]})
    assert not check({"kids": [{"n": -1}]})
    assert not check({"kids": [{"m": 1}]})
    assert not check({"n": True})  # a boolean is not an integer
