"""A quick yes or no to "does this document satisfy the spec schema?". Pure.

jsonschema says what is wrong and where, which a person needs, but it walks the schema
anew for every value, and that was most of the time a large spec directory took to load,
nearly all of it spent on documents with nothing wrong. `compile_schema` turns the schema
into nested functions once per process; they answer yes or no, several times faster. A
no (or a keyword they do not know, or any value they are unsure of) is not a verdict: it
sends the document to jsonschema, whose answer and messages are the ones reported. So a
yes must never be wrong; tests hold it to jsonschema's verdicts on every file of the corpus
and on generated documents.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

Check = Callable[[Any], bool]

# Keywords that only describe; `_inline_refs` in specs uses them too.
ANNOTATIONS = frozenset({"description", "title", "examples", "default", "$comment", "deprecated", "readOnly",
                         "writeOnly"})
# What a node may hold that says nothing about validity by itself ("else" is read with "if").
_IGNORED = ANNOTATIONS | {"$schema", "$id", "$defs", "else"}
_OBJECT_KEYWORDS = frozenset({"properties", "patternProperties", "additionalProperties"})
_TYPES: dict[str, Check] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
}


def _never(_value: Any) -> bool:
    return False


def _always(_value: Any) -> bool:
    return True


def compile_schema(schema: Mapping[str, Any], formats: Mapping[str, Callable[[str], None]],
                   pattern: Callable[[str], re.Pattern[str]]) -> Check:
    """`formats`: name -> function raising ValueError for a bad value (unknown formats pass,
    as in jsonschema); `pattern`: the regular expression of a schema pattern."""
    defs = schema.get("$defs", {})
    compiled: dict[str, Check] = {}

    def ref(target: str) -> Check:
        if not target.startswith("#/$defs/") or target[len("#/$defs/"):] not in defs:
            return _never
        name = target[len("#/$defs/"):]
        if name not in compiled:
            compiled[name] = _never  # a reference back to itself while compiling: see `late`
            compiled[name] = build(defs[name])

        def late(value: Any) -> bool:
            return compiled[name](value)
        return late

    def build(node: Any) -> Check:
        if node is True:
            return _always
        if not isinstance(node, dict):
            return _never
        checks: list[Check] = []
        if not _OBJECT_KEYWORDS.isdisjoint(node):
            checks.append(_object(node))
        for key, arg in node.items():
            if key in _IGNORED or key in _OBJECT_KEYWORDS:
                continue
            check = keyword(key, arg, node)
            if check is None:
                return _never  # a keyword not known here: let jsonschema decide
            if check is not _always:
                checks.append(check)
        if not checks:
            return _always
        if len(checks) == 1:
            return checks[0]
        return lambda value: all(c(value) for c in checks)

    def keyword(key: str, arg: Any, node: dict[str, Any]) -> Check | None:  # noqa: C901 - one branch per keyword
        if key == "$ref":
            return ref(arg)
        if key == "type":
            kinds = [_TYPES.get(t) for t in (arg if isinstance(arg, list) else [arg])]
            if None in kinds:
                return None
            return kinds[0] if len(kinds) == 1 else (lambda v: any(k(v) for k in kinds))  # type: ignore[misc]
        if key == "required":
            names = tuple(arg)
            return lambda v: not isinstance(v, dict) or all(n in v for n in names)
        if key == "propertyNames":
            names = build(arg)
            return lambda v: not isinstance(v, dict) or all(names(k) for k in v)
        if key == "items":
            item = build(arg)
            return lambda v: not isinstance(v, list) or all(item(x) for x in v)
        if key == "minItems":
            return lambda v: not isinstance(v, list) or len(v) >= arg
        if key == "uniqueItems":
            if not arg:
                return _always
            # only lists of strings are judged here; for others jsonschema's idea of equal decides
            return lambda v: not isinstance(v, list) or (all(isinstance(x, str) for x in v) and len(set(v)) == len(v))
        if key == "minLength":
            return lambda v: not isinstance(v, str) or len(v) >= arg
        if key in ("enum", "const"):
            options = tuple(arg) if key == "enum" else (arg,)
            # strict about types (True is not 1 here); jsonschema settles the rest
            return lambda v: any(type(v) is type(o) and v == o for o in options)
        if key in ("minimum", "maximum"):
            bound = arg
            # as jsonschema compares (so NaN passes both, and the YAML reader reports it)
            if key == "minimum":
                return lambda v: not _TYPES["number"](v) or not v < bound
            return lambda v: not _TYPES["number"](v) or not v > bound
        if key == "pattern":
            regex = pattern(arg)
            return lambda v: not isinstance(v, str) or regex.search(v) is not None
        if key == "format":
            func = formats.get(arg)
            if func is None:
                return _always

            def format_ok(v: Any) -> bool:
                if not isinstance(v, str):
                    return True
                try:
                    func(v)
                except ValueError:
                    return False
                return True
            return format_ok
        if key == "oneOf":
            options_ = [build(s) for s in arg]
            return lambda v: sum(1 for o in options_ if o(v)) == 1
        if key == "not":
            inner = build(arg)
            return lambda v: not inner(v)
        if key == "if":
            cond, then, otherwise = build(arg), build(node.get("then", True)), build(node.get("else", True))
            return lambda v: then(v) if cond(v) else otherwise(v)
        if key == "then":
            return _always  # part of "if"
        return None

    def _object(node: dict[str, Any]) -> Check:
        props = {k: build(s) for k, s in node.get("properties", {}).items()}
        patterns = [(pattern(p), build(s)) for p, s in node.get("patternProperties", {}).items()]
        extra = build(node.get("additionalProperties", True))

        def check(value: Any) -> bool:
            if not isinstance(value, dict):
                return True
            for k, v in value.items():
                prop = props.get(k)
                matched = False
                if prop is not None:
                    if not prop(v):
                        return False
                    matched = True
                for regex, sub in patterns:
                    if isinstance(k, str) and regex.search(k):
                        if not sub(v):
                            return False
                        matched = True
                if not matched and not extra(v):
                    return False
            return True
        return check

    return build(schema)
