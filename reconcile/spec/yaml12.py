"""A strict YAML 1.2 reader: libyaml's parser, the 1.2 core schema for plain values, and
every trap refused with a located message.

A plain scalar that YAML 1.1 (PyYAML, Ansible, cloud-init) would read differently (`yes`,
`on`, `0755`, `1e3`, `1_000`, `12:30`, dates) is an error: a spec must mean the same thing
to every tool that reads it. Aliases may add at most `MAX_NODES` values (an alias bomb stops
there), and nesting is bounded.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any

import yaml

from ..errors import Diagnostic
from .source import Path_, SpecFile, field_path

MAX_NODES = 100_000  # values aliases may add; an alias bomb expands past this long before memory runs out
MAX_DEPTH = 64       # no spec nests this deep; deeper is an attack or a generator gone wrong


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """PyYAML's parser (libyaml's when installed: same marks, many times faster) with the
    YAML 1.2 core schema for plain scalars (see the module doc)."""


_Loader.yaml_implicit_resolvers = {}
for _tag, _regexp, _first in [
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    ("tag:yaml.org,2002:float",
     r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
     "-+0123456789."),
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:merge", r"^(?:<<)$", "<"),
]:
    _Loader.add_implicit_resolver(_tag, re.compile(_regexp), list(_first))

_STR, _INT, _FLOAT, _BOOL, _NULL, _MAP, _SEQ, _MERGE = (f"tag:yaml.org,2002:{t}" for t in
                                                       ("str", "int", "float", "bool", "null", "map", "seq", "merge"))
_RESOLVED_BY_FIRST = _Loader.yaml_implicit_resolvers
# How a plain scalar reads depends on its text alone, and the same few texts (sizes, counts,
# states) recur in every domain: the readings of up to this many are kept for the run.
_REMEMBERED = 4096
_SCALAR_TAGS: dict[str, str] = {}


def _resolve(self: Any, kind: type, value: Any, implicit: tuple[bool, bool]) -> str:
    """PyYAML's `resolve` with the common cases first: called for every node of every file,
    and most plain scalars begin with a character no implicit type can begin with."""
    if kind is yaml.ScalarNode:
        if implicit[0] and (not value or value[0] in _RESOLVED_BY_FIRST):
            tag = _SCALAR_TAGS.get(value)
            if tag is None:
                tag = yaml.resolver.BaseResolver.resolve(self, kind, value, implicit)
                if len(_SCALAR_TAGS) < _REMEMBERED:
                    _SCALAR_TAGS[value] = tag
            return tag
        return _STR
    return _MAP if kind is yaml.MappingNode else _SEQ


_Loader.resolve = _resolve


_DECIMAL, _OCTAL, _HEX = re.compile(r"[-+]?[0-9]+"), re.compile(r"0o[0-7]+"), re.compile(r"0x[0-9a-fA-F]+")


def _core_value(tag: str, text: str) -> Any:
    """A scalar by the YAML 1.2 core schema; ValueError when `text` is not of `tag`."""
    if tag == _STR:
        return text
    if tag == _NULL:
        if text in ("~", "null", "Null", "NULL", ""):
            return None
    elif tag == _BOOL:
        if text in ("true", "True", "TRUE", "false", "False", "FALSE"):
            return text.lower() == "true"
    elif tag == _INT:
        if _DECIMAL.fullmatch(text):
            return int(text, 10)
        if _OCTAL.fullmatch(text):
            return int(text[2:], 8)
        if _HEX.fullmatch(text):
            return int(text[2:], 16)
    elif tag == _FLOAT:
        low = text.lower().lstrip("+")
        if low in (".inf", "-.inf", ".nan"):
            return float(low.replace(".", ""))
        try:
            return float(text)
        except ValueError:
            pass
    raise ValueError(text)


_V11 = yaml.SafeLoader("")
# A plain scalar that starts with none of these is a string to every YAML reader.
_V11_FIRST = frozenset(c for c in _V11.yaml_implicit_resolvers if c) | frozenset(
    c for c in _Loader.yaml_implicit_resolvers if c)


@functools.lru_cache(maxsize=_REMEMBERED)
def _yaml11_value(text: str) -> Any:
    """What PyYAML's YAML 1.1 reading makes of a plain scalar (a str when it cannot say)."""
    tag = _V11.resolve(yaml.ScalarNode, text, (True, False))
    constructor = yaml.SafeLoader.yaml_constructors.get(tag)
    if tag == _STR or constructor is None:
        return text
    try:
        return constructor(_V11, yaml.ScalarNode(tag, text))
    except Exception:  # noqa: BLE001 - whatever PyYAML cannot build is no surprise to report
        return text


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"the boolean {'true' if value else 'false'}"
    if isinstance(value, int):
        return f"the number {value}"
    if isinstance(value, float):
        return f"the number {value:g}"
    if value is None:
        return "null"
    if isinstance(value, str):
        return f"the string {value!r}"
    return f"the {type(value).__name__} {value}"


def _ambiguity(text: str, v12: Any) -> str | None:
    v11 = _yaml11_value(text)
    if type(v11) is type(v12) and v11 == v12:
        return None
    if isinstance(v11, float) and isinstance(v12, float) and math.isnan(v11) and math.isnan(v12):
        return None
    if isinstance(v11, bool):
        fix = f"write {'true' if v11 else 'false'} for a boolean, or quote it ('{text}') for a string"
    elif isinstance(v12, str) and isinstance(v11, (int, float)):
        fix = f"quote it ('{text}') if you mean the text, or write {v11!r} if you mean that number"
    elif isinstance(v12, (int, float)):
        fix = f"quote it ('{text}') if you mean the text, or write {v12!r} if you mean that number"
    else:
        fix = f"quote it ('{text}') for a string"
    return (f"{text!r} is {_describe(v11)} in YAML 1.1 but {_describe(v12)} in YAML 1.2, so tools disagree "
            f"on what it means; {fix}")


class _TooLarge(Exception):
    def __init__(self, node: yaml.Node, message: str):
        super().__init__(message)
        self.node, self.message = node, message


class NodeReader:
    """Turns a composed YAML node tree into plain data, recording marks and rejecting traps."""

    def __init__(self, spec: SpecFile, problems: list[Diagnostic]):
        self.spec, self.problems = spec, problems
        self.count = 0  # values built again through an alias
        self.built: set[int] = set()  # the nodes built once already
        self.active: set[int] = set()
        self.pending: list[tuple[int, int, Path_, str]] = []

    def problem(self, node: yaml.Node, path: Path_, message: str) -> None:
        self.pending.append((node.start_mark.line + 1, node.start_mark.column + 1, path, message))
        self.spec.bad.add(path)

    def finish(self) -> None:
        """Report what was found, naming the resource now that the whole file is read."""
        seen: set[tuple[int, int, str]] = set()
        for line, col, path, message in self.pending:
            if (line, col, message) in seen:
                continue  # a node used again through an alias: said once, where it is written
            seen.add((line, col, message))
            name = self.spec.resource_name(path)
            self.problems.append(Diagnostic(self.spec.path, line, col, field_path(path, keep=not name), message,
                                            name))

    def build(self, node: yaml.Node, path: Path_) -> Any:
        # Only what aliases add counts: a large file of plain values is bounded by the file
        # size limit, while a few lines of nested aliases can expand past any memory.
        if id(node) in self.built:
            self.count += 1
            if self.count > MAX_NODES:
                raise _TooLarge(node, f"the document expands to more than {MAX_NODES} values through "
                                      "aliases (an alias bomb?); expected a spec of ordinary size")
        else:
            self.built.add(id(node))
        if len(path) > MAX_DEPTH:
            raise _TooLarge(node, f"values nest more than {MAX_DEPTH} levels deep; expected a spec of ordinary shape")
        mark = node.start_mark
        self.spec.marks.setdefault(path, (mark.line + 1, mark.column + 1))
        if node.__class__ is yaml.ScalarNode:
            return self._scalar(node, path)
        if id(node) in self.active:
            self.problem(node, path, "an alias refers to the mapping or list that contains it (a recursive "
                                     "structure); expected a tree")
            return None
        if isinstance(node, yaml.MappingNode):
            if node.tag != _MAP:
                self.problem(node, path, f"the tag {node.tag} is not supported; expected a plain mapping")
            self.active.add(id(node))
            try:
                return self._mapping(node, path)
            finally:
                self.active.discard(id(node))
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ:
                self.problem(node, path, f"the tag {node.tag} is not supported; expected a plain list")
            self.active.add(id(node))
            try:
                return [self.build(item, path + (i,)) for i, item in enumerate(node.value)]
            finally:
                self.active.discard(id(node))
        return self._scalar(node, path)

    def _scalar(self, node: yaml.ScalarNode, path: Path_) -> Any:
        if node.tag not in (_STR, _INT, _FLOAT, _BOOL, _NULL):
            self.problem(node, path, f"the tag {node.tag} is not supported; expected plain text, a number or "
                                     "true/false")
            return None
        try:
            value = _core_value(node.tag, node.value)
        except ValueError:
            self.problem(node, path, f"{node.value!r} cannot be read as {node.tag.rsplit(':', 1)[-1]}")
            return None
        if not node.style and (not node.value or node.value[0] in _V11_FIRST):
            # plain (None, or "" from libyaml): the reader decided the type, and readers disagree
            why = _ambiguity(node.value, value)
            if why:
                self.problem(node, path, why)
                return node.value
        if isinstance(value, float) and not math.isfinite(value):
            self.problem(node, path, f"{node.value!r} is not a finite number; expected an ordinary number")
        return value

    def _mapping(self, node: yaml.MappingNode, path: Path_) -> dict[str, Any]:
        out: dict[str, Any] = {}
        # `<<: *base` merges first, so that keys given here win and keep their own positions;
        # of several merge sources, the earlier wins
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE:
                continue
            sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for source in reversed(sources):
                if not isinstance(source, yaml.MappingNode):
                    self.problem(source, path, "'<<' merges mappings only; expected an alias of a mapping")
                    continue
                merged = self.build(source, path)
                if isinstance(merged, dict):
                    out.update(merged)
        given: set[str] = set()
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.problem(key_node, path, "a mapping key is a list or mapping; expected a plain field name")
                continue
            key = self._scalar(key_node, path)
            if not isinstance(key, str):
                self.problem(key_node, path, f"the key {key_node.value!r} is read as {_describe(key)}; "
                                             f"expected a field name (quote it: '{key_node.value}')")
                key = key_node.value
            line, col = key_node.start_mark.line + 1, key_node.start_mark.column + 1
            if key in given:
                first = self.spec.keys.get(path + (key,), (0, 0))[0]
                self.problem(key_node, path + (key,), f"duplicate key {key!r} (first given on line {first}); "
                                                      "YAML would silently keep only the last one")
                continue
            given.add(key)
            # the key's line: where an unknown or wrong field is best pointed at
            self.spec.marks[path + (key,)] = self.spec.keys[path + (key,)] = (line, col)
            out[key] = self.build(value_node, path + (key,))
            if isinstance(value_node, yaml.ScalarNode):
                self.spec.marks[path + (key,)] = (value_node.start_mark.line + 1, value_node.start_mark.column + 1)
        return out
