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
    return _Compiler(schema.get("$defs", {}), formats, pattern).build(schema)


class _Compiler:
    """Turns schema nodes into checks; one method per keyword it knows."""

    def __init__(self, defs: Mapping[str, Any], formats: Mapping[str, Callable[[str], None]],
                 pattern: Callable[[str], re.Pattern[str]]):
        self.defs, self.formats, self.pattern = defs, formats, pattern
        self.compiled: dict[str, Check] = {}
        self.keywords: dict[str, Callable[[Any, dict[str, Any]], Check | None]] = {
            "$ref": self._ref, "type": self._type, "required": self._required, "propertyNames": self._names,
            "items": self._items, "minItems": self._min_items, "uniqueItems": self._unique, "minLength": self._min_length,
            "enum": self._enum, "const": self._const, "minimum": self._minimum, "maximum": self._maximum,
            "pattern": self._pattern, "format": self._format, "oneOf": self._one_of, "not": self._not, "if": self._if,
            "then": lambda arg, node: _always,  # part of "if"
        }

    def build(self, node: Any) -> Check:
        if node is True:
            return _always
        if not isinstance(node, dict):
            return _never
        checks: list[Check] = []
        if not _OBJECT_KEYWORDS.isdisjoint(node):
            checks.append(self._object(node))
        for key, arg in node.items():
            if key in _IGNORED or key in _OBJECT_KEYWORDS:
                continue
            make = self.keywords.get(key)
            check = make(arg, node) if make else None
            if check is None:
                return _never  # a keyword not known here: let jsonschema decide
            if check is not _always:
                checks.append(check)
        if not checks:
            return _always
        if len(checks) == 1:
            return checks[0]
        return lambda value: all(c(value) for c in checks)

    def _ref(self, target: str, node: dict[str, Any]) -> Check:
        if not target.startswith("#/$defs/") or target[len("#/$defs/"):] not in self.defs:
            return _never
        name = target[len("#/$defs/"):]
        compiled = self.compiled
        if name not in compiled:
            compiled[name] = _never  # a reference back to itself while compiling: see `late`
            compiled[name] = self.build(self.defs[name])

        def late(value: Any) -> bool:
            return compiled[name](value)
        return late

    def _type(self, arg: Any, node: dict[str, Any]) -> Check | None:
        kinds = [_TYPES.get(t) for t in (arg if isinstance(arg, list) else [arg])]
        if None in kinds:
            return None
        return kinds[0] if len(kinds) == 1 else (lambda v: any(k(v) for k in kinds))  # type: ignore[misc]

    def _required(self, arg: Any, node: dict[str, Any]) -> Check:
        names = tuple(arg)
        return lambda v: not isinstance(v, dict) or all(n in v for n in names)

    def _names(self, arg: Any, node: dict[str, Any]) -> Check:
        names = self.build(arg)
        return lambda v: not isinstance(v, dict) or all(names(k) for k in v)

    def _items(self, arg: Any, node: dict[str, Any]) -> Check:
        item = self.build(arg)
        return lambda v: not isinstance(v, list) or all(item(x) for x in v)

    def _min_items(self, arg: Any, node: dict[str, Any]) -> Check:
        return lambda v: not isinstance(v, list) or len(v) >= arg

    def _unique(self, arg: Any, node: dict[str, Any]) -> Check:
        if not arg:
            return _always
        # only lists of strings are judged here; for others jsonschema's idea of equal decides
        return lambda v: not isinstance(v, list) or (all(isinstance(x, str) for x in v) and len(set(v)) == len(v))

    def _min_length(self, arg: Any, node: dict[str, Any]) -> Check:
        return lambda v: not isinstance(v, str) or len(v) >= arg

    def _enum(self, arg: Any, node: dict[str, Any]) -> Check:
        options = tuple(arg)
        # strict about types (True is not 1 here); jsonschema settles the rest
        return lambda v: any(type(v) is type(o) and v == o for o in options)

    def _const(self, arg: Any, node: dict[str, Any]) -> Check:
        return self._enum((arg,), node)

    # as jsonschema compares (so NaN passes both, and the YAML reader reports it)
    def _minimum(self, bound: Any, node: dict[str, Any]) -> Check:
        return lambda v: not _TYPES["number"](v) or not v < bound

    def _maximum(self, bound: Any, node: dict[str, Any]) -> Check:
        return lambda v: not _TYPES["number"](v) or not v > bound

    def _pattern(self, arg: Any, node: dict[str, Any]) -> Check:
        regex = self.pattern(arg)
        return lambda v: not isinstance(v, str) or regex.search(v) is not None

    def _format(self, arg: Any, node: dict[str, Any]) -> Check:
        func = self.formats.get(arg)
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

    def _one_of(self, arg: Any, node: dict[str, Any]) -> Check:
        options = [self.build(s) for s in arg]
        return lambda v: sum(1 for o in options if o(v)) == 1

    def _not(self, arg: Any, node: dict[str, Any]) -> Check:
        inner = self.build(arg)
        return lambda v: not inner(v)

    def _if(self, arg: Any, node: dict[str, Any]) -> Check:
        cond, then, otherwise = self.build(arg), self.build(node.get("then", True)), self.build(node.get("else", True))
        return lambda v: then(v) if cond(v) else otherwise(v)

    def _object(self, node: dict[str, Any]) -> Check:
        props = {k: self.build(s) for k, s in node.get("properties", {}).items()}
        patterns = [(self.pattern(p), self.build(s)) for p, s in node.get("patternProperties", {}).items()]
        extra = self.build(node.get("additionalProperties", True))

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
